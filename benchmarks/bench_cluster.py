"""Cluster benchmark: posts/s through 1, 2 and 3 nodes on one PostgreSQL, next to one node on
SQLite, and how long a takeover takes after ``kill -9`` (issue 16).

``python -m benchmarks cluster`` (``./dev bench cluster``). The PostgreSQL server is the one
``TROUPE_BENCH_POSTGRES`` (else ``TROUPE_TEST_POSTGRES``, the tests' throwaway server)
names; its ``fsync`` and ``synchronous_commit`` are printed, since they decide what a commit
costs. Skipped, saying so, without one.

- **Throughput.** Four set-ups run side by side for the whole measurement: clusters of 1, 2
  and 3 ``troupe serve --store`` processes (each cluster in a schema of its own) and one
  ``troupe serve --db`` process on an SQLite file. Each holds the same agents and one
  broadcast session per poster, made before its nodes start (a node loads the agents when
  it starts). ``--posters`` clients, each with its own WebSocket connection to the node that
  owns its session, post ``--posts`` texts each, one after the other, each with an
  idempotency key; a run is timed from the first post to the last accept. The set-ups run
  in turn (1, 2, 3 nodes, SQLite, then again), ``--repeats`` times; medians are printed,
  with each rate's ratio to one node's. *Xids per post* is the transaction ids the
  server assigned during a run (read from ``pg_current_snapshot()``), per post. It is not
  the commits: group commit runs each write of a batch in a ``SAVEPOINT`` of one
  transaction, and a savepoint that writes takes an xid of its own (a subtransaction). So
  a post costs one xid for its write, plus its share of one per committed transaction,
  plus the heartbeats of every set-up's nodes (a few per second): at least one per post,
  however well the writes group (one run logged with ``log_statement = 'all'``: 180 posts
  written in 49 transactions, 180 savepoints). Everything runs on this machine: the
  clients, every node and the server share its cores, so more nodes add no CPU here.
- **Takeover.** A cluster of 3 nodes with short leases (6.5 s lease, 0.5 s tick, 1 s margin):
  ``--kills`` times, ``kill -9`` the node holding the most shards and time until every shard
  it held is held by another node (lease running), then start a fresh node in its place
  and wait until all three hold shards. Printed: min, median and max against the bound
  lease + one tick + 1 s.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import attrs
import trio
from trio_websocket import open_websocket_url

from troupe import EV_TEXT, Envelope, Passport
from troupe.cluster import (
    ClusterConfig,
    ClusterMember,
    PostgresCoordinator,
    shard_of,
)
from troupe.cluster._shards import HYSTERESIS
from troupe.hub import Hub, open_hub
from troupe.model import (
    EV_CHANNEL_INVITE_ACK,
    AcceptFrame,
    ErrorFrame,
    Frame,
    HelloFrame,
    SendFrame,
    WelcomeFrame,
    decode_frames,
    encode_frame,
)
from troupe.store import PostgresStore

POSTGRES_ENV = ("TROUPE_BENCH_POSTGRES", "TROUPE_TEST_POSTGRES")
REPO = Path(__file__).resolve().parents[1]
SHARDS = 16
#: Throughput clusters: the default lease, a 1 s tick (they settle quickly).
STEADY_TICK_S = 1.0
STEADY = ("--shards", str(SHARDS), "--tick", str(STEADY_TICK_S))
#: The takeover cluster: short leases.
LEASE_S, TICK_S, MARGIN_S = 6.5, 0.5, 1.0
FAST = ("--shards", str(SHARDS), "--lease", "6.5", "--tick", "0.5", "--margin", "1")
NODE_COUNTS = (1, 2, 3)


@attrs.frozen
class Poster:
    name: str
    agent_id: str
    session_id: str


@attrs.define(eq=False)
class Node:
    node_id: str
    process: trio.Process
    url: str


@attrs.define(eq=False)
class SetUp:
    """One set-up: its nodes, and where each poster posts."""

    name: str
    posters: list[Poster]
    nodes: list[Node] = attrs.field(factory=list)
    #: poster name -> URL of the node that serves its session.
    urls: dict[str, str] = attrs.field(factory=dict)
    rates: list[float] = attrs.field(factory=list)
    #: Transaction ids (subtransactions included) the server assigned per post, per run.
    xids: list[float] = attrs.field(factory=list)


def postgres_dsn() -> str | None:
    return next((os.environ[name] for name in POSTGRES_ENV if os.environ.get(name)), None)


# -- processes and set-up ---------------------------------------------------------------------


async def spawn(args: Sequence[str], node_id: str) -> Node:
    """A ``troupe serve`` process; returns once it listens."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "troupe", "serve", *args, "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    printed = b""
    with trio.fail_after(30):
        while b"\n" not in printed.partition(b"listening on ")[2]:
            chunk = await process.stdout.receive_some()
            if not chunk:
                raise RuntimeError(f"troupe serve {' '.join(args)} exited before it listened")
            printed += chunk
    url = printed.partition(b"listening on ")[2].split(b"\n")[0].decode()
    return Node(node_id, process, url)


async def stop(node: Node) -> None:
    if node.process.returncode is None:
        node.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(20):
            await node.process.wait()
        if node.process.returncode is None:
            node.process.kill()
    await node.process.wait()
    if node.process.stdout is not None:
        await node.process.stdout.aclose()


async def populate(hub: Hub, posters: int) -> list[Poster]:
    """Register a sink and ``posters`` posters, each with a broadcast to the sink."""
    sink = (await hub.register(Passport(name="sink"))).agent_id
    assert sink is not None
    out = []
    for i in range(posters):
        name = f"p{i}"
        agent_id = (await hub.register(Passport(name=name))).agent_id
        assert agent_id is not None
        before = set(hub.core.directory.sessions)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(
                    hub.create_session,
                    creator_id=agent_id,
                    manifest_type="broadcast",
                    participants=[sink],
                )
            )
            for _ in range(2000):  # 10 s
                new = set(hub.core.directory.sessions) - before
                if new and sink in hub.core.directory.get(min(new)).metadata.pending_acks:
                    break
                await trio.sleep(0.005)
            else:
                raise RuntimeError(f"the session of {name} was not opened in 10 s")
            (sid,) = new
            await hub.post(
                Envelope(session_id=sid, sender_id=sink, event_type=EV_CHANNEL_INVITE_ACK)
            )
        out.append(Poster(name, agent_id, sid))
    return out


async def populate_cluster(dsn: str, schema: str, posters: int) -> list[Poster]:
    """The agents and sessions, made by an in-process node that then hands everything over."""
    async with PostgresCoordinator(dsn, schema=schema) as coordinator:
        config = ClusterConfig(
            node_id="boot", shards=SHARDS, lease_s=LEASE_S, tick_s=TICK_S, margin_s=MARGIN_S
        )
        member = ClusterMember(config, coordinator)
        fence = coordinator.fence("boot", SHARDS, member.claimed)
        store = PostgresStore(dsn, schema=schema, exclusive=False, fence=fence)
        async with open_hub(store, cluster=member, ttl_sweep_interval=0) as hub:
            return await populate(hub, posters)


async def owners(coordinator: PostgresCoordinator) -> dict[int, tuple[str, str]]:
    """``{shard: (owner, address)}`` for the shards whose lease runs now."""
    addresses = {n.node_id: n.address for n in await coordinator.nodes()}
    return {
        s.shard: (s.owner, addresses.get(s.owner, ""))
        for s in await coordinator.shard_map()
        if s.owner is not None and s.lease_left_s > 0
    }


async def settled(coordinator: PostgresCoordinator, nodes: int) -> dict[int, tuple[str, str]]:
    """Wait (60 s at most) until every shard is held, ``nodes`` nodes hold them and none
    holds enough to let shards go (``HYSTERESIS`` more than another: see
    ``troupe.cluster``'s ``Ownership.surplus``): the map is steady, so a poster sent to its
    session's owner stays with it for the run."""
    last: dict[int, tuple[str, str]] = {}
    with trio.fail_after(60):
        while True:
            owned = await owners(coordinator)
            counts = Counter(o for o, _ in owned.values())
            if (
                len(owned) == SHARDS
                and len(counts) == nodes
                and max(counts.values()) - min(counts.values()) < HYSTERESIS
            ):
                if owned == last:  # and the same two ticks later: nothing was on its way
                    return owned
                last = owned
                await trio.sleep(2 * STEADY_TICK_S)
                continue
            last = {}
            await trio.sleep(0.1)


# -- posting ----------------------------------------------------------------------------------


async def receive(ws: object, kinds: tuple[type[Frame], ...]) -> Frame:
    from trio_websocket import WebSocketConnection

    assert isinstance(ws, WebSocketConnection)
    while True:
        frames = decode_frames(await ws.get_message())
        for frame in frames if isinstance(frames, list) else [frames]:
            if isinstance(frame, kinds):
                return frame


async def run_posts(setup: SetUp, posts: int, run: int) -> float:
    """Every poster posts ``posts`` texts to its node, one after the other: posts/s."""
    async with AsyncExitStack() as stack:
        connections = []
        for poster in setup.posters:
            ws = await stack.enter_async_context(open_websocket_url(setup.urls[poster.name]))
            await ws.send_message(encode_frame(HelloFrame(name=poster.name, request_id="h")))
            welcome = await receive(ws, (WelcomeFrame, ErrorFrame))
            if not isinstance(welcome, WelcomeFrame):
                raise RuntimeError(f"{setup.name}: hello {poster.name} refused: {welcome}")
            connections.append((poster, ws))

        async def post_all(poster: Poster, ws: object) -> None:
            from trio_websocket import WebSocketConnection

            assert isinstance(ws, WebSocketConnection)
            for n in range(posts):
                key = f"{poster.name}-{run}-{n}"
                envelope = Envelope(
                    session_id=poster.session_id,
                    sender_id=poster.agent_id,
                    event_type=EV_TEXT,
                    event_data={"text": key},
                    idempotency_key=key,
                )
                await ws.send_message(encode_frame(SendFrame(envelope=envelope, request_id=key)))
                answer = await receive(ws, (AcceptFrame, ErrorFrame))
                if not isinstance(answer, AcceptFrame):
                    raise RuntimeError(f"{setup.name}: {key} refused: {answer}")

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for poster, ws in connections:
                nursery.start_soon(post_all, poster, ws)
        return len(connections) * posts / (time.perf_counter() - start)


def next_xid(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        return int(row.fetchone()[0])  # type: ignore[index]


# -- the two measurements ---------------------------------------------------------------------


async def throughput(
    dsn: str, tmp: Path, schemas: list[str], *, posters: int, posts: int, repeats: int
) -> list[SetUp]:
    setups: list[SetUp] = []
    async with AsyncExitStack() as stack:
        for count in NODE_COUNTS:
            schema = f"bench_cluster_{count}_{os.getpid()}"
            schemas.append(schema)
            setup = SetUp(
                f"{count} node(s), PostgreSQL", await populate_cluster(dsn, schema, posters)
            )
            setups.append(setup)
            for i in range(count):
                args = ["--store", dsn, "--schema", schema, "--node-id", f"n{i}", *STEADY]
                node = await spawn(args, f"n{i}")
                stack.push_async_callback(stop, node)
                setup.nodes.append(node)
            coordinator = await stack.enter_async_context(
                PostgresCoordinator(dsn, schema=schema, create=False)
            )
            owned = await settled(coordinator, count)
            # The node's own URL: the address it advertises says port 0 until its next tick.
            url_of = {n.node_id: n.url for n in setup.nodes}
            setup.urls = {
                p.name: url_of[owned[shard_of(p.session_id, SHARDS)][0]] for p in setup.posters
            }
        db = tmp / "hub.db"
        async with open_hub(db, ttl_sweep_interval=0) as hub:
            sqlite = SetUp("1 node, SQLite", await populate(hub, posters))
        node = await spawn(["--db", str(db)], "sqlite")
        stack.push_async_callback(stop, node)
        sqlite.urls = {p.name: node.url for p in sqlite.posters}
        setups.append(sqlite)
        # Interleaved, so a slow spell of the shared machine weighs on every set-up alike.
        for run in range(repeats):
            for setup in setups:
                before = next_xid(dsn)
                setup.rates.append(await run_posts(setup, posts, run))
                if setup is not sqlite:
                    setup.xids.append((next_xid(dsn) - before - 1) / (posters * posts))
    return setups


async def takeovers(dsn: str, schemas: list[str], kills: int) -> list[float]:
    schema = f"bench_takeover_{os.getpid()}"
    schemas.append(schema)
    times: list[float] = []
    ids = itertools.count()
    nodes: dict[str, Node] = {}

    async def start() -> None:
        node_id = f"k{next(ids)}"
        nodes[node_id] = await spawn(
            ["--store", dsn, "--schema", schema, "--node-id", node_id, *FAST], node_id
        )

    try:
        async with PostgresCoordinator(dsn, schema=schema) as coordinator:
            for _ in range(3):
                await start()
            for _ in range(kills):
                owned = await settled(coordinator, 3)
                counts: dict[str, int] = {}
                for owner, _ in owned.values():
                    counts[owner] = counts.get(owner, 0) + 1
                victim = nodes.pop(max(counts, key=lambda n: (counts[n], n)))
                mine = {s for s, (o, _) in owned.items() if o == victim.node_id}
                began = time.perf_counter()
                victim.process.kill()
                with trio.fail_after(LEASE_S + 30):
                    while True:
                        now = await owners(coordinator)
                        if all(s in now and now[s][0] != victim.node_id for s in mine):
                            break
                        await trio.sleep(0.05)
                times.append(time.perf_counter() - began)
                await victim.process.wait()
                await start()
    finally:
        for node in nodes.values():
            await stop(node)
    return times


async def measure(
    dsn: str, *, posters: int, posts: int, repeats: int, kills: int
) -> tuple[list[SetUp], list[float]]:
    import psycopg

    schemas: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="troupe-bench-") as tmp:
            setups = await throughput(
                dsn, Path(tmp), schemas, posters=posters, posts=posts, repeats=repeats
            )
        times = await takeovers(dsn, schemas, kills) if kills else []
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return setups, times


def report(setups: list[SetUp], times: list[float], posters: int, posts: int) -> list[str]:
    one = statistics.median(setups[0].rates)
    lines = [f"{posters} posters x {posts} posts each, medians of {len(setups[0].rates)} runs"]
    for setup in setups:
        rate = statistics.median(setup.rates)
        xids = f"{statistics.median(setup.xids):.2f}" if setup.xids else "-"
        lines.append(
            f"posts/s  {setup.name:<24} {rate:>8,.0f}  ({rate / one:.2f}x one PostgreSQL node)"
            f"  xids/post {xids}"
        )
    if times:
        bound = LEASE_S + TICK_S + 1.0
        lines.append(
            f"takeover after kill -9 ({len(times)} kills; lease {LEASE_S} s, tick {TICK_S} s): "
            f"min {min(times):.2f} s, median {statistics.median(times):.2f} s, max "
            f"{max(times):.2f} s (bound lease + tick + 1 s = {bound} s)"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_cluster", description=__doc__)
    parser.add_argument("--posters", type=int, default=24, help="clients (default: 24)")
    parser.add_argument("--posts", type=int, default=40, help="posts each, per run (default: 40)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per set-up (default: 3)")
    parser.add_argument("--kills", type=int, default=4, help="takeovers timed (default: 4)")
    args = parser.parse_args([] if argv is None else argv)
    dsn = postgres_dsn()
    if dsn is None:
        print(f"cluster: skipped, no PostgreSQL server ({' or '.join(POSTGRES_ENV)} unset)")
        return
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        where = ", ".join(
            f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"  # type: ignore[index]
            for name in ("fsync", "synchronous_commit")
        )
    print(f"PostgreSQL: {where}")
    setups, times = trio.run(
        lambda: measure(
            dsn, posters=args.posters, posts=args.posts, repeats=args.repeats, kills=args.kills
        )
    )
    for line in report(setups, times, args.posters, args.posts):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
