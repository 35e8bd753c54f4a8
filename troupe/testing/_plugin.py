"""The pytest plugin (entry point ``troupe``): fixtures for testing agents against a hub.

Loaded automatically wherever troupe is installed, so every fixture's name starts with
``troupe_`` and none can clash with a project's own. The async fixtures need pytest-trio
(``trio_mode = true``, or ``@pytest.mark.trio`` on the test); without it they fail naming
it. Fixtures:

- ``troupe_hub_store``: the engine, a fresh ``MemoryStore``; parametrize it indirectly with
  ``"sqlite"`` (or use ``troupe_sqlite_hub_store``) for an ``SQLiteStore`` in ``tmp_path``.
- ``troupe_store_faults``: a :class:`FaultyStore` over ``troupe_hub_store``: the store the
  hub uses.
- ``troupe_crash_points``: a :class:`CrashPoints` the hub consults (``faults=``).
- ``troupe_hub_options``: extra ``open_hub`` keywords (override the fixture to change them).
- ``troupe_hub``: a running hub on all of the above, checked for leaked tasks when it closes.
- ``troupe_hub_client``: a ``HubClient`` connected to ``troupe_hub`` in process.

:func:`open_test_hub` is ``troupe_hub`` as an ``async with``, for a test that opens more than
one hub (a restart on one store) or chooses its store and options per call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from ..client import HubClient
from ..hub import Hub, open_hub
from ..store import MemoryStore, SQLiteStore, Store
from ..transport import LocalLink
from ._crash_points import CrashPoints
from ._faulty_store import FaultyStore
from ._invariants import no_task_leaks, seeded_ids

ENGINES = ("memory", "sqlite")

#: The fixtures that need an async-aware runner (pytest-trio).
ASYNC_FIXTURES = frozenset({"troupe_hub", "troupe_hub_client"})


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> None:
    """Without pytest-trio an async fixture would fail obscurely: name what is missing."""
    if fixturedef.argname in ASYNC_FIXTURES and not request.config.pluginmanager.has_plugin("trio"):
        pytest.fail(
            f"the {fixturedef.argname} fixture is async and needs pytest-trio: "
            "pip install pytest-trio, then set trio_mode = true (or mark the test "
            "@pytest.mark.trio)",
            pytrace=False,
        )


def make_store(engine: str, directory: Path) -> Store:
    """A fresh store of ``engine`` (``"memory"`` or ``"sqlite"``, a file in ``directory``).

    SQLite commits on the trio thread (``threaded=False``), as deterministic runs under
    ``MockClock`` need, with ``synchronous="NORMAL"`` (durability is the store's own tests').
    """
    if engine == "memory":
        return MemoryStore()
    if engine == "sqlite":
        return SQLiteStore(directory / "hub.db", synchronous="NORMAL", threaded=False)
    raise ValueError(f"unknown store engine {engine!r}; use one of {', '.join(ENGINES)}")


@asynccontextmanager
async def open_test_hub(
    store: Store | None = None, *, faults: CrashPoints | None = None, **options: Any
) -> AsyncIterator[Hub]:
    """A running hub for a test, checked for leaked tasks when it closes.

    Args:
      store: The hub's store; a fresh ``MemoryStore`` by default. Pass the same store to a
        second ``open_test_hub`` to test a restart.
      faults: The fault injector the hub consults; a fresh :class:`CrashPoints` by default.
      options: Further ``open_hub`` keywords.

    Raises:
      TaskLeak: a task the block started outlived it (only when the block succeeded).
    """
    with no_task_leaks():
        async with open_hub(
            store if store is not None else MemoryStore(),
            faults=faults if faults is not None else CrashPoints(),
            **options,
        ) as hub:
            yield hub


@pytest.fixture
def troupe_hub_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The hub's storage engine: a MemoryStore, or with ``indirect`` parametrization
    ``"sqlite"``, an SQLiteStore file in ``tmp_path``."""
    return make_store(getattr(request, "param", "memory"), tmp_path)


@pytest.fixture
def troupe_sqlite_hub_store(tmp_path: Path) -> Store:
    """An SQLiteStore in ``tmp_path``; override ``troupe_hub_store`` with it to run a module
    on SQLite."""
    return make_store("sqlite", tmp_path)


@pytest.fixture
def troupe_store_faults(troupe_hub_store: Store) -> FaultyStore:
    """The store ``troupe_hub`` runs on: ``troupe_hub_store`` behind a FaultyStore."""
    return FaultyStore(troupe_hub_store)


@pytest.fixture
def troupe_crash_points() -> CrashPoints:
    """``troupe_hub``'s fault injector: arm it to crash session actors."""
    return CrashPoints()


@pytest.fixture
def troupe_hub_options() -> dict[str, Any]:
    """Extra keyword arguments for ``open_hub`` in ``troupe_hub`` (none by default)."""
    return {}


@pytest.fixture
async def troupe_hub(
    troupe_store_faults: FaultyStore,
    troupe_crash_points: CrashPoints,
    troupe_hub_options: dict[str, Any],
) -> AsyncIterator[Hub]:
    """A running hub on ``troupe_store_faults`` with ``troupe_crash_points``, reproducible
    ids, and a check that no task outlives it."""
    options: dict[str, Any] = {"new_id": seeded_ids(0), **troupe_hub_options}
    async with open_test_hub(troupe_store_faults, faults=troupe_crash_points, **options) as hub:
        yield hub


@pytest.fixture
async def troupe_hub_client(troupe_hub: Hub) -> AsyncIterator[HubClient]:
    """A HubClient connected to ``troupe_hub`` in process; closed after the test."""
    async with HubClient(LocalLink(troupe_hub)) as client:
        yield client
