"""The reliability suite runs every hub test on every engine (MemoryStore, SQLite, PostgreSQL).

(The Hypothesis machine and the soak build their stores with ``make_store`` and run on
memory and SQLite only: a PostgreSQL schema per Hypothesis example would cost minutes.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from troupe.store import PostgresStore, Store
from troupe.testing import make_store

from .._postgres import new_schema


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def troupe_hub_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Overrides the plugin's: every test here runs on every engine."""
    if request.param == "postgres":
        schema = new_schema(request.getfixturevalue("pg_schemas"))
        return PostgresStore(request.getfixturevalue("pg_dsn"), schema=schema, threaded=False)
    return make_store(request.param, tmp_path)
