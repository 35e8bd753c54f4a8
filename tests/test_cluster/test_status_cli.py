"""``troupe cluster status --store postgresql://…`` on the test PostgreSQL, in process."""

from __future__ import annotations

import pytest
import trio

from troupe._cluster_cli import _ranges
from troupe.cli import main
from troupe.cluster import PostgresCoordinator

from .._postgres import new_schema


async def _two_nodes(dsn: str, schema: str) -> None:
    async with PostgresCoordinator(dsn, schema=schema) as c:
        await c.join("node-a", "ws://10.0.0.1:8765", 8)
        await c.join("node-b", "ws://10.0.0.2:8765", 8)
        await c.claim("node-a", 30.0, 3)
        await c.claim("node-b", 30.0, 2)
        await c.release("node-b", [4])


def test_status_prints_each_node_its_address_heartbeat_and_shards(
    pg_dsn: str, pg_schemas: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    schema = new_schema(pg_schemas)
    trio.run(_two_nodes, pg_dsn, schema)
    assert main(["cluster", "status", "--store", pg_dsn, "--schema", schema]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "8 shards, 2 nodes"
    a, b = lines[2].split(), lines[3].split()
    assert a[:2] == ["node-a", "ws://10.0.0.1:8765"]
    assert a[-2:] == ["3", "0-2"]
    assert b[:2] == ["node-b", "ws://10.0.0.2:8765"]
    assert b[-2:] == ["1", "3"]
    assert float(a[2].removesuffix("s")) < 30  # "0.0s ago"
    assert lines[4].startswith("unowned: 4 ")
    assert lines[4].endswith("4-7")


def test_status_of_a_schema_without_a_cluster_says_so_and_creates_nothing(
    pg_dsn: str, pg_schemas: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    schema = new_schema(pg_schemas)
    assert main(["cluster", "status", "--store", pg_dsn, "--schema", schema]) == 1
    assert f"no cluster in schema {schema!r}" in capsys.readouterr().err
    with psycopg.connect(pg_dsn) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        assert found.fetchone() is None


def test_status_wants_a_postgresql_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "status", "--store", "hub.db"]) == 2
    assert "--store must be a PostgreSQL URL" in capsys.readouterr().err


def test_shard_lists_print_as_ranges() -> None:
    assert _ranges([7, 0, 1, 2, 5, 8]) == "0-2,5,7-8"
    assert _ranges([]) == "-"
