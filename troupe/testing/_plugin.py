"""The pytest plugin (entry point ``troupe``): fixtures for testing agents against a hub.

Loaded automatically wherever troupe is installed. The async fixtures need pytest-trio
(``trio_mode = true``, or ``@pytest.mark.trio`` on the test). Fixtures:

- ``hub_store``: the engine, a fresh ``MemoryStore``; parametrize it indirectly with
  ``"sqlite"`` (or use ``sqlite_hub_store``) for an ``SQLiteStore`` in ``tmp_path``.
- ``store_faults``: a :class:`FaultyStore` over ``hub_store``: the store the hub uses.
- ``crash_points``: a :class:`CrashPoints` the hub consults (``faults=``).
- ``hub_options``: extra ``open_hub`` keywords (override the fixture to change them).
- ``hub``: a running hub on all of the above, checked for leaked tasks when it closes.
- ``hub_client``: a ``HubClient`` connected to ``hub`` in process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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


@pytest.fixture
def hub_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The hub's storage engine: a MemoryStore, or with ``indirect`` parametrization
    ``"sqlite"``, an SQLiteStore file in ``tmp_path``."""
    return make_store(getattr(request, "param", "memory"), tmp_path)


@pytest.fixture
def sqlite_hub_store(tmp_path: Path) -> Store:
    """An SQLiteStore in ``tmp_path``; override ``hub_store`` with it to run a module on SQLite."""
    return make_store("sqlite", tmp_path)


@pytest.fixture
def store_faults(hub_store: Store) -> FaultyStore:
    """The store the ``hub`` fixture runs on: ``hub_store`` behind a FaultyStore."""
    return FaultyStore(hub_store)


@pytest.fixture
def crash_points() -> CrashPoints:
    """The ``hub`` fixture's fault injector: arm it to crash session actors."""
    return CrashPoints()


@pytest.fixture
def hub_options() -> dict[str, Any]:
    """Extra keyword arguments for ``open_hub`` in the ``hub`` fixture (none by default)."""
    return {}


@pytest.fixture
async def hub(
    store_faults: FaultyStore, crash_points: CrashPoints, hub_options: dict[str, Any]
) -> AsyncIterator[Hub]:
    """A running hub on ``store_faults`` with ``crash_points``, reproducible ids, and a check
    that no task outlives it."""
    options: dict[str, Any] = {"new_id": seeded_ids(0), **hub_options}
    with no_task_leaks():
        async with open_hub(store_faults, faults=crash_points, **options) as running:
            yield running


@pytest.fixture
async def hub_client(hub: Hub) -> AsyncIterator[HubClient]:
    """A HubClient connected to ``hub`` in process; closed after the test."""
    async with HubClient(LocalLink(hub)) as client:
        yield client
