"""The registry and the tasks across a cluster's nodes (one trio run, MockClock).

A node learns what another registered, changed or unregistered at once on a miss (it reads
the shared store before saying "not found") and, for its lists, from the store's change
feed within a tick; names are unique by the store's constraint, and of two nodes ending one
task the first terminal update wins.
"""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace
from typing import cast

import pytest
import trio
import trio.testing

from troupe import (
    AccessDeniedError,
    HubClient,
    LocalLink,
    NotFoundError,
    Passport,
    ProtocolError,
    Resume,
    Rule,
)
from troupe.api import GetTask
from troupe.hub._connection import Caller
from troupe.model import TaskMetadata, TaskSpec, TaskState

from ._nodes import TICK_S, Silent, eventually
from .test_nodes import hub_of, two_nodes

#: The feed is read every tick: a change is applied by the next read after it commits
#: (plus ``eventually``'s step, by which the test looks).
WITHIN_A_TICK = TICK_S + 0.1


def bound_to(*agent_ids: str) -> Caller:
    """A connection with these identities bound, as ``Hub.call`` checks one (it reads only
    its ``agents`` for these requests)."""
    return cast(Caller, SimpleNamespace(agents=set(agent_ids)))


def names(passports: list[Passport]) -> set[str]:
    return {p.name for p in passports}


async def test_an_agent_registered_on_one_node_is_usable_on_another_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (world, _cluster, a, b):
        zed = await hub_of(a).register(Passport(name="zed"), Resume(summary="zed's"))
        assert zed.agent_id is not None
        hb = hub_of(b)
        start = trio.current_time()
        # By name and by id, before any tick: read through on the miss.
        assert await hb.get_agent("zed") == zed
        assert await hb.find_agent("zed") == zed.agent_id
        assert (await hb.get_resume(zed.agent_id)).summary == "zed's"
        # zed attached (bound) on b by name, and a session opened on b with zed.
        async with HubClient(LocalLink(hb)) as client:
            attached = await client.attach(Silent(), "zed")
            assert attached.agent_id == zed.agent_id
            assert hb.core.bindings.get(zed.agent_id) is not None
            assert trio.current_time() == start  # no tick was waited for
            md = await hb.create_session(
                creator_id=world.ann, manifest_type="broadcast", participants=[zed.agent_id]
            )
            assert zed.agent_id in md.participant_ids()
        # A name nobody has is still not found (after asking the store).
        with pytest.raises(NotFoundError, match="agent not found: 'nobody'"):
            await hb.get_agent("nobody")
        assert await hb.find_agent("nobody") is None


async def test_lists_learn_changes_from_the_feed_within_a_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (_world, _cluster, a, b):
        ha, hb = hub_of(a), hub_of(b)
        zed = await ha.register(Passport(name="zed"))
        assert zed.agent_id is not None
        assert "zed" not in names(await hb.list_agents())  # nothing read it through
        await eventually(lambda: hb.find_agent_id("zed") is not None, WITHIN_A_TICK)
        assert "zed" in names(await hb.list_agents())
        # A change of resume, rule or skill on a reaches b's lists too.
        await ha.set_resume(zed.agent_id, Resume(claimed_capabilities=["sing"]))
        await ha.set_skill(zed.agent_id, "# zed")
        await eventually(lambda: hb.agents_with_capability("sing") == [zed.agent_id], WITHIN_A_TICK)
        assert await hb.get_skill(zed.agent_id) == "# zed"
        assert names(await hb.list_agents(capability="sing")) == {"zed"}


async def test_a_change_on_one_node_builds_on_a_change_made_on_another_just_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (_world, _cluster, a, b):
        ha, hb = hub_of(a), hub_of(b)
        zed = await ha.register(Passport(name="zed"))
        assert zed.agent_id is not None
        assert (await hb.get_resume(zed.agent_id)).version == 1  # b knows zed now
        start = trio.current_time()
        await ha.set_resume(zed.agent_id, Resume(summary="from a"))
        await ha.set_skill(zed.agent_id, "# from a")
        await hb.set_rule(zed.agent_id, Rule())
        await hb.set_resume(zed.agent_id, Resume(summary="from b"))
        assert trio.current_time() == start  # no sync came between
        # b changed the record a left, not the one b knew before.
        resume = await hb.get_resume(zed.agent_id)
        assert (resume.summary, resume.version) == ("from b", 3)
        assert await hb.get_skill(zed.agent_id) == "# from a"
        assert (await hb.get_rule(zed.agent_id)).version == 2
        # And a learns b's changes from the feed.
        await eventually(
            lambda: ha.core.registry.record(str(zed.agent_id)).resume.version == 3,
            WITHIN_A_TICK,
        )
        assert ha.core.registry.record(zed.agent_id) == hb.core.registry.record(zed.agent_id)


async def test_an_agent_unregistered_on_one_node_is_forgotten_on_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (_world, _cluster, a, b):
        ha, hb = hub_of(a), hub_of(b)
        zed = await ha.register(Passport(name="zed"))
        assert zed.agent_id is not None
        async with HubClient(LocalLink(hb)) as client:
            await client.attach(Silent(), "zed")  # bound on b
            await ha.unregister(zed.agent_id)
            await eventually(lambda: hb.find_agent_id("zed") is None, WITHIN_A_TICK)
            with pytest.raises(NotFoundError):
                await hb.get_agent(zed.agent_id)
            assert "zed" not in names(await hb.list_agents())
            # b dropped its binding, as the node that unregisters drops its own.
            await eventually(lambda: zed.agent_id not in hb.core.bindings, WITHIN_A_TICK)
        # The name is free again, on either node; the other learns the new holder.
        again = await hb.register(Passport(name="zed"))
        assert await ha.find_agent("zed") == again.agent_id != zed.agent_id


async def test_a_name_unregistered_elsewhere_may_be_taken_before_the_feed_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (_world, _cluster, a, b):
        ha, hb = hub_of(a), hub_of(b)
        zed = await ha.register(Passport(name="zed"))
        assert zed.agent_id is not None
        await eventually(lambda: hb.find_agent_id("zed") == zed.agent_id, WITHIN_A_TICK)
        start = trio.current_time()
        await ha.unregister(zed.agent_id)
        # b still holds the old zed, but its register asks the store, which knows better.
        again = await hb.register(Passport(name="zed"))
        assert trio.current_time() == start
        assert hb.find_agent_id("zed") == again.agent_id != zed.agent_id
        with pytest.raises(NotFoundError):
            await hb.get_resume(zed.agent_id)


async def test_a_new_holder_read_through_displaces_the_old_one_it_replaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (_world, _cluster, a, b):
        ha, hb = hub_of(a), hub_of(b)
        old = await ha.register(Passport(name="zed"))
        assert old.agent_id is not None
        assert await hb.find_agent("zed") == old.agent_id  # b knows the old zed
        start = trio.current_time()
        await ha.unregister(old.agent_id)
        new = await ha.register(Passport(name="zed"))
        assert new.agent_id is not None
        # b reads the new zed through (by id): the store holds names unique, so the zed b
        # knew was unregistered, and b forgets it, before any sync.
        assert await hb.get_agent(new.agent_id) == new
        assert trio.current_time() == start
        assert hb.find_agent_id("zed") == new.agent_id
        with pytest.raises(NotFoundError):
            await hb.get_rule(old.agent_id)


async def test_a_bind_reads_the_store_first_and_takes_no_identity_unregistered_elsewhere(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (_world, _cluster, a, b):
        ha, hb = hub_of(a), hub_of(b)
        zed = await ha.register(Passport(name="zed"))
        assert zed.agent_id is not None
        assert await hb.find_agent("zed") == zed.agent_id  # b knows zed
        await ha.unregister(zed.agent_id)
        async with HubClient(LocalLink(hb)) as client:
            # b still resolves the name from what it knows (a lookup may lag a tick), but
            # the bind asks the store, which no longer has zed.
            with pytest.raises(NotFoundError, match="agent not registered"):
                await client.attach(Silent(), "zed")
            assert zed.agent_id not in hb.core.bindings


async def test_an_agent_unregistered_elsewhere_is_not_found_by_unregister_or_set(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (_world, _cluster, a, b):
        ha, hb = hub_of(a), hub_of(b)
        zed = await ha.register(Passport(name="zed"))
        assert zed.agent_id is not None
        assert await hb.find_agent("zed") == zed.agent_id  # b knows zed
        await ha.unregister(zed.agent_id)
        # Before any sync: b asks the store first, as the node that unregistered it would
        # answer.
        with pytest.raises(NotFoundError, match="agent not registered"):
            await hb.set_rule(zed.agent_id, Rule())
        with pytest.raises(NotFoundError, match="agent not registered"):
            await hb.unregister(zed.agent_id)
        assert hb.find_agent_id("zed") is None


async def test_an_unregistered_agent_is_also_unknown_to_b_when_asked_by_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (world, _cluster, a, b):
        ha, hb = hub_of(a), hub_of(b)
        zed = await ha.register(Passport(name="zed"))
        assert zed.agent_id is not None
        await ha.unregister(zed.agent_id)
        # Never known on b: its miss reads the store, which no longer has it.
        with pytest.raises(NotFoundError, match="participant not registered"):
            await hb.create_session(
                creator_id=world.ann, manifest_type="broadcast", participants=[zed.agent_id]
            )


async def test_two_nodes_racing_for_one_name_have_one_winner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (_world, _cluster, a, b):
        won: list[tuple[str, Passport]] = []
        lost: list[tuple[str, ProtocolError]] = []

        async def register(node_id: str) -> None:
            hub = hub_of(a if node_id == "a" else b)
            try:
                won.append((node_id, await hub.register(Passport(name="zed"))))
            except ProtocolError as exc:
                lost.append((node_id, exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(register, "a")
            nursery.start_soon(register, "b")
        assert len(won) == len(lost) == 1
        (winner, passport), (loser, refused) = won[0], lost[0]
        assert {winner, loser} == {"a", "b"}
        # Both got past their own check: the store's constraint judged the race, and the
        # loser hears what a taken name says on one node, naming the winner.
        for node in (a, b):
            assert node.store.statistics().calls.get("save_agent") == 1
        assert str(refused) == (
            f"agent name 'zed' is already registered (agent_id {passport.agent_id})"
        )
        for node in (a, b):
            assert hub_of(node).find_agent_id("zed") == passport.agent_id


async def test_a_task_is_visible_across_nodes_and_the_first_terminal_update_wins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (world, _cluster, a, b):
        ha, hb = hub_of(a), hub_of(b)
        await ha.observe_task(
            TaskMetadata(
                task_id="t1",
                owner_id=world.ann,
                spec=TaskSpec(title="t1", capability="sing"),
                state=TaskState.RUNNING,
            )
        )
        assert (await hb.get_task("t1")).state is TaskState.RUNNING  # read through
        await ha.observe_task(
            TaskMetadata(task_id="t2", owner_id=world.ann, spec=TaskSpec(title="t2"))
        )
        # Over a connection the owner is checked first: against the task read through.
        start = trio.current_time()
        assert (await hb.call(GetTask(task_id="t2"), caller=bound_to(world.ann))).task_id == "t2"
        with pytest.raises(AccessDeniedError, match="not bound to agent"):
            await hb.call(GetTask(task_id="t2"), caller=bound_to(world.bob))
        assert trio.current_time() == start
        await eventually(lambda: "t2" in hb.core.tasks, WITHIN_A_TICK)  # the feed
        assert {t.task_id for t in await hb.list_tasks()} == {"t1", "t2"}

        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(ha.update_task, "t1", state=TaskState.COMPLETED))
            nursery.start_soon(partial(hb.update_task, "t1", state=TaskState.FAILED))
        # Both wrote (conditionally); one won, the other was left as a second terminal
        # update is on one node: no error, nothing changed, nothing counted again.
        for node in (a, b):
            assert node.store.statistics().calls.get("save_open_task", 0) >= 1
        final = await ha.get_task("t1")
        assert final.state in (TaskState.COMPLETED, TaskState.FAILED)
        assert await hb.get_task("t1") == final
        # Counted once, by the winner; the feed brings it to the other node.
        await eventually(
            lambda: "sing" in ha.core.registry.record(world.ann).resume.observed, WITHIN_A_TICK
        )
        await eventually(
            lambda: "sing" in hb.core.registry.record(world.ann).resume.observed, WITHIN_A_TICK
        )
        assert await ha.get_resume(world.ann) == await hb.get_resume(world.ann)
        observed = (await ha.get_resume(world.ann)).observed["sing"]
        assert observed.n == 1
        assert (observed.completed, observed.failed) == (
            (1, 0) if final.state is TaskState.COMPLETED else (0, 1)
        )
        # A later update on either node changes nothing.
        await hb.update_task("t1", state=TaskState.CANCELLED)
        assert await ha.get_task("t1") == final
