"""Fixtures of the hub tests: a running hub on a MemoryStore (see ``tests.harness``)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from troupe.hub import Hub
from troupe.store import MemoryStore, PostgresStore, SQLiteStore, Store

from .._postgres import new_schema
from ..harness import HubPair, open_hub_pair


@pytest.fixture
async def h() -> AsyncIterator[HubPair]:
    """A hub on a fresh MemoryStore, sweeper off, with fake clients (a ``HubPair``)."""
    async with open_hub_pair() as harness:
        yield harness


@pytest.fixture
async def hub(h: HubPair) -> Hub:
    """The harness's hub."""
    return h.hub


#: Makes a Store over the same data each time it is called (a hub restart on one store).
Reopen = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Reopen:
    """Each restart test runs on a MemoryStore, an SQLite file and a PostgreSQL schema.

    SQLite and PostgreSQL run on the trio thread (``threaded=False``), as deterministic runs
    under the autojump clock need; ``NORMAL`` keeps SQLite fast (durability is the store's
    own tests').
    """
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        schema = new_schema(request.getfixturevalue("pg_schemas"))
        return lambda: PostgresStore(dsn, schema=schema, threaded=False)
    path = tmp_path / "hub.db"
    memory = MemoryStore()
    makers: dict[str, Reopen] = {
        "memory": lambda: memory,
        "sqlite": lambda: SQLiteStore(path, synchronous="NORMAL", threaded=False),
    }
    return makers[request.param]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Makes a fresh, empty store of one engine each time it is called."""
    count = itertools.count()
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        schemas = request.getfixturevalue("pg_schemas")

    def make() -> Store:
        if request.param == "memory":
            return MemoryStore()
        if request.param == "postgres":
            return PostgresStore(dsn, schema=new_schema(schemas), threaded=False)
        path = tmp_path / f"hub-{next(count)}.db"
        return SQLiteStore(path, synchronous="NORMAL", threaded=False)

    return make
