"""The change feed, single-record reads and conditional task updates, on every engine.

What a cluster's nodes read to learn each other's registry and tasks (issue 16): every
agent or task write takes the next value of one counter, a deleted agent leaves a
tombstone, and a terminal task never changes again.
"""

from __future__ import annotations

import attrs
import pytest

import troupe
from troupe.model import Resume, Rule, TaskState
from troupe.store import Changes, Store

from .conftest import Reopen
from .factories import agent, task


async def test_one_agent_reads_by_id_and_by_name(store: Store) -> None:
    await store.save_agent(agent("a1", "review"))
    assert await store.get_agent("a1") == agent("a1", "review")
    assert await store.get_agent_named("name-a1") == agent("a1", "review")
    assert await store.get_agent("a2") is None
    assert await store.get_agent_named("name-a2") is None
    await store.delete_agent("a1")
    assert await store.get_agent("a1") is None
    assert await store.get_agent_named("name-a1") is None


async def test_a_taken_name_is_name_taken_naming_the_holder(store: Store) -> None:
    await store.save_agent(agent("a1"))
    clash = attrs.evolve(agent("a2"), passport=attrs.evolve(agent("a2").passport, name="name-a1"))
    with pytest.raises(troupe.NameTaken, match="'name-a1' is already held by agent 'a1'") as taken:
        await store.save_agent(clash)
    assert (taken.value.name, taken.value.holder) == ("name-a1", "a1")
    assert await store.get_agent("a2") is None
    changes = await store.changes(0)
    assert [r.passport.agent_id for r in changes.agents] == ["a1"]


async def test_the_feed_brings_each_write_after_since_once_in_change_order(store: Store) -> None:
    start = await store.last_change()
    assert await store.changes(start) == Changes(version=start)
    await store.save_agent(agent("a1"))
    await store.save_agent(agent("a2"))
    mark = await store.last_change()
    assert mark == start + 2
    await store.save_resume("a1", Resume(summary="changed"))
    await store.save_task(task("t1"))
    changes = await store.changes(mark)
    assert changes.version == mark + 2
    assert [r.passport.agent_id for r in changes.agents] == ["a1"]
    assert changes.agents[0].resume == Resume(summary="changed")
    assert changes.tasks == (task("t1"),)
    assert changes.removed == ()
    # From the start: each record once, at its latest change (a1 moved after a2).
    everything = await store.changes(start)
    assert [r.passport.agent_id for r in everything.agents] == ["a2", "a1"]
    assert await store.changes(changes.version) == Changes(version=changes.version)


async def test_rule_and_skill_changes_are_in_the_feed(store: Store) -> None:
    await store.save_agent(agent("a1"))
    mark = await store.last_change()
    await store.save_rule("a1", Rule(version=2))
    assert [r.rule for r in (await store.changes(mark)).agents] == [Rule(version=2)]
    mark = await store.last_change()
    await store.save_skill("a1", "# skill")
    assert [r.skill_md for r in (await store.changes(mark)).agents] == ["# skill"]


async def test_a_change_refused_takes_no_place_in_the_feed(store: Store) -> None:
    mark = await store.last_change()
    with pytest.raises(troupe.StoreError, match="unknown agent 'ghost'"):
        await store.save_resume("ghost", Resume())
    await store.delete_agent("ghost")  # deleting nobody leaves no tombstone
    changes = await store.changes(mark)
    assert (changes.agents, changes.removed) == ((), ())


async def test_a_deleted_agent_leaves_a_tombstone_and_its_name_may_be_taken_again(
    store: Store,
) -> None:
    await store.save_agent(agent("a1"))
    mark = await store.last_change()
    await store.delete_agent("a1")
    changes = await store.changes(mark)
    assert (changes.agents, changes.removed) == ((), ("a1",))
    again = attrs.evolve(agent("a2"), passport=attrs.evolve(agent("a2").passport, name="name-a1"))
    await store.save_agent(again)
    changes = await store.changes(mark)
    assert changes.removed == ("a1",)
    assert changes.agents == (again,)
    # Saved again under its old id (another name): no longer removed.
    back = attrs.evolve(agent("a1"), passport=attrs.evolve(agent("a1").passport, name="back"))
    await store.save_agent(back)
    assert (await store.changes(mark)).removed == ()


async def test_the_first_terminal_update_wins(store: Store) -> None:
    assert await store.save_open_task(task("t1")) is None
    running = task("t1", state=TaskState.RUNNING)
    assert await store.save_open_task(running) is None
    assert await store.get_task("t1") == running
    done = task("t1", state=TaskState.COMPLETED, result={"ok": 1})
    assert await store.save_open_task(done) is None
    mark = await store.last_change()
    failed = task("t1", state=TaskState.FAILED, error="late")
    assert await store.save_open_task(failed) == done
    assert await store.save_open_task(running) == done
    assert await store.get_task("t1") == done
    assert await store.load_tasks() == [done]
    assert (await store.changes(mark)).tasks == ()
    # The unconditional save still replaces it (what the store gives a repair tool).
    await store.save_task(failed)
    assert await store.get_task("t1") == failed
    assert await store.save_open_task(done) == failed
    assert await store.get_task("t2") is None


async def test_the_feed_and_terminal_tasks_survive_a_restart(reopen: Reopen) -> None:
    async with reopen() as store:
        await store.save_agent(agent("a1"))
        await store.save_task(task("t1", state=TaskState.EXPIRED))
        mark = await store.last_change()
    async with reopen() as store:
        assert await store.last_change() == mark
        assert await store.save_open_task(task("t1")) == task("t1", state=TaskState.EXPIRED)
        await store.delete_agent("a1")
        assert (await store.changes(mark)).removed == ("a1",)
