"""Recovery: a hub reopened on its store, snapshots, and store failures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from troupe import ProtocolError, StoreError
from troupe.hub import Hub
from troupe.model import (
    EV_SESSION_CLOSED,
    EV_SESSION_OPENED,
    EV_TEXT,
    Envelope,
    Passport,
    Resume,
    Rule,
    SessionMetadata,
    SessionState,
    TaskMetadata,
    TaskSpec,
    TaskState,
    is_substantive,
)
from troupe.session_types import ConversationState, ConversationType
from troupe.session_types import get as session_type
from troupe.store import MemoryStore
from troupe.testing import FaultyStore

from ..harness import HubPair, open_hub_pair, text_envelope
from .conftest import Reopen


def refold(kind: str, md: Any, wal: list[Envelope], until: int | None = None) -> Any:
    """The state a session type reaches from scratch over ``wal`` (up to ``until``)."""
    stype = session_type(kind)
    state = stype.initial_state(md)
    for env in wal:
        if until is not None and env.seq > until:
            break
        if is_substantive(env.event_type):
            state = stype.fold(env, state)
    return state


async def snapshot_of(h: HubPair) -> dict[str, Any]:
    """Everything a restart must rebuild, as the hub shows it."""
    hub = h.hub
    agents = await hub.list_agents(limit=1000)
    sessions = await hub.list_sessions(include_terminal=True, limit=1000)
    return {
        "agents": agents,
        "resumes": [await hub.get_resume(p.agent_id or "") for p in agents],
        "rules": [await hub.get_rule(p.agent_id or "") for p in agents],
        "skills": [await hub.get_skill(p.agent_id or "") for p in agents],
        "capabilities": hub.agents_with_capability("sql"),
        "sessions": sessions,
        "states": {
            md.session_id: hub.session_state(md.session_id)
            for md in sessions
            if not md.state.terminal
        },
        "wals": {md.session_id: await hub.read_wal(md.session_id) for md in sessions},
        "tasks": await hub.list_tasks(limit=1000),
        "turns": [await hub.pending_turns_for(p.agent_id or "") for p in agents],
    }


async def test_a_reopened_hub_rebuilds_everything_and_seq_continues(
    autojump_clock: trio.testing.MockClock, reopen: Reopen
) -> None:
    async with open_hub_pair(reopen(), invite_ack_timeout=5) as h:
        hub = h.hub
        alice = await h.agent("alice", resume=Resume(claimed_capabilities=["sql"]))
        bob, carol = await h.agent("bob"), await h.agent("carol")
        dave = await h.agent("dave", invites="ignore")
        await hub.set_rule(bob.id, Rule())
        await hub.set_skill(carol.id, "# carol")
        talk = await h.session("conversation", alice, bob)
        for n in range(5):
            await h.say(talk, alice if n % 2 else bob, f"t{n}")
        consult = await h.session("consulting", alice, carol)
        question = await h.say(consult, alice, "q?")
        disc = await h.session("discussion", alice, bob, carol)
        await h.say(disc, alice, "first")
        await h.say(disc, bob, "second")
        done = await h.session("conversation", bob, carol)
        await hub.close_session(done.session_id, reason="finished")
        with trio.move_on_after(1):  # stays PENDING: dave never acks
            await h.session("conversation", carol, dave)
        await hub.observe_task(
            TaskMetadata(
                task_id="t1",
                owner_id=carol.id,
                spec=TaskSpec(title="answer", capability="sql"),
                state=TaskState.RUNNING,
                session_id=consult.session_id,
            )
        )
        await hub.observe_task(
            TaskMetadata(task_id="t2", owner_id=bob.id, spec=TaskSpec(title="x"))
        )
        await hub.update_task("t2", state=TaskState.COMPLETED)
        await h.settle()
        before = await snapshot_of(h)
        cursors = await h.store.load_cursors(bob.id)
    assert cursors
    async with open_hub_pair(reopen(), invite_ack_timeout=5) as h:
        assert await snapshot_of(h) == before
        assert await h.store.load_cursors(bob.id) == cursors
        # The states are those a full refold of each WAL gives.
        for sid, state in before["states"].items():
            md = await h.hub.get_session(sid)
            assert state == refold(md.manifest_type, md, before["wals"][sid])
        # Sessions carry on where they stopped, without a gap.
        alice, bob, carol = [await h.agent(n) for n in ("alice", "bob", "carol")]
        for md, speaker in ((talk, alice), (disc, carol)):
            last = before["wals"][md.session_id][-1].seq
            accepted = await h.hub.post(text_envelope(md, speaker, "after"))
            assert accepted.seq == last + 1
        await h.say(consult, carol, "a!", causation_id=question)
        closed = await h.hub.get_session(consult.session_id)
        assert closed.close_reason == "consulting_complete"
        assert (await h.hub.get_task("t1")).error == "session_closed"
        wal = await h.hub.read_wal(consult.session_id)
        assert [e.seq for e in wal] == list(range(1, len(wal) + 1))
        assert wal[-1].event_type == EV_SESSION_CLOSED
        # The PENDING session is still PENDING (its deadline is for the sweeper).
        (pending,) = await h.hub.list_sessions(state=SessionState.PENDING)
        assert pending.pending_acks == (h.hub.find_agent_id("dave"),)


async def test_snapshots_every_n_and_recovery_from_one_equals_a_full_refold(
    autojump_clock: trio.testing.MockClock, reopen: Reopen, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_hub_pair(reopen(), snapshot_every=5) as h:
        alice, bob, carol = [await h.agent(n) for n in ("alice", "bob", "carol")]
        md = await h.session("discussion", alice, bob, carol)
        sid = md.session_id
        speakers = [alice, bob, carol] * 8
        for n, speaker in enumerate(speakers[:-1]):
            await h.say(md, speaker, f"turn {n}")
        wal = await h.hub.read_wal(sid)
        snap = await h.store.load_snapshot(sid)
        assert snap is not None
        # The latest snapshot is at most five envelopes behind, and is the state at its seq.
        assert 0 < wal[-1].seq - snap.seq < 5
        stype = session_type("discussion")
        assert stype.load_state(snap.state) == refold("discussion", md, wal, until=snap.seq)
        live = h.hub.session_state(sid)
        assert live == refold("discussion", md, wal)
    store = reopen()
    reads: list[tuple[str, int]] = []
    real_read = store.read

    async def read(session_id: str, since: int = 0, until: int | None = None) -> list[Envelope]:
        reads.append((session_id, since))
        return await real_read(session_id, since, until)

    monkeypatch.setattr(store, "read", read)
    async with open_hub_pair(store, snapshot_every=5) as h:
        assert h.hub.session_state(sid) == live
        # Recovery read the WAL after the snapshot, not from the start.
        assert reads[0] == (sid, snap.seq)
        assert all(since > 0 for s, since in reads if s == sid)
        alice, bob, carol = [await h.agent(n) for n in ("alice", "bob", "carol")]
        await h.say(md, carol, "last turn")
        assert h.hub.session_state(sid) == refold("discussion", md, await h.hub.read_wal(sid))


async def test_snapshots_off(autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    for _ in range(30):
        await h.say(md, alice)
    assert await h.store.load_snapshot(md.session_id) is None  # default: every 1000


Breaker = Callable[..., Awaitable[None]]


async def test_a_store_failure_in_the_hub_actor_is_the_callers_error(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_hub_pair() as h:
        hub = h.hub
        alice = await h.agent("alice", connect=False)

        async def broken(*args: object, **kwargs: object) -> None:
            await trio.lowlevel.checkpoint()
            raise StoreError("disk full")

        for method, call in (
            ("save_agent", lambda: hub.register(Passport(name="bob"))),
            ("save_resume", lambda: hub.set_resume(alice.id, Resume(summary="new"))),
            ("save_rule", lambda: hub.set_rule(alice.id, Rule())),
            (
                "save_open_task",
                lambda: hub.observe_task(
                    TaskMetadata(task_id="t", owner_id=alice.id, spec=TaskSpec(title="t"))
                ),
            ),
        ):
            with monkeypatch.context() as patch:
                patch.setattr(h.store, method, broken)
                with pytest.raises(StoreError, match="disk full"):
                    await call()
        # Nothing was applied, and the hub actor never restarted.
        assert hub.find_agent_id("bob") is None
        assert (await hub.get_resume(alice.id)).summary == ""
        assert (await hub.get_rule(alice.id)).version == 1
        assert await hub.list_tasks() == []
        assert hub.core.hub_ref is not None
        await hub.register(Passport(name="bob"))


async def test_a_store_failure_on_append_refuses_the_post(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    wal = await hub.read_wal(md.session_id)

    async def broken(*args: object, **kwargs: object) -> None:
        await trio.lowlevel.checkpoint()
        raise StoreError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(h.store, "append", broken)
        with pytest.raises(StoreError, match="disk full"):
            await h.say(md, alice, "lost?")
    assert await hub.read_wal(md.session_id) == wal
    assert hub.statistics().session_restarts == 0
    accepted = await hub.post(text_envelope(md, alice, "retry"))
    assert accepted.seq == wal[-1].seq + 1


class Chat(ConversationType):
    name = "chat"


class BuggyChat(Chat):
    """The same type after a bad upgrade: its fold breaks on a text already in a WAL."""

    def fold_turn(self, envelope: Envelope, state: ConversationState) -> ConversationState:
        if envelope.text == "boom":
            raise RuntimeError("fold bug")
        return super().fold_turn(envelope, state)


async def test_a_session_that_cannot_be_recovered_does_not_stop_the_hub(
    autojump_clock: trio.testing.MockClock, reopen: Reopen
) -> None:
    async with open_hub_pair(reopen(), session_types=[Chat()]) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        bad = await h.session("chat", alice, bob)
        good = await h.session("conversation", alice, bob)
        await h.say(bad, alice, "boom")
    async with open_hub_pair(reopen(), session_types=[BuggyChat()]) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        await h.say(good, alice, "fine")
        with pytest.raises(ProtocolError, match="could not be started from its WAL") as info:
            await h.say(bad, bob, "hello?")
        assert bad.session_id in str(info.value)
        assert isinstance(info.value.__cause__, RuntimeError)
        failures = [r for r in await h.hub.read_audit() if r["kind"] == "session_recovery_failed"]
        assert {r["session_id"] for r in failures} == {bad.session_id}
        assert (await h.hub.get_session(bad.session_id)).state is SessionState.ACTIVE
    # Once the type is fixed, the session comes back as it was.
    async with open_hub_pair(reopen(), session_types=[Chat()]) as h:
        bob = await h.agent("bob")
        await h.say(bad, bob, "back")
        state = h.hub.session_state(bad.session_id)
        assert isinstance(state, ConversationState)
        assert state.turn_count == 2


class SlowReplyStore(MemoryStore):
    """Commits an append, then is slow to say so (a commit whose reply is late)."""

    slow = False

    async def append(
        self,
        session_id: str,
        envelopes: Sequence[Envelope],
        *,
        metadata: SessionMetadata | None = None,
    ) -> None:
        await super().append(session_id, envelopes, metadata=metadata)
        if self.slow:
            await trio.sleep(1)


async def test_a_start_cancelled_by_its_caller_does_not_repeat_a_notice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A session left where a process kill leaves it: every ack in, no OPENED notice yet.
    first = MemoryStore()
    async with open_hub_pair(first) as h:
        al, bo = await h.agent("al"), await h.agent("bo")
        md = await h.session("conversation", al, bo)
    store = SlowReplyStore()
    async with first, store:
        for record in await first.load_agents():
            await store.save_agent(record)
        wal = await first.read(md.session_id)
        assert wal[-1].event_type == EV_SESSION_OPENED
        pending = attrs.evolve(md, state=SessionState.PENDING, pending_acks=())
        await store.append(md.session_id, wal[:-1], metadata=pending)
    faulty = FaultyStore(store)
    faulty.fail_next("load_snapshot", 1, session_id=md.session_id)  # not started with the hub
    async with open_hub_pair(faulty) as h:
        post = text_envelope(md.session_id, al, "hi")
        store.slow = True
        with trio.move_on_after(0.5):  # a poster with a deadline starts the session: its
            await h.hub.post_envelope(post)  # recovery appends OPENED, then is cancelled
        store.slow = False
        await h.hub.post_envelope(post)  # the next start goes on from the store
        kinds = [e.event_type for e in await h.hub.read_wal(md.session_id)]
        assert kinds.count(EV_SESSION_OPENED) == 1
        assert kinds[-1] == EV_TEXT
