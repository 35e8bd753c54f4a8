"""``troupe cluster status --store postgresql://…``: the nodes of a cluster and their shards.

It only reads (the cluster's tables, by PostgreSQL's clock); nothing is created or changed,
so it may run at any time beside the nodes.
"""

from __future__ import annotations

import trio

from .cluster import NodeInfo, PostgresCoordinator, ShardInfo

#: What ``--store`` must start with.
SCHEMES = ("postgresql://", "postgres://")


def _ranges(shards: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``0-2,5,7-8`` (``-`` for none)."""
    runs: list[list[int]] = []
    for shard in sorted(shards):
        if runs and shard == runs[-1][1] + 1:
            runs[-1][1] = shard
        else:
            runs.append([shard, shard])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) or "-"


def render(nodes: list[NodeInfo], shard_map: list[ShardInfo]) -> list[str]:
    """The status lines: a header, one line per node, and the shards nobody holds."""
    held: dict[str, list[int]] = {}
    free: list[int] = []
    for s in shard_map:
        if s.owner is None or s.lease_left_s <= 0:
            free.append(s.shard)
        else:
            held.setdefault(s.owner, []).append(s.shard)
    out = [
        f"{len(shard_map)} shards, {len(nodes)} nodes",
        f"{'NODE':<20} {'ADDRESS':<28} {'HEARTBEAT':>10} {'SHARDS':>6}  OWNS",
    ]
    for n in nodes:
        owns = held.pop(n.node_id, [])
        age = f"{n.heartbeat_age_s:.1f}s ago"
        out.append(
            f"{n.node_id:<20} {n.address or '-':<28} {age:>10} {len(owns):>6}  {_ranges(owns)}"
        )
    for owner, owns in sorted(held.items()):  # a lease still running for a node that left
        out.append(
            f"{owner:<20} {'(not registered)':<28} {'-':>10} {len(owns):>6}  {_ranges(owns)}"
        )
    out.append(f"unowned: {len(free)} (lease ran out, or never claimed)  {_ranges(free)}")
    return out


async def status(dsn: str, schema: str) -> list[str]:
    async with PostgresCoordinator(dsn, schema=schema, create=False) as coordinator:
        return render(await coordinator.nodes(), await coordinator.shard_map())


def main(store: str, schema: str) -> int:
    if not store.startswith(SCHEMES):
        raise ValueError(
            f"--store must be a PostgreSQL URL (postgresql://USER@HOST:PORT/DB), got {store!r}"
        )
    for line in trio.run(status, store, schema):
        print(line)
    return 0
