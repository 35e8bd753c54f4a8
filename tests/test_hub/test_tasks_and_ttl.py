"""Tasks the hub observes, and the TTL sweeper that expires sessions and tasks."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

from troupe import AccessDeniedError, NotFoundError, ProtocolError
from troupe.hub import Hub
from troupe.model import (
    EV_SESSION_EXPIRED,
    LimitsBlock,
    Rule,
    SessionState,
    TaskMetadata,
    TaskSpec,
    TaskState,
    iso,
    parse_iso,
)

from ..harness import HubPair, open_hub_pair, text_envelope
from .conftest import Reopen


def task(
    task_id: str,
    owner: str,
    *,
    session_id: str | None = None,
    capability: str | None = None,
    state: TaskState = TaskState.RUNNING,
    **kw: object,
) -> TaskMetadata:
    spec = TaskSpec(title=task_id, capability=capability)
    return TaskMetadata(
        task_id=task_id,
        owner_id=owner,
        spec=spec,
        state=state,
        session_id=session_id,
        **kw,  # type: ignore[arg-type]
    )


async def test_observe_update_get_and_list(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice", connect=False)
    bob = await h.agent("bob", connect=False)
    await hub.observe_task(task("t1", alice.id, progress={"a": 1}))
    await hub.observe_task(task("t2", bob.id, state=TaskState.CREATED))
    t1 = await hub.get_task("t1")
    assert t1.created_at == hub.core.now_iso()
    # A known id is updated in place (no cap check); progress merges.
    started = iso(hub.core.now())
    await hub.observe_task(task("t1", alice.id, progress={"b": 2}, started_at=started))
    t1 = await hub.get_task("t1")
    assert (t1.progress, t1.started_at) == ({"a": 1, "b": 2}, started)
    await trio.sleep(5)
    await hub.update_task("t1", progress={"c": 3}, result={"ok": True})
    t1 = await hub.get_task("t1")
    assert t1.progress == {"a": 1, "b": 2, "c": 3}
    assert t1.last_progress_at == hub.core.now_iso()
    assert t1.result == {"ok": True}
    assert t1.state is TaskState.RUNNING
    assert [t.task_id for t in await hub.list_tasks()] == ["t1", "t2"]
    assert [t.task_id for t in await hub.list_tasks(agent_id=bob.id)] == ["t2"]
    assert [t.task_id for t in await hub.list_tasks(state=TaskState.CREATED)] == ["t2"]
    assert [t.task_id for t in await hub.list_tasks(limit=1)] == ["t1"]
    assert {t.task_id: t for t in await h.store.load_tasks()} == {
        t.task_id: t for t in await hub.list_tasks()
    }
    with pytest.raises(NotFoundError, match="task not found: 'nope'"):
        await hub.get_task("nope")
    with pytest.raises(NotFoundError, match="task not found: 'nope'"):
        await hub.update_task("nope", state=TaskState.FAILED)
    with pytest.raises(NotFoundError, match="agent not registered: 'ghost'"):
        await hub.observe_task(task("t9", "ghost"))
    with pytest.raises(NotFoundError, match="session not found: 'nosuch'"):
        await hub.observe_task(task("t9", alice.id, session_id="nosuch"))
    await hub.checkpoint_task("t1", {"step": 3})
    assert await hub.read_task_checkpoint("t1") == {"step": 3}
    assert await hub.read_task_checkpoint("t2") is None


async def test_terminal_is_final_and_feeds_the_track_record(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice", connect=False)
    start = iso(hub.core.now())
    await hub.observe_task(task("t1", alice.id, capability="sql", started_at=start))
    await trio.sleep(2.5)
    await hub.update_task("t1", state=TaskState.COMPLETED, result=42)
    done = await hub.get_task("t1")
    assert (done.state, done.completed_at, done.result) == (
        TaskState.COMPLETED,
        hub.core.now_iso(),
        42,
    )
    # First terminal wins: later updates and observations are ignored.
    await hub.update_task("t1", state=TaskState.FAILED, error="late", progress={"x": 1})
    await hub.observe_task(task("t1", alice.id, state=TaskState.RUNNING))
    assert await hub.get_task("t1") == done
    stat = (await hub.get_resume(alice.id)).observed["sql"]
    assert (stat.n, stat.completed, stat.p50_latency_ms) == (1, 1, 2500)
    assert hub.agents_with_capability("sql") == [alice.id]
    # A terminal observation of a new task counts too, once.
    await hub.observe_task(task("t2", alice.id, capability="sql"))
    await hub.observe_task(task("t2", alice.id, capability="sql", state=TaskState.FAILED))
    stat = (await hub.get_resume(alice.id)).observed["sql"]
    assert (stat.n, stat.failed) == (2, 1)
    audit = [r for r in await hub.read_audit() if r["kind"] == "task_terminated"]
    assert [(r["task_id"], r["outcome"], r["capability"]) for r in audit] == [
        ("t1", "completed", "sql"),
        ("t2", "failed", "sql"),
    ]


async def test_the_owners_latency_counts_when_the_hub_could_not_measure_it(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    # Issue 17: update_task(COMPLETED) of a task without started_at records the observation
    # by itself, without a latency; the owner's own observation of that task then gives it
    # (it was dropped as a duplicate: p50_latency_ms stayed None). It is not counted twice.
    alice = await h.agent("alice", connect=False)
    await hub.observe_task(task("t1", alice.id, capability="sql"))
    await hub.update_task("t1", state=TaskState.COMPLETED)
    stat = (await hub.get_resume(alice.id)).observed["sql"]
    assert (stat.n, stat.completed, stat.p50_latency_ms) == (1, 1, None)
    await hub.record_observation(
        owner_id=alice.id,
        capability="sql",
        outcome=TaskState.COMPLETED,
        latency_ms=42,
        task_id="t1",
    )
    stat = (await hub.get_resume(alice.id)).observed["sql"]
    assert (stat.n, stat.completed, stat.p50_latency_ms) == (1, 1, 42)
    # Once known, a repeat changes nothing.
    await hub.record_observation(
        owner_id=alice.id, capability="sql", outcome=TaskState.FAILED, latency_ms=7, task_id="t1"
    )
    assert (await hub.get_resume(alice.id)).observed["sql"] == stat
    # A latency the hub measured is not replaced either.
    await hub.observe_task(task("t2", alice.id, capability="sql", started_at=iso(hub.core.now())))
    await trio.sleep(1)
    await hub.update_task("t2", state=TaskState.COMPLETED)
    await hub.record_observation(
        owner_id=alice.id, capability="sql", outcome=TaskState.COMPLETED, latency_ms=5, task_id="t2"
    )
    stat = (await hub.get_resume(alice.id)).observed["sql"]
    assert (stat.n, stat.completed, stat.p50_latency_ms) == (2, 2, 1000)


async def test_max_concurrent_tasks(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent(
        "alice", rule=Rule(limits=LimitsBlock(max_concurrent_tasks=2)), connect=False
    )
    await hub.observe_task(task("t1", alice.id))
    await hub.observe_task(task("t2", alice.id))
    with pytest.raises(
        AccessDeniedError, match="agent 'alice' already runs 2 tasks \\(max_concurrent_tasks 2\\)"
    ):
        await hub.observe_task(task("t3", alice.id))
    with pytest.raises(NotFoundError):
        await hub.get_task("t3")
    await hub.update_task("t1", state=TaskState.CANCELLED)
    await hub.observe_task(task("t3", alice.id))


async def test_closing_a_session_expires_its_open_tasks(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    other = await h.session("conversation", alice, bob)
    await hub.observe_task(task("open", alice.id, session_id=md.session_id, capability="c"))
    await hub.observe_task(task("done", alice.id, session_id=md.session_id))
    await hub.update_task("done", state=TaskState.COMPLETED)
    await hub.observe_task(task("elsewhere", alice.id, session_id=other.session_id))
    await hub.close_session(md.session_id)
    expired = await hub.get_task("open")
    assert (expired.state, expired.error) == (TaskState.EXPIRED, "session_closed")
    assert (await hub.get_task("done")).state is TaskState.COMPLETED
    assert (await hub.get_task("elsewhere")).state is TaskState.RUNNING
    assert (await hub.get_resume(alice.id)).observed["c"].expired == 1
    # Tasks expire once the close is durable (a close the store refuses leaves them be).
    kinds = [
        r["kind"]
        for r in await hub.read_audit()
        if r["kind"] in ("task_terminated", "session_closed")
    ]
    assert kinds == ["task_terminated", "session_closed", "task_terminated"]


async def test_a_refused_close_leaves_the_tasks_running_and_a_restart_finishes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from troupe import StoreError
    from troupe.store import MemoryStore
    from troupe.testing import FaultyStore

    store = FaultyStore(MemoryStore())
    async with open_hub_pair(store) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        await h.hub.observe_task(task("open", alice.id, session_id=md.session_id, capability="c"))
        store.fail_next("append", session_id=md.session_id)
        with pytest.raises(StoreError):
            await h.hub.close_session(md.session_id)
        assert (await h.hub.get_session(md.session_id)).state is SessionState.ACTIVE
        assert (await h.hub.get_task("open")).state is TaskState.RUNNING
        assert "c" not in (await h.hub.get_resume(alice.id)).observed
        # A close that lands, but whose task expiry the store refuses, is finished by the
        # next start of the hub.
        store.fail_next("save_open_task")
        await h.hub.close_session(md.session_id)
        assert (await h.hub.get_task("open")).state is TaskState.RUNNING
    async with open_hub_pair(store) as h:
        assert (await h.hub.get_task("open")).state is TaskState.EXPIRED
        assert (await h.hub.get_resume(alice.id)).observed["c"].expired == 1


async def test_the_sweeper_expires_sessions_and_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(ttl_sweep_interval=5) as h:
        hub = h.hub
        alice, bob = await h.agent("alice"), await h.agent("bob")
        short = await h.session("conversation", alice, bob, ttl=30)
        long = await h.session("conversation", alice, bob, ttl="1h")
        await hub.observe_task(task("in-short", alice.id, session_id=short.session_id))
        await hub.observe_task(task("ttl", bob.id, expires_at=iso(hub.core.now() + 12)))
        await hub.observe_task(task("forever", bob.id))
        await trio.sleep(14.9)
        assert (await hub.get_task("ttl")).state is TaskState.RUNNING
        await trio.sleep(0.2)
        assert (await hub.get_task("ttl")).error == "ttl_expired"
        await trio.sleep(25)
        md = await hub.get_session(short.session_id)
        assert (md.state, md.close_reason) == (SessionState.EXPIRED, "ttl_expired")
        assert (await hub.get_task("in-short")).error == "session_closed"
        assert (await hub.get_session(long.session_id)).state is SessionState.ACTIVE
        assert (await hub.get_task("forever")).state is TaskState.RUNNING
        last = (await hub.read_wal(short.session_id))[-1]
        assert (last.event_type, last.event_data["reason"]) == (EV_SESSION_EXPIRED, "ttl_expired")
        await h.settle()
        assert bob.client is not None
        assert bob.client.notified(bob.id, short.session_id)[-1] == last
        kinds = [r["kind"] for r in await hub.read_audit()]
        assert "session_expired" in kinds


async def test_expire_due_by_hand_and_after_a_restart(
    autojump_clock: trio.testing.MockClock,
    reopen: Reopen,
) -> None:
    async with open_hub_pair(reopen()) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob, ttl=60)
        await h.hub.observe_task(task("t", alice.id, expires_at=iso(h.hub.core.now() + 60)))
    await trio.sleep(61)
    async with open_hub_pair(reopen()) as h:
        # Restored as it was: nothing sweeps with the interval at 0 ...
        assert (await h.hub.get_session(md.session_id)).state is SessionState.ACTIVE
        assert (await h.hub.get_task("t")).state is TaskState.RUNNING
        await h.hub.expire_due()
        assert (await h.hub.get_session(md.session_id)).state is SessionState.EXPIRED
        assert (await h.hub.get_task("t")).state is TaskState.EXPIRED
    async with open_hub_pair(reopen()) as h:
        assert (await h.hub.get_session(md.session_id)).close_reason == "ttl_expired"
        assert (await h.hub.get_task("t")).error == "ttl_expired"
        assert h.hub.statistics().open_sessions == 0


async def test_can_send_probes_the_turn(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob, carol = [await h.agent(n) for n in ("alice", "bob", "carol")]
    md = await h.session("consulting", alice, bob)
    sid = md.session_id
    assert hub.can_send(sid, alice.id)
    assert not hub.can_send(sid, bob.id)
    assert not hub.can_send(sid, carol.id)
    assert not hub.can_send("nope", alice.id)
    # Informational event types are not turn-checked.
    assert hub.can_send(sid, bob.id, event_type="app.note")
    q = await h.say(md, alice, "q")
    assert (hub.can_send(sid, alice.id), hub.can_send(sid, bob.id)) == (False, True)
    await h.say(md, bob, "a", causation_id=q)
    assert not hub.can_send(sid, bob.id)
    assert not hub.can_send(sid, bob.id, event_type="app.note")
    # PENDING sessions take no turns yet.
    dave = await h.agent("dave", invites="ignore")
    with trio.move_on_after(1):
        await h.session("conversation", alice, dave)
    (pending,) = await hub.list_sessions(state=SessionState.PENDING)
    assert not hub.can_send(pending.session_id, alice.id)


async def test_default_view_policy_and_pending_turns(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    from troupe.session_types import FullTranscript, NamedWindowedSummary, WindowedSummary

    alice, bob, carol = [await h.agent(n) for n in ("alice", "bob", "carol")]
    consult = await h.session("consulting", alice, bob)
    talk = await h.session("conversation", alice, bob)
    disc = await h.session("discussion", alice, bob, carol)
    assert hub.default_view_policy(consult.session_id, bob.id) == FullTranscript()
    assert hub.default_view_policy(talk.session_id, bob.id) == WindowedSummary(recent_n=10)
    assert isinstance(hub.default_view_policy(disc.session_id, bob.id), NamedWindowedSummary)
    with pytest.raises(NotFoundError, match="session not found: 'nope'"):
        hub.default_view_policy("nope", bob.id)

    async def turns(agent_id: str) -> list[tuple[str, str | None]]:
        return [
            (t.session_id, t.triggering_envelope_id) for t in await hub.pending_turns_for(agent_id)
        ]

    assert await turns(alice.id) == [(consult.session_id, None), (disc.session_id, None)]
    assert await turns(bob.id) == []
    q = await h.say(consult, alice, "q")
    first = await h.say(disc, alice, "go")
    assert await turns(alice.id) == []
    assert await turns(bob.id) == [(consult.session_id, q), (disc.session_id, first)]
    # One session only (what a turn handler asks on each delivery).
    only = await hub.pending_turns_for(bob.id, session_id=disc.session_id)
    assert [(t.session_id, t.triggering_envelope_id) for t in only] == [(disc.session_id, first)]
    assert await hub.pending_turns_for(carol.id, session_id=disc.session_id) == []
    second = await hub.post_envelope(text_envelope(disc, bob, "next"))
    assert await turns(carol.id) == [(disc.session_id, second)]
    await hub.close_session(disc.session_id)
    assert await turns(carol.id) == []
    assert await turns("ghost") == []


@pytest.mark.parametrize("field", ["expires_at", "started_at"])
async def test_a_task_with_a_malformed_timestamp_is_refused(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair, field: str
) -> None:
    alice = await h.agent("alice", connect=False)
    malformed: dict[str, Any] = {field: "tomorrow"}
    bad = attrs.evolve(task("t1", alice.id, capability="c"), **malformed)
    with pytest.raises(ProtocolError, match=f"task 't1': {field} 'tomorrow' is not"):
        await hub.observe_task(bad)
    await hub.observe_task(task("t2", alice.id, capability="c", started_at=iso(hub.core.now())))
    with pytest.raises(ProtocolError, match=f"task 't2': {field} 'tomorrow' is not"):
        await hub.observe_task(attrs.evolve(task("t2", alice.id), **malformed))
    # Nothing malformed was kept: sweeps and terminal updates work.
    await hub.expire_due()
    await hub.update_task("t2", state=TaskState.COMPLETED)
    assert [t.task_id for t in await hub.list_tasks()] == ["t2"]
    assert (await hub.get_resume(alice.id)).observed["c"].completed == 1


async def test_a_limit_of_zero_lists_nothing(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    await hub.observe_task(
        TaskMetadata(
            task_id="t1", owner_id=alice.id, spec=TaskSpec(title="x"), session_id=md.session_id
        )
    )
    assert len(await hub.list_sessions(limit=1)) == 1
    assert len(await hub.list_tasks(limit=1)) == 1
    assert await hub.list_sessions(limit=0) == []
    assert await hub.list_tasks(limit=0) == []


async def test_list_tasks_by_session(autojump_clock: trio.testing.MockClock, h: HubPair) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    first = await h.session("conversation", alice, bob)
    second = await h.session("conversation", alice, bob)
    await h.hub.observe_task(task("t1", alice.id, session_id=first.session_id))
    await h.hub.observe_task(task("t2", alice.id, session_id=second.session_id))
    await h.hub.observe_task(task("t3", bob.id, session_id=first.session_id))
    await h.hub.observe_task(task("t4", bob.id))
    listed = await h.hub.list_tasks(session_id=first.session_id)
    assert [t.task_id for t in listed] == ["t1", "t3"]
    listed = await h.hub.list_tasks(session_id=first.session_id, agent_id=bob.id)
    assert [t.task_id for t in listed] == ["t3"]
    assert await h.hub.list_tasks(session_id="nosuch") == []


@pytest.mark.parametrize("epoch", [1790056551.3677268, 1790735969.9890685, 1790605944.1656785])
async def test_a_ttl_that_falls_due_on_a_sweep_expires_on_that_sweep(
    autojump_clock: trio.testing.MockClock, epoch: float
) -> None:
    # With these hub-clock epochs ``iso(now + 120)`` rounds up to the next microsecond, so
    # the stamp reads back a fraction of a microsecond after the sweep that is due.
    assert parse_iso(iso(epoch + 120)) > epoch + 120
    async with open_hub_pair(ttl_sweep_interval=10, clock=lambda: epoch + trio.current_time()) as h:
        hub = h.hub
        alice, bob = await h.agent("alice"), await h.agent("bob")
        assert trio.current_time() == 0
        md = await h.session("conversation", alice, bob, ttl=120)
        await hub.observe_task(task("t", bob.id, expires_at=iso(hub.core.now() + 110)))
        await trio.sleep(110)
        await h.settle()
        assert (await hub.get_task("t")).error == "ttl_expired"
        await trio.sleep(10)
        await h.settle()
        assert (await hub.get_session(md.session_id)).state is SessionState.EXPIRED
