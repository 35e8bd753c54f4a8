"""Authorisation in process: what is stored decides, not what a caller claims (issue 13).

The in-process caller is trusted to be whoever it names, but naming itself does not let it
act on someone else's task, nor on a session it is not a participant of.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe import AccessDeniedError
from troupe.hub import Hub
from troupe.model import TaskMetadata, TaskSpec, TaskState

from ..harness import Agent, HubPair


def task_of(owner: Agent, task_id: str = "t-bob", **kw: object) -> TaskMetadata:
    return TaskMetadata(
        task_id=task_id,
        owner_id=owner.id,
        spec=TaskSpec(title=task_id, capability="sql"),
        **kw,  # type: ignore[arg-type]
    )


# -- item 6: tasks answer to their stored owner -----------------------------------------------


async def test_observe_task_cannot_take_over_a_task_by_naming_oneself(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    bob = await h.agent("bob", connect=False)
    eve = await h.agent("eve", connect=False)
    await hub.observe_task(task_of(bob, state=TaskState.RUNNING))
    forged = task_of(eve, state=TaskState.FAILED, progress={"eve": "was here"})
    with pytest.raises(AccessDeniedError, match="task 't-bob' is not owned by agent 'eve'"):
        await hub.observe_task(forged)
    kept = await hub.get_task("t-bob")
    assert (kept.owner_id, kept.state, kept.progress) == (bob.id, TaskState.RUNNING, {})
    assert (await hub.get_resume(bob.id)).observed == {}
    assert (await hub.get_resume(eve.id)).observed == {}
    # The owner still merges into it.
    await hub.observe_task(task_of(bob, state=TaskState.COMPLETED))
    assert (await hub.get_task("t-bob")).state is TaskState.COMPLETED
    assert (await hub.get_resume(bob.id)).observed["sql"].completed == 1


async def test_a_task_cannot_be_attached_to_a_session_its_owner_is_not_in(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    eve = await h.agent("eve", connect=False)
    md = await h.session("conversation", alice, bob)
    sid = md.session_id
    with pytest.raises(
        AccessDeniedError, match=f"agent 'eve' is not a participant of session {sid}"
    ):
        await hub.observe_task(task_of(eve, "t-eve", session_id=sid))
    assert await hub.list_tasks() == []
    # Nor by a merge into a task first observed without a session.
    await hub.observe_task(task_of(eve, "t-eve"))
    with pytest.raises(AccessDeniedError, match="not a participant"):
        await hub.observe_task(task_of(eve, "t-eve", session_id=sid))
    assert (await hub.get_task("t-eve")).session_id is None
    # A participant attaches its task; the session's close expires it.
    await hub.observe_task(task_of(bob, "t-bob", session_id=sid))
    await hub.close_session(sid)
    assert (await hub.get_task("t-bob")).state is TaskState.EXPIRED
    assert (await hub.get_task("t-eve")).state is TaskState.CREATED


async def test_record_observation_cannot_use_someone_elses_task(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    bob = await h.agent("bob", connect=False)
    eve = await h.agent("eve", connect=False)
    await hub.observe_task(task_of(bob, state=TaskState.RUNNING))
    with pytest.raises(AccessDeniedError, match="task 't-bob' is not owned by agent 'eve'"):
        await hub.record_observation(
            owner_id=eve.id, capability="sql", outcome=TaskState.FAILED, task_id="t-bob"
        )
    # An id bob has not used yet: eve's mark is hers only, bob's own outcome still counts.
    await hub.record_observation(
        owner_id=eve.id, capability="sql", outcome=TaskState.FAILED, task_id="t-later"
    )
    await hub.observe_task(task_of(bob, "t-later", state=TaskState.RUNNING))
    await hub.update_task("t-later", state=TaskState.COMPLETED)
    await hub.update_task("t-bob", state=TaskState.COMPLETED)
    stat = (await hub.get_resume(bob.id)).observed["sql"]
    assert (stat.n, stat.completed, stat.failed) == (2, 2, 0)
    assert (await hub.get_resume(eve.id)).observed["sql"].failed == 1


async def test_turn_failures_and_causation_lookups_need_a_participant(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    eve = await h.agent("eve", connect=False)
    md = await h.session("conversation", alice, bob)
    sid = md.session_id
    audit_before = await hub.read_audit()
    with pytest.raises(
        AccessDeniedError, match=f"agent 'eve' is not a participant of session {sid}"
    ):
        await hub.report_turn_failure(
            session_id=sid, agent_id=eve.id, envelope_id="e", exc=ValueError("x")
        )
    with pytest.raises(AccessDeniedError, match="not a participant"):
        await hub.find_envelope_by_causation(sid, sender_id=eve.id, causation_id="x")
    assert await hub.read_audit() == audit_before
    assert not hub.can_send(sid, eve.id)
    # Participants go on as before.
    await hub.report_turn_failure(
        session_id=sid, agent_id=bob.id, envelope_id="e", exc=ValueError("x")
    )
    assert [r["kind"] for r in await hub.read_audit()][-1] == "turn_failed"
    assert await hub.find_envelope_by_causation(sid, sender_id=bob.id, causation_id="x") is None
