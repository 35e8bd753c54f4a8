"""A client whose node dies re-binds on a live node and is replayed what it had not acked.

Three real ``troupe serve --store … --cluster-key-file`` nodes. ann (a person) posts in
her broadcast to bob at the node that owns it; bob listens at another node. That node is
killed (``kill -9``) while ann goes on posting; bob attaches at the third node and must get
every text he had not acked, from the store, through that node: nothing ann saw accepted is
missing from what bob received, and his cursor ends at the last seq.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio

from troupe import EV_TEXT, ConnectionLost, HubClient, HumanClient
from troupe.cluster import PostgresCoordinator, shard_of
from troupe.store import PostgresStore
from troupe.transport import WsLink

from .._postgres import new_schema
from ..test_transport._wire import QUIET, eventually
from ._processes import NodeProcess, ann_and_bob, keyed_text, owners, spawn_node

SHARDS = 6
LEASE_S, TICK_S, MARGIN_S = 6.5, 0.5, 1.0
OPTIONS = (
    *("--shards", str(SHARDS), "--lease", str(LEASE_S), "--tick", str(TICK_S)),
    *("--margin", str(MARGIN_S)),
)
#: Texts ann posts while bob listens at his first node, and after it died.
BEFORE, AFTER = 8, 8


async def _texts(me: HumanClient, heard: dict[int, str | None], count: int) -> None:
    """Take texts until ``count`` distinct seqs were heard (a repeat is at least once)."""
    while len(heard) < count:
        envelope = await me.next_envelope(predicate=lambda e: e.event_type == EV_TEXT)
        heard[envelope.seq] = envelope.text


@pytest.mark.slow
async def test_a_client_whose_node_dies_rebinds_elsewhere_and_is_replayed_what_it_missed(
    pg_dsn: str, pg_schemas: list[str], tmp_path: Path
) -> None:
    schema = new_schema(pg_schemas)
    ann, bob, sid = await ann_and_bob(
        pg_dsn,
        schema,
        shards=SHARDS,
        timing=(LEASE_S, TICK_S, MARGIN_S),
        seed=73,
        manifest_type="broadcast",
    )
    key = tmp_path / "cluster.key"
    key.write_text("a cluster key long enough to pass\n")
    nodes: dict[str, NodeProcess] = {}
    try:
        async with PostgresCoordinator(pg_dsn, schema=schema, create=False) as coordinator:
            for node_id in ("a", "b", "c"):
                nodes[node_id] = await spawn_node(
                    pg_dsn, schema, node_id, tmp_path, *OPTIONS, "--cluster-key-file", str(key)
                )
            found: dict[int, tuple[str, str]] = {}

            async def settled() -> bool:
                found.clear()
                found.update(await owners(coordinator))
                held = sorted(o for o, _ in found.values())
                return held == ["a", "a", "b", "b", "c", "c"] and all(
                    address == nodes[o].url for o, address in found.values()
                )

            with trio.fail_after(20):
                await eventually(settled, every=0.1)
            owner = nodes[found[shard_of(sid, SHARDS)][0]]
            first, last = (n for n in nodes.values() if n is not owner)

            heard: dict[int, str | None] = {}
            accepted: dict[str, int] = {}
            with trio.fail_after(60):
                async with HubClient(WsLink(owner.url, ping_interval=QUIET)) as at_owner:
                    await at_owner.attach(None, "ann")
                    # bob at a node that does not own the session: ann's texts reach him as
                    # hints; he takes (and so acks) each one.
                    with contextlib.suppress(ConnectionLost):
                        async with HubClient(
                            WsLink(first.url, ping_interval=QUIET), reconnect_within=1.0
                        ) as at_first:
                            me = await at_first.attach(None, "bob")
                            assert isinstance(me, HumanClient)
                            for i in range(BEFORE):
                                body = f"before {i}"
                                accepted[body] = (
                                    await at_owner.post(keyed_text(sid, ann, body))
                                ).seq
                                await _texts(me, heard, i + 1)
                            first.process.kill()  # kill -9 bob's node
                            assert await first.process.wait() != 0
                            # ann goes on at the owner while bob has no node.
                            for i in range(AFTER):
                                body = f"after {i}"
                                accepted[body] = (
                                    await at_owner.post(keyed_text(sid, ann, body))
                                ).seq
                    # bob attaches at the third node: replayed what he had not acked.
                    async with HubClient(WsLink(last.url, ping_interval=QUIET)) as at_last:
                        me = await at_last.attach(None, "bob")
                        assert isinstance(me, HumanClient)
                        await _texts(me, heard, BEFORE + AFTER)
            assert len(accepted) == BEFORE + AFTER
            assert {seq: body for body, seq in accepted.items()} == heard

            async with PostgresStore(pg_dsn, schema=schema, exclusive=False) as store:
                wal = await store.read(sid)
                texts = {e.seq: e.text for e in wal if e.event_type == EV_TEXT}
                assert texts == heard  # each text once, at the seq its poster got
                end = max(heard)

                async def acked() -> bool:
                    return (await store.load_cursors(bob)).get(sid, 0) >= end

                with trio.fail_after(10):  # (the client saves its cursor on close)
                    await eventually(acked, every=0.1)
            for node in nodes.values():
                if node is not first:
                    with trio.fail_after(20):
                        assert await node.stop() == 0
    finally:
        for node in nodes.values():
            await node.discard()
