"""Two real ``troupe serve --store … --cluster-key-file`` nodes route between themselves.

ann and bob (people) are registered, and their conversation opened, before the nodes start
(each node loads them; the registry is not shared yet). ann connects to the node that owns
the session, bob to the other one. Each posts in turn and waits for the other's text: bob's
posts are forwarded to the owner over the nodes' peer link, and ann's reach bob through a
hint to his node. Every post lands once, in order, and both cursors end at the last seq.
"""

from __future__ import annotations

from pathlib import Path

import trio

from troupe import EV_TEXT, HubClient, HumanClient
from troupe.cluster import PostgresCoordinator, shard_of
from troupe.store import PostgresStore
from troupe.transport import WsLink

from .._postgres import new_schema
from ..test_transport._wire import QUIET, eventually
from ._processes import NodeProcess, ann_and_bob, keyed_text, owners, spawn_node

SHARDS = 4
LEASE_S, TICK_S, MARGIN_S = 6.5, 0.5, 1.0
TIMING = ("--shards", str(SHARDS), "--lease", str(LEASE_S), "--tick", str(TICK_S))
OPTIONS = (*TIMING, "--margin", str(MARGIN_S))
ROUNDS = 3


async def test_two_served_nodes_route_posts_and_deliveries_between_their_clients(
    pg_dsn: str, pg_schemas: list[str], tmp_path: Path
) -> None:
    schema = new_schema(pg_schemas)
    ann, bob, sid = await ann_and_bob(
        pg_dsn,
        schema,
        shards=SHARDS,
        timing=(LEASE_S, TICK_S, MARGIN_S),
        seed=61,
        manifest_type="conversation",
    )
    key = tmp_path / "cluster.key"
    key.write_text("a cluster key long enough to pass\n")
    nodes: dict[str, NodeProcess] = {}
    try:
        async with PostgresCoordinator(pg_dsn, schema=schema, create=False) as coordinator:
            for node_id in ("a", "b"):
                nodes[node_id] = await spawn_node(
                    pg_dsn, schema, node_id, tmp_path, *OPTIONS, "--cluster-key-file", str(key)
                )
            shard = shard_of(sid, SHARDS)
            found: dict[int, tuple[str, str]] = {}

            async def settled() -> bool:
                found.update(await owners(coordinator))
                held = sorted(o for o, _ in found.values())
                return held == ["a", "a", "b", "b"] and all(
                    address == nodes[o].url for o, address in found.values()
                )

            with trio.fail_after(20):
                await eventually(settled, every=0.1)
            owner = nodes[found[shard][0]]
            other = next(n for n in nodes.values() if n is not owner)

            with trio.fail_after(30):
                async with (
                    HubClient(WsLink(owner.url, ping_interval=QUIET)) as at_owner,
                    HubClient(WsLink(other.url, ping_interval=QUIET)) as elsewhere,
                ):
                    me_ann = await at_owner.attach(None, "ann")
                    me_bob = await elsewhere.attach(None, "bob")
                    assert isinstance(me_ann, HumanClient)
                    assert isinstance(me_bob, HumanClient)
                    seqs = []
                    for i in range(ROUNDS):
                        # ann at the owner; bob hears it through a hint to his node.
                        seqs.append(await at_owner.post(keyed_text(sid, ann, f"ann {i}")))
                        heard = await me_bob.next_envelope(
                            predicate=lambda e: e.event_type == EV_TEXT
                        )
                        assert heard.text == f"ann {i}"
                        # bob elsewhere: his post is forwarded to the owner.
                        seqs.append(await elsewhere.post(keyed_text(sid, bob, f"bob {i}")))
                        heard = await me_ann.next_envelope(
                            predicate=lambda e: e.event_type == EV_TEXT
                        )
                        assert heard.text == f"bob {i}"
                    # A repeat of bob's last post (same key) through his node: the original.
                    again = await elsewhere.post(keyed_text(sid, bob, f"bob {ROUNDS - 1}"))
                    assert again.envelope_id == seqs[-1].envelope_id
                    assert again.duplicate
                    last = seqs[-1].seq

            async with PostgresStore(pg_dsn, schema=schema, exclusive=False) as store:
                wal = await store.read(sid)
                texts = [(e.text, e.seq) for e in wal if e.event_type == EV_TEXT]
                expected = [t for i in range(ROUNDS) for t in (f"ann {i}", f"bob {i}")]
                assert texts == list(zip(expected, [s.seq for s in seqs], strict=True))
                assert [e.seq for e in wal] == list(range(1, len(wal) + 1))

                async def acked() -> bool:
                    a = (await store.load_cursors(ann)).get(sid, 0)
                    b = (await store.load_cursors(bob)).get(sid, 0)
                    return a >= last - 1 and b >= last - 1

                # (Each has acked the other's last text; the client saves it on close.)
                with trio.fail_after(10):
                    await eventually(acked, every=0.1)
            for node in nodes.values():
                with trio.fail_after(20):
                    assert await node.stop() == 0
    finally:
        for node in nodes.values():
            await node.discard()
