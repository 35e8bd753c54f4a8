"""The suite's one hub + client harness: ``HubPair`` (h11's ``ConnectionPair``).

``open_hub_pair`` opens a hub through the shipped test kit (``troupe.testing.open_test_hub``:
a ``CrashPoints`` the test can arm, and a check that no task outlives the hub) on a fresh
MemoryStore unless given a store, with both sweepers off unless ``ttl_sweep_interval`` or
``expectation_sweep_interval`` is given (tests tick them), and a clock anchored at
:data:`EPOCH` that trio's ``MockClock`` drives. (A hung test is failed by the suite-wide cap
in ``tests/conftest.py``.)

A ``HubPair`` reaches its hub two ways:

- as the hub's wire sees a client: ``MiniClient`` fake connections (:meth:`HubPair.connection`,
  :meth:`HubPair.agent`) reduced to what the hub relies on: each records every frame the hub
  sends, acks invites (``EV_CHANNEL_INVITE_ACK`` with ``causation_id`` = the invite's id) and
  answers every notify with a ``ReceiptFrame``;
- as a program does: ``hc``, a ``HubClient`` over a ``LocalLink`` (it connects on first use),
  with :class:`Scripted` agents (:meth:`HubPair.scripted`) and people (:meth:`HubPair.human`,
  :meth:`HubPair.people`, :meth:`HubPair.people_session`).

Tests run it under trio's autojump ``MockClock`` (the ``autojump_clock`` fixture), except a
few that wait on the real clock within ``trio.fail_after``.
"""

from __future__ import annotations

import gc
import importlib.util
import itertools
import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import attrs
import trio
import trio.testing

import troupe
from troupe import AgentClient, HubClient, HumanClient, LocalLink, Turn
from troupe.hub import Hub
from troupe.model import (
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_CHANNEL_INVITE_REJECT,
    EV_EXPECTATION_VIOLATED,
    EV_TEXT,
    Envelope,
    Frame,
    NotifyFrame,
    Passport,
    ReceiptFrame,
    Resume,
    Rule,
    SessionMetadata,
    SessionState,
)
from troupe.store import MemoryStore, Store
from troupe.testing import CrashPoints, open_test_hub

#: The hub clock of every test hub: a fixed epoch plus trio's (mock) clock, so timestamps
#: are reproducible and keep running across a hub restart within one test.
EPOCH = 1_800_000_000.0

#: What a wait for an expected envelope allows (virtual seconds).
WAIT = 30.0

InvitePolicy = Literal["ack", "reject", "ignore"]
Reply = Callable[[Turn], Any]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path (``examples`` is a folder, not a package)."""
    spec = importlib.util.spec_from_file_location(f"troupe_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Scripted:
    """An agent whose ``respond`` records every turn and answers with ``reply(turn)``.

    The default reply is ``"<name>: <trigger text>"``.
    """

    def __init__(self, name: str, reply: Reply | None = None) -> None:
        self.name = name
        self._reply = reply
        self.turns: list[Turn] = []

    async def respond(self, turn: Turn) -> Any:
        self.turns.append(turn)
        await trio.lowlevel.checkpoint()
        if self._reply is None:
            return f"{self.name}: {turn.text}"
        return self._reply(turn)

    @property
    def triggers(self) -> list[str]:
        """The ids of the envelopes this agent was asked to answer, in order."""
        return [t.envelope.envelope_id for t in self.turns]


class Lines:
    """A reply function that says ``lines`` in order, then stays silent (``None``)."""

    def __init__(self, *lines: str) -> None:
        self.lines = list(lines)

    def __call__(self, turn: Turn) -> str | None:
        return self.lines.pop(0) if self.lines else None


class FakeEndpoint:
    """The hub's end of a connection whose client is a :class:`MiniClient`."""

    def __init__(self, endpoint_id: str, client: MiniClient) -> None:
        self._id = endpoint_id
        self._client = client
        self.to_hub, self._from_client = trio.open_memory_channel[Frame](math.inf)
        self.closed = False
        #: While set, ``send_frame`` waits: a client that stopped reading.
        self.stalled: trio.Event | None = None

    @property
    def endpoint_id(self) -> str:
        return self._id

    @property
    def alive(self) -> bool:
        return not self.closed and self._from_client.statistics().open_send_channels > 0

    def encode(self, frame: Frame) -> Frame:
        return frame

    async def send_frame(self, frame: Frame | str) -> None:
        assert not isinstance(frame, str)
        if self.stalled is not None:
            await self.stalled.wait()
        await trio.lowlevel.checkpoint()
        self._client.on_frame(frame)

    def frames(self) -> trio.MemoryReceiveChannel[Frame]:
        return self._from_client

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


class MiniClient:
    """One connection: records what the hub sends, acks invites, sends receipts."""

    def __init__(
        self,
        hub: Hub,
        nursery: trio.Nursery,
        endpoint_id: str,
        *,
        invites: InvitePolicy = "ack",
        receipts: bool = True,
    ) -> None:
        self.hub = hub
        self.nursery = nursery
        self.endpoint = FakeEndpoint(endpoint_id, self)
        self.invites = invites
        self.receipts = receipts
        self.frames: list[Frame] = []
        #: Exceptions raised by the invite answers this client posted.
        self.errors: list[Exception] = []

    async def attach(self) -> None:
        await self.hub.attach_endpoint(self.endpoint)

    async def bind(
        self, agent_id: str, *, since: dict[str, int] | None = None, takeover: bool = False
    ) -> None:
        await self.hub.bind_endpoint(
            self.endpoint.endpoint_id, agent_id, since=since, takeover=takeover
        )

    def disconnect(self) -> None:
        """The client goes away: the hub's reader sees the end of its frames."""
        self.endpoint.to_hub.close()

    def notified(
        self, recipient_id: str | None = None, session_id: str | None = None
    ) -> list[Envelope]:
        """Envelopes notified (to ``recipient_id``, in ``session_id``), in arrival order."""
        return [
            f.envelope
            for f in self.frames
            if isinstance(f, NotifyFrame)
            and (recipient_id is None or f.recipient_id == recipient_id)
            and (session_id is None or f.envelope.session_id == session_id)
        ]

    def seqs(self, recipient_id: str, session_id: str) -> list[int]:
        return [e.seq for e in self.notified(recipient_id, session_id)]

    def on_frame(self, frame: Frame) -> None:
        self.frames.append(frame)
        if not isinstance(frame, NotifyFrame):
            return
        env = frame.envelope
        if env.event_type == EV_CHANNEL_INVITE and self.invites != "ignore":
            kind = EV_CHANNEL_INVITE_ACK if self.invites == "ack" else EV_CHANNEL_INVITE_REJECT
            answer = Envelope(
                session_id=env.session_id,
                sender_id=frame.recipient_id,
                event_type=kind,
                causation_id=env.envelope_id,
            )
            self.nursery.start_soon(self._post, answer)
        if self.receipts:
            self.ack(frame.recipient_id, env)

    def send(self, frame: Frame) -> None:
        self.endpoint.to_hub.send_nowait(frame)

    def ack(
        self, recipient_id: str, *envelopes: Envelope, status: str = "ack", reason: str = ""
    ) -> None:
        """Send a receipt (``ack`` or ``nack``) for each envelope, as ``recipient_id``."""
        for env in envelopes:
            self.send(
                ReceiptFrame(
                    envelope_id=env.envelope_id,
                    recipient_id=recipient_id,
                    session_id=env.session_id,
                    seq=env.seq,
                    status=status,
                    reason=reason,
                )
            )

    async def _post(self, env: Envelope) -> None:
        try:
            await self.hub.post_envelope(env)
        except Exception as exc:  # recorded for the test to inspect
            self.errors.append(exc)


@attrs.frozen
class Agent:
    name: str
    id: str
    client: MiniClient | None


def client_of(agent: Agent) -> MiniClient:
    """The agent's own connection (it was registered with ``connect=True``)."""
    assert agent.client is not None
    return agent.client


def hub_clock() -> float:
    return EPOCH + trio.current_time()


def counter_ids(prefix: str = "id") -> Callable[[], str]:
    """Reproducible ids: ``id-0001``, ``id-0002``, … (sortable, like UUID7)."""
    numbers = itertools.count(1)
    return lambda: f"{prefix}-{next(numbers):04d}"


class HubPair:
    """A running hub with helpers to register agents, connect them and open sessions."""

    def __init__(
        self, hub: Hub, store: Store, nursery: trio.Nursery, faults: CrashPoints, hc: HubClient
    ) -> None:
        self.hub = hub
        self.store = store
        self.nursery = nursery
        self.faults = faults
        #: The pair's HubClient (over a LocalLink); it connects on first use.
        self.hc = hc
        self.agents: dict[str, Agent] = {}

    async def connection(
        self, endpoint_id: str, *, invites: InvitePolicy = "ack", receipts: bool = True
    ) -> MiniClient:
        """A fake connection, attached to the hub but bound to no agent yet."""
        client = MiniClient(self.hub, self.nursery, endpoint_id, invites=invites, receipts=receipts)
        await client.attach()
        return client

    async def agent(
        self,
        name: str,
        *,
        rule: Rule | None = None,
        resume: Resume | None = None,
        connect: bool = True,
        invites: InvitePolicy = "ack",
        receipts: bool = True,
        kind: str | None = None,
    ) -> Agent:
        """Register ``name`` (or find it, after a restart) and give it its own connection."""
        agent_id = self.hub.find_agent_id(name)
        if agent_id is None:
            passport = await self.hub.register(Passport(name=name, kind=kind), resume, rule=rule)
            assert passport.agent_id is not None
            agent_id = passport.agent_id
        client = None
        if connect:
            client = await self.connection(f"ep-{name}", invites=invites, receipts=receipts)
            await client.bind(agent_id)
        agent = Agent(name, agent_id, client)
        self.agents[name] = agent
        return agent

    async def session(
        self,
        manifest_type: str,
        creator: Agent,
        *others: Agent,
        **kwargs: Any,
    ) -> SessionMetadata:
        """Create a session and check it came out ACTIVE."""
        md = await self.hub.create_session(
            creator_id=creator.id,
            manifest_type=manifest_type,
            participants=[a.id for a in others],
            **kwargs,
        )
        assert md.state is SessionState.ACTIVE
        return md

    async def say(
        self, md: SessionMetadata | str, sender: Agent, text: str = "hi", **kwargs: Any
    ) -> str:
        return await self.hub.post_envelope(text_envelope(md, sender, text, **kwargs))

    async def alice_and_silent_bob(
        self, texts: int, *, prefix: str = ""
    ) -> tuple[Agent, Agent, SessionMetadata]:
        """alice and bob (who never acks) in a conversation; alice has posted ``texts`` texts
        (``prefix`` + "0", "1", ...) and they have been delivered."""
        alice = await self.agent("alice")
        bob = await self.agent("bob", receipts=False)
        md = await self.session("conversation", alice, bob)
        for i in range(texts):
            await self.say(md, alice, f"{prefix}{i}")
        await self.settle()
        return alice, bob, md

    async def settle(self) -> None:
        """Let every delivery, turn, receipt and cursor write in flight finish.

        Returns as soon as every task waits: it does not move the clock past a sleep.
        """
        await trio.testing.wait_all_tasks_blocked()

    # -- Through a HubClient, as a program does ----------------------------------------------

    def client(self) -> HubClient:
        """Another (unconnected) HubClient to the same hub."""
        return HubClient(LocalLink(self.hub))

    async def scripted(
        self,
        name: str,
        reply: Reply | None = None,
        *,
        hc: HubClient | None = None,
        rule: Rule | None = None,
        capabilities: Sequence[str] = (),
    ) -> tuple[AgentClient, Scripted]:
        """Register a :class:`Scripted` agent called ``name``; return its client and itself."""
        scripted = Scripted(name, reply)
        client = await (hc or self.hc).register(
            scripted,
            Passport(name=name),
            Resume(claimed_capabilities=tuple(capabilities)),
            rule=rule,
        )
        return client, scripted

    async def human(
        self, name: str, *, hc: HubClient | None = None, auto_ack_invites: bool = True
    ) -> HumanClient:
        return await (hc or self.hc).register_human(
            Passport(name=name, kind="human"), auto_ack_invites=auto_ack_invites
        )

    async def reattach(
        self, name: str, agent: troupe.Agent | None = None
    ) -> tuple[HubClient, AgentClient | HumanClient]:
        """``name`` comes back on a new HubClient: attach it and let the replay run."""
        hc = self.client()
        identity = await hc.attach(agent, name)
        await self.settle()
        return hc, identity

    async def people(self, *names: str) -> list[HumanClient]:
        """Register one human per name (they ack invites, and say only what tests send)."""
        return [await self.human(n) for n in names]

    async def people_session(
        self, kind: str, *names: str, kickoff: str | None = None
    ) -> tuple[list[HumanClient], str]:
        """People called ``names``; the first opens a ``kind`` session with the others.

        Args:
            kind: The session type.
            names: The participants, the creator first.
            kickoff: A first text the creator sends, if any.

        Returns:
            The people, and the session id.
        """
        people = await self.people(*names)
        others = [p.agent_id for p in people[1:]]
        sid = (await people[0].open(type=kind, target=others)).session_id
        if kickoff is not None:
            await people[0].send(sid, kickoff)
        return people, sid

    async def notices(self, session_id: str) -> list[Envelope]:
        """The expectation notices in a session's WAL."""
        wal = await self.hub.read_wal(session_id)
        return [e for e in wal if e.event_type == EV_EXPECTATION_VIOLATED]

    async def audit(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in await self.hub.read_audit() if r["kind"] == kind]

    async def wal(self, session_id: str) -> list[Envelope]:
        return await self.hub.read_wal(session_id)


def text_envelope(
    md: SessionMetadata | str, sender: Agent | str, text: str = "hi", **kwargs: Any
) -> Envelope:
    sid = md if isinstance(md, str) else md.session_id
    sender_id = sender if isinstance(sender, str) else sender.id
    return Envelope(
        session_id=sid,
        sender_id=sender_id,
        event_type=EV_TEXT,
        event_data={"text": text},
        **kwargs,
    )


def from_(
    sender: AgentClient | HumanClient, event_type: str = EV_TEXT
) -> Callable[[Envelope], bool]:
    """A predicate: an envelope of ``event_type`` sent by ``sender``."""
    sender_id = sender.agent_id
    return lambda e: e.event_type == event_type and e.sender_id == sender_id


def said(body: str) -> Callable[[Envelope], bool]:
    """A predicate: an ``EV_TEXT`` envelope saying ``body``."""
    return lambda e: e.event_type == EV_TEXT and e.text == body


def of_type(event_type: str) -> Callable[[Envelope], bool]:
    return lambda e: e.event_type == event_type


def texts(envelopes: Iterable[Envelope]) -> list[str]:
    """The texts among ``envelopes``, in order."""
    return [e.text for e in envelopes if e.event_type == EV_TEXT and e.text is not None]


def kinds(envelopes: Iterable[Envelope]) -> list[str]:
    return [e.event_type for e in envelopes]


def text(session: SessionMetadata | str, sender_id: str, body: str, **kw: Any) -> Envelope:
    sid = session if isinstance(session, str) else session.session_id
    return Envelope(
        session_id=sid, sender_id=sender_id, event_type=EV_TEXT, event_data={"text": body}, **kw
    )


def wal_view(wal: Iterable[Envelope]) -> list[tuple[int, str, str, Any]]:
    """What a WAL says, without the hub-made ids and clocks."""
    return [(e.seq, e.sender_id, e.event_type, e.event_data.get("text")) for e in wal]


@asynccontextmanager
async def open_hub_pair(
    store: Store | None = None, *, faults: CrashPoints | None = None, **hub_kwargs: Any
) -> AsyncIterator[HubPair]:
    """A hub on ``store`` (a fresh MemoryStore by default) with its own nursery for clients.

    Both sweepers are off unless ``ttl_sweep_interval`` or ``expectation_sweep_interval`` is
    given; ``hub_kwargs`` go to ``open_hub``. When the block ends the nursery is cancelled,
    then ``hc`` is closed.
    """
    store = store if store is not None else MemoryStore()
    faults = faults if faults is not None else CrashPoints()
    hub_kwargs.setdefault("ttl_sweep_interval", 0)
    hub_kwargs.setdefault("expectation_sweep_interval", 0)
    hub_kwargs.setdefault("clock", hub_clock)
    async with open_test_hub(store, faults=faults, **hub_kwargs) as hub:
        hc = HubClient(LocalLink(hub))
        async with trio.open_nursery() as nursery:
            yield HubPair(hub, store, nursery, faults, hc)
            nursery.cancel_scope.cancel()
        await hc.close()


class StepCounter(trio.abc.Instrument):
    """Counts the scheduler steps of the tasks ``counts(task)`` picks."""

    def __init__(self, counts: Callable[[trio.lowlevel.Task], bool]) -> None:
        self.counts = counts
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.counts(task):
            self.steps += 1


@contextmanager
def counting_steps(counts: Callable[[trio.lowlevel.Task], bool]) -> Iterator[StepCounter]:
    """Count, within the block, the scheduler steps of the tasks ``counts(task)`` picks."""
    counter = StepCounter(counts)
    trio.lowlevel.add_instrument(counter)
    try:
        yield counter
    finally:
        trio.lowlevel.remove_instrument(counter)


def live_would_blocks() -> int:
    """How many ``trio.WouldBlock`` exceptions are alive now (after a collection): one kept
    by a waiting task's frame is memory held for as long as it waits."""
    gc.collect()
    return sum(isinstance(o, trio.WouldBlock) for o in gc.get_objects())
