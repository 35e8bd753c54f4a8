"""A hub with an in-process HubClient, scripted agents, and waits with deadlines.

``ClientPair`` is the ``HubPair`` of the client tests (h11's ``ConnectionPair``): one running
hub on a MemoryStore (sweeper off), one ``HubClient`` over a ``LocalLink`` to it, and helpers
to register scripted agents and people. Every test runs under trio's autojump ``MockClock``
(it asks for the ``autojump_clock`` fixture; ``open_pair`` checks); ``tests/conftest.py``
caps every test, so a hung test fails at once instead of hanging.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import trio
import trio.testing

from troupe import (
    EV_TEXT,
    Agent,
    AgentClient,
    Envelope,
    HubClient,
    HumanClient,
    LocalLink,
    Passport,
    Resume,
    Rule,
    SessionMetadata,
    Turn,
    open_hub,
)
from troupe.hub import Hub
from troupe.store import MemoryStore, Store

#: The hub's wall clock in these tests: a fixed epoch advanced by trio's (mock) clock.
EPOCH = 1_800_000_000.0
#: What a wait for an expected envelope allows (virtual seconds).
WAIT = 30.0

Reply = Callable[[Turn], Any]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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


class ClientPair:
    """A running hub and one HubClient connected to it."""

    def __init__(self, hub: Hub, store: Store, hc: HubClient, nursery: trio.Nursery) -> None:
        self.hub = hub
        self.store = store
        self.hc = hc
        self.nursery = nursery

    def client(self) -> HubClient:
        """Another (unconnected) HubClient to the same hub."""
        return HubClient(LocalLink(self.hub))

    async def agent(
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
        self, name: str, agent: Agent | None = None
    ) -> tuple[HubClient, AgentClient | HumanClient]:
        """``name`` comes back on a new HubClient: attach it and let the replay run."""
        hc = self.client()
        identity = await hc.attach(agent, name)
        await self.settle()
        return hc, identity

    async def settle(self) -> None:
        """Let every delivery, turn, receipt and cursor write in flight finish.

        Returns as soon as every task waits: it does not move the clock past a sleep.
        """
        await trio.testing.wait_all_tasks_blocked()

    async def audit(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in await self.hub.read_audit() if r["kind"] == kind]

    async def wal(self, session_id: str) -> list[Envelope]:
        return await self.hub.read_wal(session_id)


def hub_clock() -> float:
    return EPOCH + trio.current_time()


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


@asynccontextmanager
async def open_pair(store: Store | None = None, **hub_kwargs: Any) -> AsyncIterator[ClientPair]:
    """A hub (sweeper off, mock-anchored clock) and a HubClient in ``async with``."""
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock), (
        "client tests run on virtual time: request the autojump_clock fixture"
    )
    hub_kwargs.setdefault("ttl_sweep_interval", 0)
    hub_kwargs.setdefault("clock", hub_clock)
    store = store if store is not None else MemoryStore()
    async with (
        open_hub(store, **hub_kwargs) as hub,
        HubClient(LocalLink(hub)) as hc,
        trio.open_nursery() as nursery,
    ):
        yield ClientPair(hub, store, hc, nursery)
