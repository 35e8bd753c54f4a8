"""The pytest plugin: registered as an entry point, and its fixtures fit together."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest

from troupe import MemoryStore, SQLiteStore
from troupe.hub import Hub
from troupe.store import Store
from troupe.testing import CrashPoints, FaultyStore


def test_the_plugin_is_an_entry_point_and_is_loaded(pytestconfig: pytest.Config) -> None:
    points = importlib.metadata.entry_points(group="pytest11")
    assert [p.value for p in points if p.name == "troupe"] == ["troupe.testing._plugin"]
    assert pytestconfig.pluginmanager.has_plugin("troupe")


@pytest.mark.parametrize(
    ("hub_store", "engine"),
    [("memory", MemoryStore), ("sqlite", SQLiteStore)],
    indirect=["hub_store"],
)
async def test_the_hub_runs_on_the_chosen_engine_behind_the_fault_injectors(
    hub: Hub,
    hub_store: Store,
    store_faults: FaultyStore,
    crash_points: CrashPoints,
    engine: type[Any],
) -> None:
    assert isinstance(hub_store, engine)
    assert hub.core.store is store_faults
    assert store_faults.inner is hub_store
    assert hub.core.faults is crash_points


@pytest.fixture
def hub_options() -> dict[str, Any]:
    return {"session_max_restarts": 7, "snapshot_every": 2}


async def test_hub_options_reach_open_hub(hub: Hub) -> None:
    assert hub.core.config.session_max_restarts == 7
    assert hub.core.config.snapshot_every == 2


def test_an_unknown_engine_is_refused(tmp_path: Any) -> None:
    from troupe.testing import make_store

    with pytest.raises(ValueError, match="unknown store engine 'postgres'"):
        make_store("postgres", tmp_path)
