"""The tests' PostgreSQL: the server ``./dev test`` starts (``.ci/postgres``), one schema per test.

``TROUPE_TEST_POSTGRES`` holds the server's DSN. Without it the tests that need PostgreSQL
are skipped with that reason, except under CI (``CI`` set), where they fail: CI must run them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

ENV = "TROUPE_TEST_POSTGRES"


def postgres_dsn() -> str:
    """The test server's DSN; skips the test (fails it under CI) when there is none."""
    dsn = os.environ.get(ENV)
    if dsn:
        return dsn
    reason = (
        f"no PostgreSQL: {ENV} is not set (./dev test starts a throwaway server where "
        "PostgreSQL's initdb is installed)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests", pytrace=False)
    pytest.skip(reason)


def fresh_schemas(dsn: str) -> Iterator[list[str]]:
    """Names for fresh schemas (append them to the list); every one is dropped afterwards."""
    import psycopg

    schemas: list[str] = []
    yield schemas
    if schemas:
        # Bounded: a store a failed test left mid-transaction must not hang the teardown.
        with psycopg.connect(dsn, autocommit=True, options="-c lock_timeout=10s") as conn:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def new_schema(schemas: list[str]) -> str:
    """A schema name no other test uses (random: several runs may share one server)."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    schemas.append(schema)
    return schema
