"""What leaves ``open_hub``'s block: the body's or the start's own error, bare."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from troupe import StoreError, open_hub
from troupe.store import MemoryStore, PostgresStore, SQLiteStore, Store
from troupe.testing import FaultyStore

from .._postgres import new_schema


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "postgres":
        schema = new_schema(request.getfixturevalue("pg_schemas"))
        return PostgresStore(request.getfixturevalue("pg_dsn"), schema=schema, threaded=False)
    return SQLiteStore(tmp_path / "hub.db", synchronous="NORMAL", threaded=False)


async def test_a_body_error_leaves_the_hub_bare(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(KeyError, match="mine") as caught:
        async with open_hub(store, ttl_sweep_interval=0, passivate_after=None):
            raise KeyError("mine")
    assert type(caught.value) is KeyError


async def test_a_store_error_while_starting_leaves_the_hub_bare(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FaultyStore(MemoryStore())
    store.fail_next("load_agents", 1)
    with pytest.raises(StoreError, match="load_agents") as caught:
        async with open_hub(store, ttl_sweep_interval=0, passivate_after=None):
            pytest.fail("the hub started")
    assert type(caught.value) is StoreError
