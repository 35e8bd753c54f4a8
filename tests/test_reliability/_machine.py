"""The model-based test of a hub: random use, random faults, invariants after every step.

The machine starts a hub (idle sessions passivated after 18 virtual seconds) with four
identities (humans and scripted bots) and a session of every built-in type, then registers
more, opens and closes sessions, posts valid and invalid envelopes (some with idempotency
keys, some retried), arms crash points and store faults, and restarts the hub on the same
store. Every post the machine makes carries a unique ``nonce`` in its data, so the WAL can
be checked against what each post was told: an accepted nonce is in the WAL exactly once,
with the id and seq the poster got; a refused one is not there at all. ``check_invariants``
checks the rest (seqs, dedup, folds, metadata).
"""

from __future__ import annotations

import gc
import itertools
from pathlib import Path
from typing import Any

import attrs
import trio
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from troupe import (
    EV_SESSION_OPENED,
    EV_TEXT,
    Envelope,
    HubClient,
    LocalLink,
    Passport,
    StoreError,
    TroupeError,
)
from troupe.client import AgentClient, HumanClient, Turn
from troupe.hub import CRASH_POINTS, Accepted, Hub, open_hub
from troupe.session_types import builtin_types
from troupe.store import Store
from troupe.testing import (
    CrashPoints,
    FaultyStore,
    ScriptedAgent,
    check_invariants,
    make_store,
    no_task_leaks,
    seeded_ids,
)

from ._bridge import Bridge

#: Virtual seconds one post or create may take before it counts as hung.
POST_DEADLINE = 30.0
#: Virtual seconds after the store heals by which every crashed session must be closed
#: (the hub retries a close the store refused with a backoff of at most 5 s).
HEAL_S = 10.0
#: Every participant acks at once: a create that waits this long for acks is a bug.
INVITE_TIMEOUT = 10.0
#: The identities every example starts with (name, is a bot), and the ones it may add.
FIRST = [("h0", False), ("h1", False), ("b2", True), ("b3", True)]
MORE = ["h4", "b5"]
TYPES = sorted(t.name for t in builtin_types())
#: Sessions every example starts with: (type, members, the creator first).
OPENING = [
    ("consulting", ["h0", "h1"]),
    ("conversation", ["h0", "h1"]),
    ("conversation", ["h1", "b2"]),
    ("discussion", ["h0", "b2", "h1"]),
]
STORE_FAULTS = ["append", "commit", "reads", "snapshot"]
HOW = ["member", "member", "member", "outsider", "hub_only", "bad_audience"]

Identity = AgentClient | HumanClient


@attrs.frozen
class Refused:
    """A post the hub refused: it must not be in the WAL."""

    error: TroupeError


@attrs.frozen
class Unknown:
    """A post whose session crashed and whose WAL could not be read: the WAL decides."""

    error: TroupeError


Outcome = Accepted | Refused | Unknown


@attrs.define
class SessionModel:
    kind: str
    members: list[str]
    #: nonce -> (envelope_id, seq) the poster was given.
    accepted: dict[int, tuple[str, int]] = attrs.field(factory=dict)
    rejected: set[int] = attrs.field(factory=set)
    #: Posts made with an idempotency key, to retry later: (envelope, nonce).
    keyed: list[tuple[Envelope, int]] = attrs.field(factory=list)


@attrs.define
class HubRun:
    """One incarnation of the hub, running in a task of the test's nursery."""

    hub: Hub
    client: HubClient
    stop: trio.Event
    done: trio.Event
    outcome: list[BaseException]


class HubMachine(RuleBasedStateMachine):
    """See the module docstring; ``bridge``, ``directory`` and ``engine`` are set by the test."""

    bridge: Bridge
    directory: Path
    engine: str
    examples = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        example = next(self.examples)
        scratch = self.directory / f"example-{example}"
        scratch.mkdir()
        self.store: Store = make_store(self.engine, scratch)
        self.faulty = FaultyStore(self.store)
        self.crashes = CrashPoints()
        # The same ids in every example: a replayed example must behave the same.
        self.new_id = seeded_ids(0)
        self.nonces = itertools.count(1)
        self.running: HubRun | None = None
        self.identities: dict[str, Identity] = {}
        self.bots: dict[str, ScriptedAgent] = {}
        self.agent_ids: dict[str, str] = {}
        self.sessions: dict[str, SessionModel] = {}

    # -- the hub's life ----------------------------------------------------------------------

    async def _serve(
        self,
        stop: trio.Event,
        done: trio.Event,
        outcome: list[BaseException],
        *,
        task_status: trio.TaskStatus[Hub],
    ) -> None:
        try:
            with no_task_leaks():
                async with open_hub(
                    self.faulty,
                    faults=self.crashes,
                    new_id=self.new_id,
                    ttl_sweep_interval=0,
                    # Off the steps' 5 s rhythm: trio breaks ties between deadlines by object
                    # identity, so timers that fire together would make a run irreproducible.
                    expectation_sweep_interval=7.3,
                    passivate_after=17.9,  # idle sessions stop and come back (odd, as above)
                    snapshot_every=3,
                    invite_ack_timeout=INVITE_TIMEOUT,
                ) as hub:
                    task_status.started(hub)
                    await stop.wait()
        except Exception as exc:  # handed to the machine, which fails the example with it
            outcome.append(exc)
        finally:
            done.set()

    async def _open(self) -> None:
        stop, done = trio.Event(), trio.Event()
        outcome: list[BaseException] = []
        hub = await self.bridge.nursery.start(self._serve, stop, done, outcome)
        self.running = HubRun(hub, HubClient(LocalLink(hub)), stop, done, outcome)

    async def _close(self) -> None:
        running, self.running = self.running, None
        if running is None:
            return
        await running.client.close()
        running.stop.set()
        await running.done.wait()
        gc.collect()  # here, on the trio thread (see _bridge.py)
        if running.outcome:
            raise running.outcome[0]

    @property
    def hub(self) -> Hub:
        assert self.running is not None
        return self.running.hub

    @property
    def client(self) -> HubClient:
        assert self.running is not None
        return self.running.client

    @initialize()
    def start(self) -> None:
        self.bridge.run(self._start)

    async def _start(self) -> None:
        await self._open()
        for name, bot in FIRST:
            await self._register(name, bot)
        for kind, members in OPENING:
            await self._create(kind, members)
        assert len(self.sessions) == len(OPENING)

    def teardown(self) -> None:
        self.bridge.run(self._close)

    @rule()
    def restart_hub(self) -> None:
        self.bridge.run(self._restart)

    async def _restart(self) -> None:
        self.faulty.heal()
        self.crashes.clear()
        before = {sid: await self.store.read(sid) for sid in self.sessions}
        await self._close()
        await self._open()
        for name in list(self.identities):
            self.identities[name] = await self.client.attach(self.bots.get(name), name)
        for sid, wal in before.items():
            after = await self.store.read(sid)
            assert after[: len(wal)] == wal, f"session {sid}: a restart changed its WAL"

    # -- registrations and sessions ----------------------------------------------------------

    @rule(name=st.sampled_from(MORE))
    def register(self, name: str) -> None:
        if name not in self.identities:
            self.bridge.run(self._register, name, name.startswith("b"))

    async def _register(self, name: str, bot: bool) -> None:
        identity: Identity
        try:
            if bot:
                agent = ScriptedAgent([self._bot_reply], cycle=True)
                identity = await self.client.register(agent, Passport(name=name))
                self.bots[name] = agent
            else:
                identity = await self.client.register_human(Passport(name=name))
        except TroupeError:
            return  # a store fault: not registered (the rule may come again)
        self.identities[name] = identity
        self.agent_ids[name] = identity.agent_id

    def _bot_reply(self, turn: Turn) -> str | None:
        # Bots answer humans only: two bots would otherwise talk for ever.
        if turn.envelope.sender_id in {self.agent_ids[b] for b in self.bots}:
            return None
        return f"re: {turn.text}"

    @rule(data=st.data())
    def create_session(self, data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(TYPES), label="type")
        most = 4 if kind == "discussion" else 2
        members = data.draw(
            st.lists(
                st.sampled_from(sorted(self.identities)), min_size=2, max_size=most, unique=True
            ),
            label="members",
        )
        self.bridge.run(self._create, kind, members)

    async def _create(self, kind: str, members: list[str]) -> None:
        creator = self.identities[members[0]]
        try:
            with trio.fail_after(POST_DEADLINE):
                channel = await creator.open(type=kind, target=members[1:])
        except TroupeError as exc:
            if "no ack within" in str(exc) and not self._ack_was_poison(exc):
                raise AssertionError(f"an invite ack was lost: {exc}") from exc
            return  # a store fault or a crash storm
        self.sessions[channel.session_id] = SessionModel(kind, members)

    def _ack_was_poison(self, exc: TroupeError) -> bool:
        # An ack that crashed its session twice (random crashes can do that) is refused as
        # poison, as any post would be: then, and only then, may the acks run out.
        poisoned = {
            letter.mailbox for letter in self.hub.dead_letters.letters if letter.reason == "poison"
        }
        return any(sid in str(exc) for sid in poisoned)

    @rule(data=st.data())
    def close_session(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(list(self.sessions)), label="session")
        self.bridge.run(self._close_session, sid)

    async def _close_session(self, sid: str) -> None:
        try:
            md = await self.hub.close_session(sid)
        except TroupeError:
            assert not (await self.hub.get_session(sid)).state.terminal
            return
        assert md.state.terminal

    # -- posts -------------------------------------------------------------------------------

    @rule(data=st.data(), count=st.integers(1, 4))
    def post(self, data: st.DataObject, count: int) -> None:
        for _ in range(count):
            self._post_one(data)

    def _post_one(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(list(self.sessions)), label="session")
        model = self.sessions[sid]
        how = data.draw(st.sampled_from(HOW), label="how")
        pool = [n for n in self.identities if (n in model.members) == (how != "outsider")]
        if not pool:
            return
        sender = data.draw(st.sampled_from(sorted(pool)), label="sender")
        keyed = data.draw(st.booleans(), label="with an idempotency key")
        nonce = next(self.nonces)
        envelope = Envelope(
            session_id=sid,
            sender_id=self.agent_ids[sender],
            event_type=EV_SESSION_OPENED if how == "hub_only" else EV_TEXT,
            event_data={"text": f"#{nonce}", "nonce": nonce},
            audience=("nobody",) if how == "bad_audience" else None,
            idempotency_key=f"key-{nonce}" if keyed else None,
        )
        result = self.bridge.run(self._post, envelope)
        if isinstance(result, Refused):
            model.rejected.add(nonce)
        elif isinstance(result, Accepted):
            assert how == "member", f"a {how} post was accepted: {envelope}"
            assert not result.duplicate, f"a first post was answered as a repeat: {envelope}"
            model.accepted[nonce] = (result.envelope_id, result.seq)
        if keyed:
            model.keyed.append((envelope, nonce))

    async def _post(self, envelope: Envelope) -> Outcome:
        try:
            with trio.fail_after(POST_DEADLINE):
                return await self.hub.post(envelope)
        except TroupeError as exc:
            return Unknown(exc) if "is unknown" in str(exc) else Refused(exc)
        except trio.TooSlowError:
            raise AssertionError(f"a post hung for {POST_DEADLINE}s: {envelope}") from None

    @precondition(lambda self: any(m.keyed for m in self.sessions.values()))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from([s for s, m in self.sessions.items() if m.keyed]))
        model = self.sessions[sid]
        envelope, nonce = data.draw(st.sampled_from(model.keyed), label="retried post")
        result = self.bridge.run(self._post, envelope)
        first = model.accepted.get(nonce)
        if first is not None and self._store_failed(result):
            return  # the store failed the retry's lookup: an honest error, try again later
        if first is not None:
            assert isinstance(result, Accepted), f"the retry of accepted #{nonce}: {result}"
            assert (result.envelope_id, result.seq, result.duplicate) == (*first, True)
        elif isinstance(result, Accepted):
            model.rejected.discard(nonce)
            model.accepted[nonce] = (result.envelope_id, result.seq)

    def _store_failed(self, result: Outcome) -> bool:
        return isinstance(result, Refused) and isinstance(result.error, StoreError)

    # -- faults ------------------------------------------------------------------------------

    @rule(point=st.sampled_from(CRASH_POINTS), times=st.integers(1, 2), data=st.data())
    def arm_crash(self, point: str, times: int, data: st.DataObject) -> None:
        where = st.none() | st.sampled_from(list(self.sessions))
        sid = data.draw(where, label="in session")
        self.crashes.crash_at(point, session_id=sid, times=times)

    @rule(probability=st.sampled_from([0.05, 0.2]), seed=st.integers(0, 2**16))
    def crash_at_random(self, probability: float, seed: int) -> None:
        self.crashes.crash_randomly(probability, seed=seed)

    @rule(where=st.sampled_from(STORE_FAULTS), n=st.integers(1, 3), lost_reply=st.booleans())
    def arm_store_fault(self, where: str, n: int, lost_reply: bool) -> None:
        self.faulty.fail_next(where, n, lost_reply=lost_reply and where == "append")

    @rule()
    def heal(self) -> None:
        self.bridge.run(self._heal)

    async def _heal(self) -> None:
        self.faulty.heal()
        self.crashes.clear()
        await trio.sleep(HEAL_S)
        closing = [e.session_id for e in self.hub.core.directory.sessions.values() if e.given_up]
        assert closing == [], (
            f"sessions given up on were not closed once the store healed: {closing}"
        )

    # -- what must hold after every step -----------------------------------------------------

    @invariant()
    def the_wal_matches_what_posters_were_told(self) -> None:
        if self.running is not None:
            self.bridge.run(self._check, settle=False)

    async def _check(self) -> None:
        await check_invariants(self.hub)
        for sid, model in self.sessions.items():
            found: dict[int, list[Envelope]] = {}
            for envelope in await self.store.read(sid):
                nonce = envelope.event_data.get("nonce")
                if isinstance(nonce, int):
                    found.setdefault(nonce, []).append(envelope)
            for nonce, (envelope_id, seq) in model.accepted.items():
                copies = found.get(nonce, [])
                assert len(copies) == 1, f"accepted #{nonce} is {len(copies)} times in {sid}"
                assert (copies[0].envelope_id, copies[0].seq) == (envelope_id, seq)
            for nonce in model.rejected:
                assert nonce not in found, f"refused #{nonce} is in the WAL of {sid}"


def bound_machine(bridge: Bridge, directory: Path, engine: str) -> type[HubMachine]:
    """The machine class with the test's bridge, scratch directory and store engine."""
    fields: dict[str, Any] = {"bridge": bridge, "directory": directory, "engine": engine}
    return type(f"HubMachineOn{engine.title()}", (HubMachine,), fields)
