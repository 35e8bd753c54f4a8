"""Both coordinators keep one contract: claims, renewals, expiry, hand-over and the fence.

``memory`` is the MemoryCoordinator the deterministic tests use; ``postgres`` is the
PostgresCoordinator on the test server (a fresh schema each). A lease is made to run out
by moving its end to now (``Judge.expire``), so no test waits on a clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from troupe import NotOwner, StoreError
from troupe.cluster import Coordinator, MemoryCoordinator, PostgresCoordinator, shard_of
from troupe.store import MemoryStore, PostgresStore, Store

from .._postgres import new_schema
from ..test_store.factories import env, session

SHARDS = 4
LEASE_S = 30.0

Claimed = Callable[[int], int | None]


@attrs.define
class Judge:
    """A coordinator, and what a test needs around it on its engine."""

    coordinator: Coordinator
    #: ``await expire(node_id)``: the node's leases run out now.
    expire: Callable[[str], Any]
    #: ``fenced(node_id, claimed)``: a store on the cluster's data with the node's fence.
    fenced: Callable[[str, Claimed], AbstractAsyncContextManager[Store]]


async def _memory() -> AsyncIterator[Judge]:
    coordinator = MemoryCoordinator()
    data = MemoryStore()

    async def expire(node_id: str) -> None:
        await trio.lowlevel.checkpoint()
        for shard in coordinator.shards:
            if shard.owner == node_id:
                shard.lease_until = coordinator.clock()

    @asynccontextmanager
    async def fenced(node_id: str, claimed: Claimed) -> AsyncIterator[Store]:
        async with data.view(fence=coordinator.fence(node_id, SHARDS, claimed)) as store:
            yield store

    yield Judge(coordinator, expire, fenced)


async def _postgres(dsn: str, schema: str) -> AsyncIterator[Judge]:
    import psycopg

    async with PostgresCoordinator(dsn, schema=schema) as coordinator:
        with psycopg.connect(dsn, autocommit=True) as admin:

            async def expire(node_id: str) -> None:
                await trio.to_thread.run_sync(
                    lambda: admin.execute(
                        f"UPDATE {schema}.shards SET lease_until = now() WHERE owner = %s",
                        (node_id,),
                    )
                )

            @asynccontextmanager
            async def fenced(node_id: str, claimed: Claimed) -> AsyncIterator[Store]:
                fence = coordinator.fence(node_id, SHARDS, claimed)
                store = PostgresStore(dsn, schema=schema, exclusive=False, fence=fence)
                async with store:
                    yield store

            yield Judge(coordinator, expire, fenced)


@pytest.fixture(params=["memory", "postgres"])
async def judge(request: pytest.FixtureRequest) -> AsyncIterator[Judge]:
    if request.param == "memory":
        async for judge in _memory():
            yield judge
    else:
        dsn = request.getfixturevalue("pg_dsn")
        schema = new_schema(request.getfixturevalue("pg_schemas"))
        async for judge in _postgres(dsn, schema):
            yield judge


async def test_claims_are_disjoint_up_to_the_limit_and_start_at_epoch_one(judge: Judge) -> None:
    c = judge.coordinator
    await c.join("a", "ws://a", SHARDS)
    await c.join("b", "ws://b", SHARDS)
    a = await c.claim("a", LEASE_S, 3)
    b = await c.claim("b", LEASE_S, 3)
    assert a.held == {0: 1, 1: 1, 2: 1}
    assert b.held == {3: 1}  # only one was free
    assert a.live == b.live == 2
    assert (await c.claim("b", LEASE_S, 3)).held == {3: 1}  # nothing more to take
    shards = await c.shard_map()
    assert [(s.shard, s.owner, s.epoch) for s in shards] == [
        (0, "a", 1),
        (1, "a", 1),
        (2, "a", 1),
        (3, "b", 1),
    ]
    assert all(0 < s.lease_left_s <= LEASE_S for s in shards)


async def test_a_cluster_keeps_the_shard_count_it_was_created_with(judge: Judge) -> None:
    await judge.coordinator.join("a", "ws://a", SHARDS)
    with pytest.raises(StoreError, match=r"has 8 shards.*has 4"):
        await judge.coordinator.join("b", "ws://b", 8)


async def test_a_lease_that_ran_out_is_not_renewed_and_is_claimed_under_the_next_epoch(
    judge: Judge,
) -> None:
    c = judge.coordinator
    await c.join("a", "ws://a", SHARDS)
    await c.join("b", "ws://b", SHARDS)
    await c.claim("a", LEASE_S, SHARDS)
    assert (await c.renew("a", "ws://a", LEASE_S)).held == dict.fromkeys(range(SHARDS), 1)
    await judge.expire("a")
    assert (await c.renew("a", "ws://a", LEASE_S)).held == {}  # may be someone else's now
    assert (await c.claim("b", LEASE_S, 2)).held == {0: 2, 1: 2}
    # a may claim again what nobody took, under a new epoch too.
    assert (await c.claim("a", LEASE_S, SHARDS)).held == {2: 2, 3: 2}


async def test_release_and_leave_hand_shards_over_at_once(judge: Judge) -> None:
    c = judge.coordinator
    await c.join("a", "ws://a", SHARDS)
    await c.join("b", "ws://b", SHARDS)
    await c.claim("a", LEASE_S, SHARDS)
    await c.release("a", [0, 1])
    await c.release("b", [2])  # not b's: nothing happens
    assert (await c.claim("b", LEASE_S, SHARDS)).held == {0: 2, 1: 2}
    await c.leave("a")
    assert [n.node_id for n in await c.nodes()] == ["b"]
    assert (await c.claim("b", LEASE_S, SHARDS)).held == {0: 2, 1: 2, 2: 2, 3: 2}


async def test_nodes_report_address_heartbeat_age_and_shards_held(judge: Judge) -> None:
    c = judge.coordinator
    await c.join("a", "ws://a:1", SHARDS)
    await c.join("b", "ws://b:2", SHARDS)
    await c.claim("a", LEASE_S, 3)
    await c.renew("b", "ws://b:3", LEASE_S)
    nodes = await c.nodes()
    assert [(n.node_id, n.address, n.shards) for n in nodes] == [
        ("a", "ws://a:1", 3),
        ("b", "ws://b:3", 0),
    ]
    assert all(0 <= n.heartbeat_age_s < LEASE_S for n in nodes)


async def test_the_fence_lets_the_owner_write_and_refuses_a_stale_epoch(judge: Judge) -> None:
    c = judge.coordinator
    await c.join("a", "ws://a", SHARDS)
    await c.join("b", "ws://b", SHARDS)
    a_holds = dict((await c.claim("a", LEASE_S, SHARDS)).held)
    sid = "s-fenced"
    shard = shard_of(sid, SHARDS)
    b_holds: dict[int, int] = {}
    async with (
        judge.fenced("a", a_holds.get) as a_store,
        judge.fenced("b", b_holds.get) as b_store,
    ):
        await a_store.save_session(session(sid))
        await a_store.append(sid, [env(sid, 1)])
        await a_store.save_snapshot(sid, 1, {"n": 1})
        with pytest.raises(NotOwner) as refused:
            await b_store.append(sid, [env(sid, 2)])  # b holds nothing
        assert (refused.value.shard, refused.value.owner, refused.value.epoch) == (shard, "a", 1)
        # a's lease runs out: a writes nothing more, even before anyone claims.
        await judge.expire("a")
        with pytest.raises(NotOwner):
            await a_store.append(sid, [env(sid, 2)])
        b_holds.update((await c.claim("b", LEASE_S, SHARDS)).held)
        assert b_holds[shard] == 2
        await b_store.append(sid, [env(sid, 2)])
        # a still believes in its epoch-1 claim: refused, for the WAL and the snapshot.
        for write in (
            a_store.append(sid, [env(sid, 3)]),
            a_store.save_snapshot(sid, 3, {"n": 3}),
            a_store.save_session(session(sid)),
        ):
            with pytest.raises(NotOwner, match=r"shard \d+ is 'b''s at epoch 2"):
                await write
        assert [e.seq for e in await b_store.read(sid)] == [1, 2]
        # A read is anyone's: only writes are fenced.
        assert [e.seq for e in await a_store.read(sid)] == [1, 2]


async def test_postgres_claims_skip_a_shard_a_writer_is_fencing_and_connections_are_bounded(
    pg_dsn: str, pg_schemas: list[str]
) -> None:
    import psycopg

    from troupe.cluster._postgres import FENCE

    schema = new_schema(pg_schemas)
    async with PostgresCoordinator(pg_dsn, schema=schema) as c:
        settings = await c._run(
            "show",
            lambda conn: [
                conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("statement_timeout", "idle_in_transaction_session_timeout")
            ],
        )
        assert settings == ["10s", "5s"]
        await c.join("a", "ws://a", SHARDS)
        await c.join("b", "ws://b", SHARDS)
        await c.claim("a", LEASE_S, SHARDS)
        with psycopg.connect(pg_dsn, autocommit=True) as writer:
            writer.execute(f"UPDATE {schema}.shards SET lease_until = now()")
            # A write of a's in flight: its fence holds shard 0's row FOR SHARE.
            with writer.transaction():
                writer.execute(f"SET LOCAL search_path = {schema}")
                writer.execute(FENCE, (0,))
                with trio.fail_after(5):
                    held = (await c.claim("b", LEASE_S, SHARDS)).held
                assert held == {1: 2, 2: 2, 3: 2}  # skipped, not waited for
        assert (await c.claim("b", LEASE_S, SHARDS)).held == {0: 2, 1: 2, 2: 2, 3: 2}


async def test_a_node_that_joins_again_inherits_none_of_its_leases(judge: Judge) -> None:
    c = judge.coordinator
    await c.join("a", "ws://a", SHARDS)
    await c.claim("a", LEASE_S, 2)
    await c.join("a", "ws://a", SHARDS)  # restarted: the old process may still be around
    assert (await c.renew("a", "ws://a", LEASE_S)).held == {}
    assert (await c.claim("a", LEASE_S, 2)).held == {0: 2, 1: 2}


async def test_a_shard_never_claimed_has_no_owner_and_no_lease(judge: Judge) -> None:
    await judge.coordinator.join("a", "ws://a", SHARDS)
    shards = await judge.coordinator.shard_map()
    assert [(s.shard, s.owner, s.epoch) for s in shards] == [(i, None, 0) for i in range(SHARDS)]
    assert all(s.lease_left_s <= 0 for s in shards)
