"""Hubs as nodes of one cluster in one trio run (MockClock): ownership, takeover, fencing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from troupe import EV_TEXT, NotOwner, ProtocolError, SessionState, StoreError
from troupe.hub import Hub

from ._nodes import (
    LEASE_S,
    MARGIN_S,
    SHARDS,
    TICK_S,
    Cluster,
    Node,
    World,
    bootstrap,
    eventually,
    owner_of,
    text,
    wal_of,
)


def hub_of(node: Node) -> Hub:
    assert node.hub is not None, f"node {node.node_id} is not running"
    return node.hub


@asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[World, Cluster, Node, Node]]:
    """Nodes ``a`` and ``b`` of a cluster of six sessions, settled (three ticks) on their
    shards (the cluster's nursery runs a test's own tasks); stopped when left."""
    world = await bootstrap(6)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(world, nursery)
        a = await cluster.start("a")
        b = await cluster.start("b")
        await trio.sleep(3 * TICK_S)
        yield world, cluster, a, b
        await cluster.stop()


def owned_by(cluster: Cluster, node: Node) -> str:
    """A session whose shard ``node`` owns."""
    return next(s for s in cluster.world.sessions if owner_of(cluster, s) is node)


async def test_two_nodes_split_the_shards_and_each_serves_only_its_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (world, cluster, a, b):
        held = {n.node_id: set(n.member.ownership.held) for n in (a, b)}
        assert len(held["a"]) == len(held["b"]) == SHARDS // 2
        assert held["a"].isdisjoint(held["b"])
        for sid in world.sessions:
            owner = owner_of(cluster, sid)
            assert owner is not None
            other = b if owner is a else a
            accepted = await hub_of(owner).post(text(world, sid, "hi"))
            assert accepted.seq > 0
            with pytest.raises(NotOwner) as refused:
                await hub_of(other).post(text(world, sid, "hi"))
            assert refused.value.owner == owner.node_id
            assert refused.value.shard == owner.member.shard(sid)


async def test_a_dead_nodes_shards_are_taken_over_after_its_lease_and_the_wal_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (world, cluster, a, b):
        sid = owned_by(cluster, a)
        first = await hub_of(a).post(text(world, sid, "before", key="k1"))
        epoch = cluster.coordinator.shards[a.member.shard(sid)].epoch
        killed_at = trio.current_time()
        await cluster.kill(a)
        await eventually(lambda: owner_of(cluster, sid) is b, LEASE_S + TICK_S)
        # Not before the lease ran out; within lease + one tick.
        assert trio.current_time() - killed_at >= LEASE_S
        assert cluster.coordinator.shards[b.member.shard(sid)].epoch == epoch + 1
        again = await hub_of(b).post(text(world, sid, "before", key="k1"))
        assert (again.envelope_id, again.seq, again.duplicate) == (
            first.envelope_id,
            first.seq,
            True,
        )
        after = await hub_of(b).post(text(world, sid, "after"))
        assert after.seq == first.seq + 1
        assert len(b.member.ownership.held) == SHARDS


async def test_a_paused_owner_stops_serving_before_its_lease_ends_and_its_held_write_is_fenced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (world, cluster, a, b):
        sid = owned_by(cluster, a)
        await hub_of(a).post(text(world, sid, "warm"))
        paused_at = trio.current_time()
        cluster.pause(a)
        # A post that reached the session's actor and hangs at the store (the process stalled
        # between deciding to write and writing).
        held: list[BaseException | object] = []
        settled = trio.Event()

        async def post_held() -> None:
            try:
                held.append(await hub_of(a).post(text(world, sid, "held")))
            except StoreError as exc:
                held.append(exc)
            settled.set()

        cluster.nursery.start_soon(post_held)
        # The paused node stops serving at its local deadline, before the lease ends.
        deadline = a.member.ownership.deadline
        assert deadline <= paused_at + LEASE_S - MARGIN_S
        await trio.sleep_until(deadline)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(NotOwner):
            a.member.check(sid)
        await eventually(lambda: owner_of(cluster, sid) is b, LEASE_S + TICK_S)
        taken = await hub_of(b).post(text(world, sid, "taken over"))
        cluster.resume(a)
        with trio.fail_after(LEASE_S):
            await settled.wait()
        assert isinstance(held[0], StoreError), held  # fenced, or its actor stopped
        wal = await wal_of(world, sid)
        assert [e.event_data["text"] for e in wal if e.event_type == EV_TEXT][-2:] == [
            "warm",
            "taken over",
        ]
        assert wal[-1].seq == taken.seq


async def test_a_node_cut_from_the_database_stops_serving_and_another_takes_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (world, cluster, a, b):
        sid = owned_by(cluster, a)
        cluster.cut(a)
        await trio.sleep(LEASE_S - MARGIN_S)
        assert not a.member.ownership.held
        await trio.sleep(MARGIN_S + TICK_S)
        assert owner_of(cluster, sid) is b
        cluster.resume(a)
        await trio.sleep(3 * TICK_S)
        # Back: it claims a fair share again (b lets the surplus go), under new epochs.
        assert len(a.member.ownership.held) == len(b.member.ownership.held) == SHARDS // 2
        owner = owner_of(cluster, sid)
        assert owner is not None
        await hub_of(owner).post(text(world, sid, "back"))


async def test_a_node_that_stops_cleanly_snapshots_its_sessions_and_hands_them_over_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_nodes() as (world, cluster, a, b):
        sid = owned_by(cluster, a)
        last = await hub_of(a).post(text(world, sid, "before the stop"))
        hub_a = hub_of(a)
        stopped_at = trio.current_time()
        cluster.nursery.start_soon(cluster.stop_node, a)
        await trio.testing.wait_all_tasks_blocked()
        assert a.member.draining
        with pytest.raises((NotOwner, ProtocolError)):  # draining, or stopped already
            await hub_a.post(text(world, sid, "while draining"))
        await a.done.wait()
        async with world.store.view() as store:
            snapshot = await store.load_snapshot(sid)
        assert snapshot is not None
        assert snapshot.seq == last.seq
        # Handed over, not left to expire: b has it at its next tick.
        await eventually(lambda: owner_of(cluster, sid) is b, a.member.leave_within_s + TICK_S)
        assert trio.current_time() - stopped_at < LEASE_S
        after = await hub_of(b).post(text(world, sid, "after"))
        assert after.seq == last.seq + 1


async def test_an_actor_starting_when_its_shard_was_lost_does_not_outlive_the_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found by the machine: a session whose actor was starting (held at the paused store)
    # when the node lost its shard finished starting on resume, and later, once the node
    # held the shard again, wrote from a WAL another node had extended meanwhile.
    async with two_nodes() as (world, cluster, a, b):
        sid = owned_by(cluster, b)
        hub_b = hub_of(b)
        cluster.pause(b)

        async def starts_then_stalls() -> None:
            with pytest.raises(StoreError):
                await hub_b.post(text(world, sid, "stalled"))

        cluster.nursery.start_soon(starts_then_stalls)
        await eventually(lambda: owner_of(cluster, sid) is a, LEASE_S + TICK_S)
        accepted = await hub_of(a).post(text(world, sid, "on a"))
        cluster.resume(b)
        await trio.sleep(TICK_S)
        entry = hub_b.core.directory.get(sid)
        assert not entry.running, "an actor of a shard b does not hold"
        # b gets the shard back (a dies) and writes after a's envelope, not over it.
        await cluster.kill(a)
        await eventually(lambda: owner_of(cluster, sid) is b, LEASE_S + 2 * TICK_S)
        after = await hub_b.post(text(world, sid, "on b"))
        assert after.seq == accepted.seq + 1


async def test_a_session_given_up_on_a_node_that_lost_its_shard_is_not_closed_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found by the machine: a node cut from the store crashed a session's actor until its
    # supervisor gave up; the close of the crashed session kept retrying, and went through
    # once the node held the shard again, closing a session that was fine.
    async with two_nodes() as (world, cluster, a, b):
        sid = owned_by(cluster, a)
        await hub_of(a).post(text(world, sid, "warm"))
        cluster.cut(a)
        entry = hub_of(a).core.directory.get(sid)
        for _ in range(5):  # each post crashes the actor (its store fails) until given up
            with pytest.raises((StoreError, ProtocolError)):
                await hub_of(a).post(text(world, sid, "cut off", key="k"))
            if entry.given_up:
                break
        assert entry.given_up
        await eventually(lambda: owner_of(cluster, sid) is b, LEASE_S + 2 * TICK_S)
        cluster.resume(a)
        await trio.sleep(3 * TICK_S)
        cluster.cut(b)  # a gets the shard back
        await eventually(lambda: owner_of(cluster, sid) is a, LEASE_S + 2 * TICK_S)
        await trio.sleep(3 * TICK_S)
        accepted = await hub_of(a).post(text(world, sid, "fine"))
        async with world.store.view() as store:
            stored = await store.get_session(sid)
        assert stored is not None
        assert not stored.state.terminal
        assert accepted.seq == (await store_last_seq(world, sid))


async def store_last_seq(world: World, session_id: str) -> int:
    return len(await wal_of(world, session_id))


async def test_a_joining_node_takes_a_fair_share_and_then_nothing_moves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 8 shards: a and b hold 4 each; c's share is 3, and a and b hold only share + 1, which
    # the share + 2 rule lets keep. c must not stay empty: they let one go each.
    async with two_nodes() as (world, cluster, a, b):
        c = await cluster.start("c")

        def counts() -> list[int]:
            return sorted(len(n.member.ownership.held) for n in (a, b, c))

        await eventually(lambda: counts() == [2, 3, 3], within_s=10 * TICK_S)
        settled = {n.node_id: dict(n.member.ownership.held) for n in (a, b, c)}
        await trio.sleep(10 * TICK_S)  # hysteresis: one shard apart, nothing flaps
        assert {n.node_id: dict(n.member.ownership.held) for n in (a, b, c)} == settled
        for sid in world.sessions:  # and every session is served by its shard's owner
            owner = owner_of(cluster, sid)
            assert owner is not None
            assert (await hub_of(owner).post(text(world, sid, "hi"))).seq > 0


async def test_each_node_expires_only_the_sessions_of_the_shards_it_serves(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Every node loads every session; the TTL sweeper is per shard, on its owner: a node
    # does not try (and fail, and log) to end the sessions another node serves.
    world = await bootstrap(6, ttl=60)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(world, nursery)
        a = await cluster.start("a")
        b = await cluster.start("b")
        await trio.sleep(120)  # past every session's TTL
        owners = {sid: owner_of(cluster, sid) for sid in world.sessions}
        assert {a, b} == set(owners.values())
        with caplog.at_level(logging.WARNING, logger="troupe"):
            for node in (a, b):
                await hub_of(node).expire_due()
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        for sid, owner in owners.items():
            assert owner is not None
            md = await hub_of(owner).get_session(sid)
            assert md.state is SessionState.EXPIRED
        await cluster.stop()
