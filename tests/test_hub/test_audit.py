"""The audit log: a record for every registry, session, task and crash event."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

from troupe import ActorDead, Passport, ProtocolError, StoreError
from troupe.hub import Hub, open_hub
from troupe.model import Resume, Rule, TaskMetadata, TaskSpec, TaskState, parse_iso
from troupe.store import MemoryStore
from troupe.testing import FaultyStore

from ..harness import HubPair, open_hub_pair


async def of_kind(hub: Hub, *kinds: str) -> list[dict[str, Any]]:
    """The audit records of these kinds, oldest first, without their time stamps."""
    records = await hub.read_audit()
    return [{k: v for k, v in r.items() if k != "at"} for r in records if r["kind"] in kinds]


async def test_read_audit_tells_what_happened_in_order(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    await hub.set_resume(alice.id, Resume(summary="x"))
    await hub.set_rule(alice.id, Rule())
    await hub.set_skill(alice.id, "s")
    md = await h.session("conversation", alice, bob)
    await hub.observe_task(
        TaskMetadata(task_id="t", owner_id=alice.id, spec=TaskSpec(title="t", capability="c"))
    )
    await hub.update_task("t", state=TaskState.FAILED)
    h.faults.crash_at("before_append", session_id=md.session_id, times=2)
    with pytest.raises(ProtocolError, match="poison"):
        await h.say(md, alice)
    await hub.close_session(md.session_id)
    await hub.unregister(bob.id)
    records = await hub.read_audit()
    assert [r["kind"] for r in records] == [
        "agent_registered",
        "agent_registered",
        "resume_set",
        "rule_set",
        "skill_set",
        "session_created",
        "invite_acked",
        "session_opened",
        "task_observed",
        "task_state_changed",
        "task_terminated",
        "resume_set",
        "session_actor_crashed",
        "session_actor_restarted",
        "session_actor_crashed",
        "poison_envelope",
        "session_actor_restarted",
        "session_closed",
        "agent_unregistered",
    ]
    assert [r.get("source") for r in records if r["kind"] == "resume_set"] == [
        "tenant",
        "observed",
    ]
    stamps = [parse_iso(r["at"]) for r in records]
    assert stamps == sorted(stamps)
    assert stamps[-1] == hub.core.now()
    assert await hub.read_audit(since=10) == records[10:]
    assert await hub.read_audit(since=2, limit=3) == records[2:5]
    assert await h.store.read_audit() == records


async def test_a_store_refusing_audit_writes_for_a_while_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A store that refuses a dozen audit writes in a row (a full disk for a few seconds)
    # used to crash the audit writer each time, until the hub's restart allowance ran out.
    store = FaultyStore(MemoryStore())
    async with open_hub(store, ttl_sweep_interval=0, passivate_after=None) as hub:
        store.fail_next("append_audit", 12)
        for n in range(12):
            await hub.register(Passport(name=f"a{n}"))
            await trio.sleep(0.1)
        store.fail_next("read_audit")
        with pytest.raises(StoreError):
            await hub.read_audit()
        await trio.sleep(30)  # the writer's backoff runs out and it writes everything
        names = [r["name"] for r in await hub.read_audit() if r["kind"] == "agent_registered"]
        assert names == [f"a{n}" for n in range(12)]
        assert store.statistics().failed["append_audit"] == 12


async def test_a_session_actor_crash_that_is_restarted_is_audited(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    # Only statistics().session_restarts used to tell of it.
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    sid = md.session_id
    h.faults.crash_at("after_fold", session_id=sid)
    await h.say(md, alice)  # accepted: the crash came after the append
    assert hub.statistics().session_restarts == 1
    assert await of_kind(hub, "session_actor_crashed", "session_crashed") == [
        {
            "kind": "session_actor_crashed",
            "session_id": sid,
            "exc_type": "InjectedCrash",
            "exc_message": f"injected crash at after_fold in session {sid}",
            "restarting": True,
        }
    ]


async def test_a_session_given_up_on_audits_each_crash_then_its_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(session_max_restarts=1) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        sid = md.session_id
        h.faults.crash_at("before_append", session_id=sid, times=2)
        with pytest.raises(ProtocolError, match="poison"):
            await h.say(md, alice)  # crash 1: restarted; crash 2: given up on
        await h.settle()
        records = await of_kind(h.hub, "session_actor_crashed", "session_crashed", "session_closed")
    assert [(r["kind"], r.get("restarting"), r.get("reason")) for r in records] == [
        ("session_actor_crashed", True, None),
        ("session_actor_crashed", False, None),
        ("session_crashed", None, None),
        ("session_closed", None, "crashed"),
    ]
    assert {r["session_id"] for r in records} == {sid}


async def test_a_crash_of_the_hub_actor_is_audited(autojump_clock: trio.testing.MockClock) -> None:
    store = FaultyStore(MemoryStore())
    async with open_hub(store, ttl_sweep_interval=0, passivate_after=None) as hub:
        alice = await hub.register(Passport(name="alice"))
        assert alice.agent_id is not None
        store.fail_next("save_skill", error=RuntimeError("a bug in the store"))
        with pytest.raises(ActorDead):
            await hub.set_skill(alice.agent_id, "s")
        await hub.set_skill(alice.agent_id, "s")  # the hub actor was restarted
        records = await of_kind(hub, "hub_child_crashed", "skill_set")
    assert records == [
        {
            "kind": "hub_child_crashed",
            "child": "hub",
            "exc_type": "RuntimeError",
            "exc_message": "a bug in the store",
            "restarting": True,
        },
        {"kind": "skill_set", "agent_id": alice.agent_id, "removed": False},
    ]


async def test_a_tasks_life_is_audited_in_order_but_not_its_progress(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    # Only its end (task_terminated) used to be audited.
    alice = await h.agent("alice")
    task = TaskMetadata(task_id="t", owner_id=alice.id, spec=TaskSpec(title="t"))
    await hub.observe_task(task)
    await hub.update_task("t", state=TaskState.RUNNING)
    for done in range(5):  # progress alone would flood the log
        await hub.update_task("t", progress={"done": done})
    await hub.observe_task(attrs.evolve(task, state=TaskState.RUNNING, progress={"done": 5}))
    await hub.update_task("t", state=TaskState.COMPLETED, result="ok")
    await hub.update_task("t", state=TaskState.FAILED)  # terminal is final: nothing changes
    task_kinds = ("task_observed", "task_state_changed", "task_terminated")
    assert await of_kind(hub, *task_kinds) == [
        {
            "kind": "task_observed",
            "task_id": "t",
            "owner_id": alice.id,
            "session_id": None,
            "state": "created",
            "capability": None,
        },
        {
            "kind": "task_state_changed",
            "task_id": "t",
            "owner_id": alice.id,
            "from": "created",
            "to": "running",
        },
        {
            "kind": "task_state_changed",
            "task_id": "t",
            "owner_id": alice.id,
            "from": "running",
            "to": "completed",
        },
        {
            "kind": "task_terminated",
            "task_id": "t",
            "owner_id": alice.id,
            "session_id": None,
            "outcome": "completed",
            "capability": None,
            "reason": None,
        },
    ]


async def test_progress_only_updates_are_not_audited(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice")
    task = TaskMetadata(task_id="t", owner_id=alice.id, spec=TaskSpec(title="t"))
    await hub.observe_task(task)
    before = len(await hub.read_audit())
    for done in range(5):
        await hub.update_task("t", progress={"done": done})
        await hub.observe_task(attrs.evolve(task, progress={"seen": done}))
    assert (await hub.get_task("t")).progress == {"done": 4, "seen": 4}
    assert len(await hub.read_audit()) == before
    assert [r["kind"] for r in await of_kind(hub, "task_observed", "task_state_changed")] == [
        "task_observed"
    ]


async def test_each_invitee_answer_is_audited(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    # Only the session's outcome (opened, or closed with invite_rejected) used to be.
    alice, bob = await h.agent("alice"), await h.agent("bob")
    carol = await h.agent("carol", invites="reject")
    md = await h.session("conversation", alice, bob)
    with pytest.raises(ProtocolError, match="reject"):
        await hub.create_session(
            creator_id=alice.id, manifest_type="conversation", participants=[carol.id]
        )
    [refused] = await hub.list_sessions(agent_id=carol.id, include_terminal=True)
    kinds = ("invite_acked", "invite_rejected", "session_opened", "session_closed")
    assert await of_kind(hub, *kinds) == [
        {"kind": "invite_acked", "session_id": md.session_id, "agent_id": bob.id},
        {"kind": "session_opened", "session_id": md.session_id},
        {"kind": "invite_rejected", "session_id": refused.session_id, "agent_id": carol.id},
        {"kind": "session_closed", "session_id": refused.session_id, "reason": "invite_rejected"},
    ]
