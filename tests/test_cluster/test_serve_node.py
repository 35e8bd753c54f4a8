"""``troupe serve --store postgresql://…`` as a real process: one node of a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from troupe import EV_TEXT, HubClient, Passport
from troupe.cli import main
from troupe.cluster import PostgresCoordinator
from troupe.store import PostgresStore
from troupe.transport import WsLink

from .._postgres import new_schema
from ..test_transport._wire import QUIET, Echo, eventually
from ._processes import spawn_node


async def _owned(dsn: str, schema: str) -> dict[str, tuple[str, int]]:
    async with PostgresCoordinator(dsn, schema=schema, create=False) as c:
        return {n.node_id: (n.address, n.shards) for n in await c.nodes()}


@pytest.mark.slow
async def test_a_node_serves_its_shards_and_hands_them_over_when_stopped(
    pg_dsn: str, pg_schemas: list[str], tmp_path: Path
) -> None:
    schema = new_schema(pg_schemas)
    node = await spawn_node(pg_dsn, schema, "n1", tmp_path, "--shards", "8")
    try:
        url = node.url
        with trio.fail_after(20):
            async with HubClient(WsLink(url, ping_interval=QUIET)) as hc:
                await hc.register(Echo(), Passport(name="echo"))
                me = await hc.register_human(Passport(name="me"))
                ch = await me.open(type="consulting", target="echo")
                await me.send(ch.session_id, "hi")
                await me.wait_for_channel_event(
                    channel_id=ch.session_id,
                    predicate=lambda e: e.event_type == EV_TEXT and e.sender_id != me.agent_id,
                    timeout=5,
                )

            # It owns every shard, and advertises the port it bound (the next tick says so).
            async def owns_all() -> bool:
                return await _owned(pg_dsn, schema) == {"n1": (url, 8)}

            with trio.fail_after(10):
                await eventually(owns_all, every=0.1)
            assert await node.stop() == 0
    finally:
        await node.discard()
    text = node.log.read_text()
    assert "cluster node n1" in text
    assert "Traceback" not in text
    # It left: no node, every shard free at once.
    assert await _owned(pg_dsn, schema) == {}
    async with PostgresStore(pg_dsn, schema=schema, exclusive=False) as store:
        wal = await store.read(ch.session_id)
    assert [e.text for e in wal if e.event_type == EV_TEXT] == ["hi", "echo: hi"]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--store", "hub.db"], "--store must be a PostgreSQL URL"),
        (["--store", "postgresql://x/y", "--db", "a.db"], "not both"),
        (["--node-id", "n1"], "--node-id is for a cluster node"),
        (["--store", "postgresql://x/y", "--node-id", "a b"], "node_id must be"),
        (["--store", "postgresql://x/y", "--shards", "0"], "shards must be"),
        (["--lease", "8"], "--lease is for a cluster node"),
        (["--store", "postgresql://x/y", "--lease", "6"], "lease_s must exceed"),
        (["--store", "postgresql://x/y", "--lease", "8", "--tick", "4"], "tick_s must be"),
        (["--store", "postgresql://x/y", "--margin", "0"], "margin_s must be > 0"),
        (["--cluster-key-file", "key"], "--cluster-key-file is for a cluster node"),
        (
            ["--store", "postgresql://x/y", "--cluster-key-file", "/nonexistent/key"],
            "cannot read the cluster key from /nonexistent/key",
        ),
    ],
)
def test_bad_cluster_options_exit_2_naming_the_option(
    args: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *args]) == 2
    assert complaint in capsys.readouterr().err


def test_a_short_cluster_key_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "key"
    key.write_text("too short\n")
    args = ["serve", "--store", "postgresql://x/y", "--cluster-key-file", str(key)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--cluster-key-file {key}" in err
    assert "at least 16 characters" in err
    assert "too short" not in err  # the key itself is never shown
