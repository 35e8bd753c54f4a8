"""Two hubs as nodes of one cluster on the test PostgreSQL (real clock, one trio run).

Each node has its own PostgresStore (no advisory lock; the coordinator's fence in every
session write) and its own PostgresCoordinator. Waits are for conditions, with deadlines.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from functools import partial

import pytest
import trio

from troupe import EV_TEXT, Envelope, NotOwner, Passport, ProtocolError
from troupe.cluster import ClusterMember, shard_of
from troupe.hub import Hub
from troupe.model import TaskMetadata, TaskSpec, TaskState

from .._postgres import new_schema
from ..test_transport._wire import wait_until
from ._processes import boot_node, open_acked

SHARDS = 4
#: Short timing for a test on a real clock (a lease must exceed 5 s + margin): lease, tick,
#: margin.
TIMING = (7.0, 0.5, 1.5)


def node(dsn: str, schema: str, node_id: str, seed: int) -> AbstractAsyncContextManager[Hub]:
    """Node ``node_id`` of the cluster in ``schema``, with this test's short timing."""
    return boot_node(dsn, schema, shards=SHARDS, timing=TIMING, seed=seed, node_id=node_id)


def held(hub: Hub) -> set[int]:
    member = hub.core.cluster
    assert isinstance(member, ClusterMember)
    return set(member.ownership.held)


async def test_two_hubs_on_postgresql_share_the_shards_and_hand_them_over_on_leaving(
    pg_dsn: str, pg_schemas: list[str]
) -> None:
    schema = new_schema(pg_schemas)
    async with node(pg_dsn, schema, "a", 1) as a:
        ann = (await a.register(Passport(name="ann"))).agent_id
        bob = (await a.register(Passport(name="bob"))).agent_id
        assert ann is not None
        assert bob is not None
        assert held(a) == set(range(SHARDS))
        sid = await open_acked(a, ann, bob, "broadcast")
        first = await a.post(_text(sid, ann, "one"))
        async with node(pg_dsn, schema, "b", 2) as b:
            # a lets half go (hysteresis: 4 >= 2 + 2), b claims them.
            with trio.fail_after(10):
                await wait_until(lambda: len(held(b)) == SHARDS // 2)
            owner, other = (a, b) if shard_of(sid, SHARDS) in held(a) else (b, a)
            with pytest.raises(NotOwner):
                await other.post(_text(sid, ann, "refused"))
            two = await owner.post(_text(sid, ann, "two", key="k2"))
            assert two.seq == first.seq + 1
        # b left: it handed its shards over at once; a takes them at its next tick.
        with trio.fail_after(10):
            await wait_until(lambda: held(a) == set(range(SHARDS)))
        again = await a.post(_text(sid, ann, "two", key="k2"))
        assert (again.envelope_id, again.seq, again.duplicate) == (two.envelope_id, two.seq, True)
        three = await a.post(_text(sid, ann, "three"))
        assert three.seq == two.seq + 1


async def test_two_hubs_on_postgresql_share_the_registry_and_the_tasks(
    pg_dsn: str, pg_schemas: list[str]
) -> None:
    schema = new_schema(pg_schemas)
    async with node(pg_dsn, schema, "a", 1) as a, node(pg_dsn, schema, "b", 2) as b:
        ann = await a.register(Passport(name="ann"))
        assert ann.agent_id is not None
        assert await b.get_agent("ann") == ann  # read through, at once
        # A race for one name: one winner; the loser hears the name is taken, naming it.
        outcomes: list[object] = []

        async def register(hub: Hub) -> None:
            try:
                outcomes.append(await hub.register(Passport(name="zed")))
            except ProtocolError as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(register, a)
            nursery.start_soon(register, b)
        (winner,) = [o for o in outcomes if isinstance(o, Passport)]
        (refused,) = [o for o in outcomes if isinstance(o, ProtocolError)]
        assert f"(agent_id {winner.agent_id})" in str(refused)
        for hub in (a, b):
            assert await hub.find_agent("zed") == winner.agent_id
        # A task observed on a; b ends it while a does: the first terminal update wins.
        await a.observe_task(
            TaskMetadata(task_id="t1", owner_id=ann.agent_id, spec=TaskSpec(title="t1"))
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(a.update_task, "t1", state=TaskState.COMPLETED))
            nursery.start_soon(partial(b.update_task, "t1", state=TaskState.FAILED))
        final = await b.get_task("t1")
        assert final.state in (TaskState.COMPLETED, TaskState.FAILED)
        with trio.fail_after(10):
            await wait_until(lambda: a.core.tasks.get("t1") == b.core.tasks.get("t1") == final)
        # Unregistered on a: b forgets it at its next sync.
        await a.unregister(ann.agent_id)
        with trio.fail_after(10):
            await wait_until(lambda: b.find_agent_id("ann") is None)


def _text(sid: str, sender: str, body: str, key: str | None = None) -> Envelope:
    return Envelope(
        session_id=sid,
        sender_id=sender,
        event_type=EV_TEXT,
        event_data={"text": body},
        idempotency_key=key,
    )
