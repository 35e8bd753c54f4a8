"""Passivation: idle sessions give their actor back and come back transparently."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from troupe import EV_TEXT, Envelope, HubClient, LocalLink, Passport, ProtocolError, Turn
from troupe.client import AgentClient
from troupe.hub import Hub, open_hub
from troupe.hub._activity import ACTIVITY_NS
from troupe.hub._directory import Directory, Gate, SessionEntry
from troupe.hub._passivation import BATCH, SNAPSHOT_FROM, evict, passivate
from troupe.hub._session import SessionActor
from troupe.hub._session_parts import Passivate
from troupe.model import SessionState
from troupe.store import MemoryStore, Snapshot

from ..harness import open_hub_pair
from ..test_session_types._helpers import metadata

IDLE = 10.0


def running(entry: SessionEntry) -> bool:
    """Whether the session's actor is running (a call, so mypy does not narrow it)."""
    return entry.running


class Silent:
    """An agent that never answers (the tests post for it)."""

    async def respond(self, turn: Turn) -> str | None:
        await trio.lowlevel.checkpoint()
        return None


class HookedStore(MemoryStore):
    """A MemoryStore that can run a hook inside ``save_snapshot`` / ``load_snapshot``."""

    def __init__(self) -> None:
        super().__init__()
        self.on_save: Callable[[], Awaitable[None]] | None = None
        self.on_load: Callable[[], Awaitable[None]] | None = None

    async def save_snapshot(self, session_id: str, seq: int, state: Any) -> None:
        await super().save_snapshot(session_id, seq, state)
        if self.on_save is not None:
            await self.on_save()

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        if self.on_load is not None:
            await self.on_load()
        return await super().load_snapshot(session_id)


@attrs.define
class Pair:
    hub: Hub
    store: HookedStore
    ann: AgentClient
    bob: AgentClient
    session_id: str

    def text(self, text: str) -> Envelope:
        return Envelope(
            session_id=self.session_id,
            sender_id=self.ann.agent_id,
            event_type=EV_TEXT,
            event_data={"text": text},
        )

    async def say(self, *texts: str) -> SessionEntry:
        """Post ``texts`` from ann, in order; return the session's directory entry."""
        for text in texts:
            await self.hub.post(self.text(text))
        return self.hub.core.directory.get(self.session_id)

    async def texts(self) -> list[str]:
        wal = await self.hub.read_wal(self.session_id)
        assert [e.seq for e in wal] == list(range(1, len(wal) + 1))
        return [e.text or "" for e in wal if e.event_type == EV_TEXT]


@asynccontextmanager
async def open_pair(**options: Any) -> AsyncIterator[Pair]:
    """A hub (passivate after IDLE s, no sweepers) and a conversation between two agents."""
    store = HookedStore()
    options.setdefault("passivate_after", IDLE)
    async with open_hub_pair(store, snapshot_every=3, **options) as h:
        ann = await h.hc.register(Silent(), Passport(name="ann"))
        bob = await h.hc.register(Silent(), Passport(name="bob"))
        channel = await ann.open(type="conversation", target="bob")
        yield Pair(h.hub, store, ann, bob, channel.session_id)


async def test_an_idle_session_is_passivated_and_keeps_its_published_view(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pair() as p:
        entry = await p.say(*(f"line {i}" for i in range(4)))
        state, last_seq = entry.state, entry.last_seq
        assert p.hub.statistics().live_sessions == 1

        await trio.sleep(IDLE - 1)
        assert running(entry)
        await trio.sleep(2)

        assert not running(entry)
        assert entry.ref is None
        assert entry.dedup is None
        stats = p.hub.statistics()
        assert (stats.live_sessions, stats.passivated_sessions, stats.passivations) == (0, 1, 1)
        # What readers need stays: metadata, the published state, the turn probe.
        assert (await p.hub.get_session(p.session_id)).state is SessionState.ACTIVE
        assert entry.state == state
        assert entry.last_seq == last_seq
        assert p.hub.can_send(p.session_id, p.bob.agent_id)
        assert not p.hub.can_send(p.session_id, "nobody")
        # The snapshot was brought up to date before the actor stopped.
        snapshot = await p.store.load_snapshot(p.session_id)
        assert snapshot is not None
        assert snapshot.seq == last_seq


async def test_the_next_post_rehydrates_it_and_seq_continues(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pair() as p:
        entry = await p.say(*(f"before {i}" for i in range(4)))
        before = entry.state
        await trio.sleep(IDLE + 1)
        assert not running(entry)

        accepted = await p.hub.post(p.text("after"))

        assert accepted.seq == entry.last_seq
        assert running(entry)
        assert entry.state.turn_count == before.turn_count + 1
        assert await p.texts() == [*(f"before {i}" for i in range(4)), "after"]
        stats = p.hub.statistics()
        assert (stats.rehydrations, stats.live_sessions, stats.session_restarts) == (1, 1, 0)


async def test_a_short_session_never_snapshotted_is_passivated_without_a_snapshot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Just created and left idle: its next start refolds its few envelopes (issue 15, item 6).
    store = MemoryStore()
    async with (
        open_hub(store, ttl_sweep_interval=0, passivate_after=IDLE) as hub,
        HubClient(LocalLink(hub)) as hc,
    ):
        ann = await hc.register(Silent(), Passport(name="ann"))
        await hc.register(Silent(), Passport(name="bob"))
        table = await ann.open(type="conversation", target="bob")
        sid = table.session_id
        entry = hub.core.directory.get(sid)
        assert entry.last_seq < SNAPSHOT_FROM
        state = entry.state
        await trio.sleep(IDLE + 1)
        assert not running(entry)
        assert hub.statistics().passivations == 1
        assert await store.load_snapshot(sid) is None
        assert await store.load_kv(ACTIVITY_NS + sid) == {}
        accepted = await hub.post(
            Envelope(
                session_id=sid,
                sender_id=ann.agent_id,
                event_type=EV_TEXT,
                event_data={"text": "after"},
            )
        )
        assert accepted.seq == entry.last_seq == 4
        assert entry.state.turn_count == state.turn_count + 1


@pytest.mark.parametrize("snapshot_every", [0, 3])
async def test_rehydration_refolds_the_same_state_with_or_without_snapshots(
    autojump_clock: trio.testing.MockClock, snapshot_every: int
) -> None:
    store = MemoryStore()
    async with (
        open_hub(
            store, ttl_sweep_interval=0, snapshot_every=snapshot_every, passivate_after=IDLE
        ) as hub,
        HubClient(LocalLink(hub)) as hc,
    ):
        ann = await hc.register(Silent(), Passport(name="ann"))
        await hc.register(Silent(), Passport(name="bob"))
        table = await ann.open(type="conversation", target="bob")
        for i in range(7):
            await table.send(f"line {i}")
        entry = hub.core.directory.get(table.session_id)
        folded = entry.state
        await trio.sleep(IDLE + 1)
        assert not running(entry)
        assert (await store.load_snapshot(table.session_id) is None) == (snapshot_every == 0)
        last_id = await table.send("line 7")
        assert entry.state == attrs.evolve(folded, turn_count=8, last_envelope_id=last_id)


async def test_a_repeated_post_is_still_recognised_after_rehydration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pair() as p:
        first = await p.hub.post(attrs.evolve(p.text("once"), idempotency_key="k1"))
        await trio.sleep(IDLE + 1)
        again = await p.hub.post(attrs.evolve(p.text("once"), idempotency_key="k1"))
        assert again.duplicate
        assert (again.envelope_id, again.seq) == (first.envelope_id, first.seq)
        assert await p.texts() == ["once"]


async def test_a_session_in_use_is_not_passivated(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pair() as p:
        for i in range(12):
            await trio.sleep(IDLE / 2)
            await p.hub.post(p.text(f"line {i}"))
        assert p.hub.statistics().passivations == 0
        assert running(p.hub.core.directory.get(p.session_id))


async def test_posts_arriving_while_it_passivates_and_rehydrates_keep_their_order(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Posts come one by one once the actor agreed to stop, and while it is reloaded."""
    async with open_pair() as p, trio.open_nursery() as nursery:
        entry = await p.say("first")
        arrivals: list[tuple[str, str]] = []
        accepted: list[str] = []
        reloaded = trio.Event()
        all_accepted = trio.Event()

        def phase() -> str:
            if entry.gate is not None and entry.gate.passivating is not None:
                return "stopping"
            return "live" if entry.running else "reloading"

        async def post(text: str) -> None:
            arrivals.append((text, phase()))
            await p.hub.post(p.text(text))
            accepted.append(text)
            if len(accepted) == 8:
                all_accepted.set()

        async def arrive_one_by_one() -> None:
            for i in range(8):
                nursery.start_soon(post, f"post {i}")
                await trio.testing.wait_all_tasks_blocked()
            reloaded.set()

        stop = SessionActor.on_stop

        async def on_stop(self: SessionActor) -> None:
            # The actor agreed and is stopping: the posts find the session passivating,
            # then reloading, and queue at its gate.
            monkeypatch.setattr(SessionActor, "on_stop", stop)
            nursery.start_soon(arrive_one_by_one)
            await trio.testing.wait_all_tasks_blocked()
            await stop(self)

        async def while_reloading() -> None:
            p.store.on_load = None
            await reloaded.wait()

        monkeypatch.setattr(SessionActor, "on_stop", on_stop)
        p.store.on_load = while_reloading
        with trio.fail_after(IDLE * 3):
            await all_accepted.wait()

        phases = [ph for _, ph in arrivals]
        assert phases[0] == "stopping"
        assert "reloading" in phases
        assert "live" not in phases
        assert await p.texts() == ["first", *(text for text, _ in arrivals)]
        # Every poster was answered. In what order the posters then run is trio's: an actor
        # answers the posts queued for it in one burst, and trio runs the tasks woken in one
        # scheduler batch in an order of its own.
        assert sorted(accepted) == sorted(text for text, _ in arrivals)
        stats = p.hub.statistics()
        assert (stats.passivations, stats.rehydrations) == (1, 1)
        assert entry.gate is None


async def test_a_post_during_the_snapshot_keeps_the_session_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pair() as p, trio.open_nursery() as nursery:
        entry = await p.say("first")
        seqs: list[int] = []

        async def post() -> None:
            seqs.append((await p.hub.post(p.text("during snapshot"))).seq)

        async def during_snapshot() -> None:
            p.store.on_save = None
            nursery.start_soon(post)
            await trio.testing.wait_all_tasks_blocked()
            assert entry.ref is not None
            assert len(entry.ref.mailbox) == 1  # queued behind the Passivate in hand

        p.store.on_save = during_snapshot
        await trio.sleep(IDLE + 1)
        assert seqs == [entry.last_seq]
        assert running(entry)
        assert p.hub.statistics().passivations == 0
        # Idle again for long enough: now it goes.
        await trio.sleep(IDLE)
        assert not running(entry)
        assert await p.texts() == ["first", "during snapshot"]


async def test_a_passivated_session_can_be_closed(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pair() as p:
        await p.hub.post(p.text("hello"))
        await trio.sleep(IDLE + 1)
        md = await p.hub.close_session(p.session_id, reason="done")
        assert md.state is SessionState.CLOSED
        wal = await p.hub.read_wal(p.session_id)
        assert [e.seq for e in wal] == list(range(1, len(wal) + 1))
        assert wal[-1].event_data["reason"] == "done"
        await trio.testing.wait_all_tasks_blocked()
        stats = p.hub.statistics()
        assert (stats.open_sessions, stats.live_sessions, stats.passivated_sessions) == (0, 0, 0)
        assert not p.hub.core.directory.in_use


async def test_idle_agents_and_passivated_sessions_cost_no_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_pair() as p:
        assert p.hub._client_nursery is not None
        assert p.hub._sessions is not None
        client_tasks = len(p.hub._client_nursery.child_tasks)
        for i in range(3):
            await p.hub.post(p.text(f"line {i}"))
        # Deliveries are pending: bob's client runs a drain task for the session...
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(IDLE + 1)
        # ...which ends once they are handled; the passivated session has no task either.
        assert len(p.hub._client_nursery.child_tasks) == client_tasks
        [client_loop] = p.hub._client_nursery.child_tasks
        assert [t.name for t in client_loop.child_nurseries[0].child_tasks] == []
        assert len(p.hub._sessions) == 0


async def test_passivation_can_be_turned_off(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pair(passivate_after=None) as p:
        await p.hub.post(p.text("hello"))
        await trio.sleep(IDLE * 100)
        assert running(p.hub.core.directory.get(p.session_id))
        assert p.hub.statistics().passivations == 0


async def test_a_negative_idle_time_is_refused() -> None:
    with pytest.raises(ValueError, match="passivate_after"):
        async with open_hub(passivate_after=-1):
            pass  # pragma: no cover


async def test_many_idle_sessions_are_passivated_in_batches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub(ttl_sweep_interval=0, passivate_after=IDLE) as hub:
        ann = await hub.register(Passport(name="ann"))
        # bob acks his invites (a session opens only once its invitees consented).
        bob = (await HubClient(LocalLink(hub)).register(Silent(), Passport(name="bob"))).passport
        assert ann.agent_id is not None
        assert bob.agent_id is not None
        sessions = [
            await hub.create_session(
                creator_id=ann.agent_id,
                manifest_type="conversation",
                participants=[ann.agent_id, bob.agent_id],
            )
            for _ in range(150)  # more than two batches
        ]
        assert hub.statistics().live_sessions == 150
        await trio.sleep(IDLE + 1)
        stats = hub.statistics()
        assert (stats.live_sessions, stats.passivated_sessions) == (0, 150)
        assert stats.passivations == 150
        assert not hub.core.directory.in_use
        # Each comes back on its own.
        md = sessions[77]
        accepted = await hub.post(
            Envelope(
                session_id=md.session_id,
                sender_id=bob.agent_id,
                event_type=EV_TEXT,
                event_data={"text": "still there?"},
            )
        )
        assert accepted.seq == 4  # invite, ack, opened, this
        assert hub.statistics().live_sessions == 1


async def test_a_reopened_hub_recovers_open_sessions_then_passivates_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_hub(store, ttl_sweep_interval=0, passivate_after=None) as hub:
        hc = HubClient(LocalLink(hub))
        ann = await hc.register(Silent(), Passport(name="ann"))
        await hc.register(Silent(), Passport(name="bob"))
        channels = [await ann.open(type="discussion", target="bob") for _ in range(3)]
        for channel in channels:
            await channel.send("my turn is over")
        await hc.close()
    async with open_hub(store, ttl_sweep_interval=0, passivate_after=IDLE) as hub:
        stats = hub.statistics()
        assert (stats.live_sessions, stats.passivated_sessions) == (0, 3)
        bob = hub.find_agent_id("bob") or ""
        for channel in channels:
            # The state was refolded and published: it is bob's turn, and the hub knows.
            assert hub.can_send(channel.session_id, bob)
            assert not hub.can_send(channel.session_id, ann.agent_id)
        turns = await hub.pending_turns_for(bob)
        assert {t.session_id for t in turns} == {c.session_id for c in channels}
    async with open_hub(store, ttl_sweep_interval=0, passivate_after=None) as hub:
        assert hub.statistics().live_sessions == 3  # without passivation they stay up


@pytest.mark.parametrize("then", ["nothing", "a post"])
async def test_a_cancelled_passivation_never_leaves_the_session_stuck(
    autojump_clock: trio.testing.MockClock, then: str
) -> None:
    """The caller of ``passivate`` is cancelled while the actor saves its snapshot (a hub
    shutting down): the actor finishes the passivation alone, stopped if nothing came
    meanwhile and called off if a post did, and the posts that come later are served."""
    async with open_pair(passivate_after=None) as p, trio.open_nursery() as nursery:
        entry = await p.say("first")
        release = trio.Event()

        async def slow_snapshot() -> None:
            p.store.on_save = None
            await release.wait()

        p.store.on_save = slow_snapshot
        caller = trio.CancelScope()

        async def call() -> None:
            with caller:
                await passivate(p.hub, entry)

        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        caller.cancel()
        await trio.testing.wait_all_tasks_blocked()
        if then == "a post":
            nursery.start_soon(p.hub.post, p.text("meanwhile"))
            await trio.testing.wait_all_tasks_blocked()
        release.set()
        await trio.testing.wait_all_tasks_blocked()

        assert entry.gate is None
        stopped = then == "nothing"
        assert running(entry) is not stopped
        assert p.hub.statistics().passivations == int(stopped)
        with trio.fail_after(1):
            accepted = await p.hub.post(p.text("after"))
        assert accepted.seq == entry.last_seq
        said = ["first", "after"] if stopped else ["first", "meanwhile", "after"]
        assert await p.texts() == said
        assert p.hub.statistics().rehydrations == int(stopped)


async def test_a_session_whose_actor_crashes_as_it_stops_is_restarted_not_stuck(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The actor agreed to passivate, then crashed on its way out: it is restarted as after
    any crash, its gate reopens, and a post waiting at the gate is served by it."""
    async with open_pair(passivate_after=None) as p, trio.open_nursery() as nursery:
        entry = await p.say("first")
        crash_once = [True]
        stop = SessionActor.on_stop

        async def on_stop(self: SessionActor) -> None:
            if crash_once.pop() if crash_once else False:
                nursery.start_soon(p.hub.post, p.text("at the gate"))
                await trio.testing.wait_all_tasks_blocked()
                raise RuntimeError("on_stop broke")
            await stop(self)

        monkeypatch.setattr(SessionActor, "on_stop", on_stop)
        with trio.fail_after(1):
            assert not await passivate(p.hub, entry)
        await trio.testing.wait_all_tasks_blocked()
        assert entry.gate is None
        assert running(entry)
        stats = p.hub.statistics()
        assert (stats.passivations, stats.session_restarts) == (0, 1)
        assert await p.texts() == ["first", "at the gate"]


async def test_passivate_says_false_for_an_actor_given_up_on_as_it_stopped(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_pair(passivate_after=None, session_max_restarts=0) as p:
        entry = await p.say("first")

        async def on_stop(self: SessionActor) -> None:
            await trio.lowlevel.checkpoint()
            raise RuntimeError("on_stop broke")

        monkeypatch.setattr(SessionActor, "on_stop", on_stop)
        with trio.fail_after(1):
            passivated = await passivate(p.hub, entry)
        await trio.testing.wait_all_tasks_blocked()
        assert not running(entry)
        stats = p.hub.statistics()
        assert stats.passivations == 0  # it was not passivated: it was given up on
        assert passivated is False


async def agreed_and_held(
    entry: SessionEntry, monkeypatch: pytest.MonkeyPatch, *, crash: bool
) -> trio.Event:
    """Tell the session's actor to passivate, as the sweeper does, and hold it on its way
    out (in ``on_stop``, its gate marked) until the returned event is set; then it stops,
    or crashes with ``crash``."""
    leave = trio.Event()
    stop = SessionActor.on_stop

    async def on_stop(self: SessionActor) -> None:
        monkeypatch.setattr(SessionActor, "on_stop", stop)
        await leave.wait()
        if crash:
            raise RuntimeError("on_stop broke")
        await stop(self)

    monkeypatch.setattr(SessionActor, "on_stop", on_stop)
    assert entry.ref is not None
    entry.ref.tell_nowait(Passivate())
    await trio.testing.wait_all_tasks_blocked()
    assert entry.gate is not None
    assert entry.gate.passivating is not None
    return leave


async def test_passivate_of_a_session_already_stopping_to_passivate_says_so(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweeper's Passivate was agreed to and the actor is on its way out (``on_stop``)
    when ``passivate`` is called (a cluster drain): it waits for that passivation to end
    and says it was passivated."""
    async with open_pair(passivate_after=None) as p:
        entry = await p.say("first")
        leave = await agreed_and_held(entry, monkeypatch, crash=False)
        async with trio.open_nursery() as nursery:
            answers: list[bool] = []

            async def ask() -> None:
                answers.append(await passivate(p.hub, entry))

            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            leave.set()
        assert p.hub.statistics().passivations == 1
        assert not running(entry)
        assert answers == [True]


async def test_an_eviction_during_a_passivation_whose_actor_crashes_still_stops_it(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster node that lost the session's shard evicts it while its actor is on its way
    out to passivate: if that actor crashes instead and is restarted, the eviction stops it
    (a restart does not check the shard, and the node must not write it any more)."""
    async with open_pair(passivate_after=None) as p, trio.open_nursery() as nursery:
        entry = await p.say("first")
        leave = await agreed_and_held(entry, monkeypatch, crash=True)
        nursery.start_soon(evict, p.hub, entry)
        await trio.testing.wait_all_tasks_blocked()
        leave.set()
        await trio.testing.wait_all_tasks_blocked()
        assert not running(entry)
        assert p.hub._sessions.supervisor is not None
        assert entry.session_id not in p.hub._sessions.supervisor
        assert p.hub.statistics().passivations == 0


async def test_a_closing_hub_reopens_a_gate_whose_passivation_was_never_heard_of(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Should the end of a passivation go unheard (a crash report the session supervisor
    lost as it closed), its closing still lets the callers queued at the gate go."""
    released: list[str] = []
    async with trio.open_nursery() as nursery:
        async with open_pair(passivate_after=None) as p:
            entry = await p.say("first")
            assert await passivate(p.hub, entry)
            gate = entry.gate = Gate()
            gate.passivating = trio.Event()  # marked, and no actor left to end it

            async def queued() -> None:
                assert gate.passivating is not None
                await gate.passivating.wait()
                released.append("let go")

            nursery.start_soon(queued)
            await trio.testing.wait_all_tasks_blocked()
            assert released == []
        await trio.testing.wait_all_tasks_blocked()
        assert released == ["let go"]
        assert entry.gate is None


async def test_a_wave_of_passivations_saves_at_most_a_batch_of_snapshots_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Told, passivations do not wait for each other: a shared limit keeps a wave of them
    from writing every snapshot at once beside the live sessions' appends."""
    store = HookedStore()
    async with open_hub(store, ttl_sweep_interval=0, passivate_after=IDLE) as hub:
        ann = await hub.register(Passport(name="ann"))
        bob = (await HubClient(LocalLink(hub)).register(Silent(), Passport(name="bob"))).passport
        assert ann.agent_id is not None
        assert bob.agent_id is not None
        for _ in range(150):  # more than two batches
            md = await hub.create_session(
                creator_id=ann.agent_id,
                manifest_type="conversation",
                participants=[ann.agent_id, bob.agent_id],
            )
            for i in range(SNAPSHOT_FROM):  # long enough to be snapshotted as it passivates
                await hub.post(
                    Envelope(
                        session_id=md.session_id,
                        sender_id=ann.agent_id,
                        event_type=EV_TEXT,
                        event_data={"text": f"line {i}"},
                    )
                )
        saving = peak = 0

        async def slow_save() -> None:
            nonlocal saving, peak
            saving += 1
            peak = max(peak, saving)
            await trio.sleep(1)
            saving -= 1

        store.on_save = slow_save
        await trio.sleep(IDLE + 10)
        stats = hub.statistics()
        assert (stats.live_sessions, stats.passivations) == (0, 150)
        assert peak == BATCH


async def test_a_post_queued_at_a_passivating_session_as_the_hub_closes_is_told_so(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub closes while a post waits at the gate of a session on its way out: the post
    is refused because the hub is shutting down, not as a session that cannot be started
    from its WAL (which would be logged and audited as a failed recovery)."""
    refused: list[Exception] = []
    async with trio.open_nursery() as nursery:
        async with open_pair(passivate_after=None) as p:
            entry = await p.say("first")
            await agreed_and_held(entry, monkeypatch, crash=False)

            async def post() -> None:
                try:
                    await p.hub.post(p.text("at the gate"))
                except ProtocolError as exc:
                    refused.append(exc)

            nursery.start_soon(post)
            await trio.testing.wait_all_tasks_blocked()
            assert entry.gate is not None
            assert entry.gate.users == 1
        await trio.testing.wait_all_tasks_blocked()
    assert [str(e) for e in refused] == [
        f"the hub is shutting down: session {entry.session_id} is not started again"
    ]


async def test_the_sweeper_wakes_for_a_use_after_a_release_of_a_session_not_in_use() -> None:
    """A session that is not in use (its supervisor gave up on it, or it was passivated)
    may be released again while nothing is in use: the sweeper waiting for the next use
    must still be woken by it."""
    directory = Directory()
    md = metadata("conversation", ["a-1"])
    idle = SessionEntry(metadata=attrs.evolve(md, session_id="s-idle"), stype=None)
    fresh = SessionEntry(metadata=attrs.evolve(md, session_id="s-fresh"), stype=None)
    waiting_on = directory.used  # what the sweeper waits on while nothing is in use
    directory.release(idle)
    directory.touch(fresh, 1.0)
    assert waiting_on.is_set()
