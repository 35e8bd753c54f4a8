"""Every behavioural store test runs against every engine.

``sqlite`` commits in a worker thread (the default); ``sqlite-inline`` commits on the trio
thread, as deterministic simulations run it. ``faulty`` is a MemoryStore behind
``troupe.testing.FaultyStore`` with nothing armed: the wrapper must keep the whole contract.
``postgres`` is a PostgresStore in a fresh schema of the test server (``tests._postgres``;
skipped where there is none, except under CI).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from troupe.store import MemoryStore, PostgresStore, SQLiteStore, Store
from troupe.testing import FaultyStore

from .._postgres import new_schema

#: Makes a Store over the same data each time it is called (a hub restart on one store).
Reopen = Callable[[], Store]


@pytest.fixture(params=["memory", "sqlite", "sqlite-inline", "faulty", "postgres"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Reopen:
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        schema = new_schema(request.getfixturevalue("pg_schemas"))
        return lambda: PostgresStore(dsn, schema=schema)
    path = tmp_path / "hub.db"
    memory = MemoryStore()
    makers: dict[str, Reopen] = {
        "memory": lambda: memory,
        # NORMAL keeps the suite fast; durability itself is tested with a real kill -9.
        "sqlite": lambda: SQLiteStore(path, synchronous="NORMAL"),
        "sqlite-inline": lambda: SQLiteStore(path, synchronous="NORMAL", threaded=False),
        "faulty": lambda: FaultyStore(memory),
    }
    return makers[request.param]


@pytest.fixture
async def store(reopen: Reopen) -> AsyncIterator[Store]:
    async with reopen() as opened:
        yield opened
