"""The pytest plugin: registered as an entry point, and its fixtures fit together."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest

from troupe import MemoryStore, SQLiteStore
from troupe.hub import Hub
from troupe.store import Store
from troupe.testing import CrashPoints, FaultyStore

pytest_plugins = ["pytester"]


def test_the_plugin_is_an_entry_point_and_is_loaded(pytestconfig: pytest.Config) -> None:
    points = importlib.metadata.entry_points(group="pytest11")
    assert [p.value for p in points if p.name == "troupe"] == ["troupe.testing._plugin"]
    assert pytestconfig.pluginmanager.has_plugin("troupe")


@pytest.mark.parametrize(
    ("troupe_hub_store", "engine"),
    [("memory", MemoryStore), ("sqlite", SQLiteStore)],
    indirect=["troupe_hub_store"],
)
async def test_the_hub_runs_on_the_chosen_engine_behind_the_fault_injectors(
    troupe_hub: Hub,
    troupe_hub_store: Store,
    troupe_store_faults: FaultyStore,
    troupe_crash_points: CrashPoints,
    engine: type[Any],
) -> None:
    assert isinstance(troupe_hub_store, engine)
    assert troupe_hub.core.store is troupe_store_faults
    assert troupe_store_faults.inner is troupe_hub_store
    assert troupe_hub.core.faults is troupe_crash_points


@pytest.fixture
def troupe_hub_options() -> dict[str, Any]:
    return {"session_max_restarts": 7, "snapshot_every": 2}


async def test_hub_options_reach_open_hub(troupe_hub: Hub) -> None:
    assert troupe_hub.core.config.session_max_restarts == 7
    assert troupe_hub.core.config.snapshot_every == 2


def test_an_unknown_engine_is_refused(tmp_path: Any) -> None:
    from troupe.testing import make_store

    with pytest.raises(ValueError, match="unknown store engine 'postgres'"):
        make_store("postgres", tmp_path)


def test_the_fixtures_are_prefixed_so_they_cannot_clash(pytestconfig: pytest.Config) -> None:
    # The plugin loads in every project that installs troupe: no bare "hub" or "hub_client".
    plugin = pytestconfig.pluginmanager.get_plugin("troupe")
    names = {
        name
        for name in dir(plugin)
        if getattr(getattr(plugin, name), "_fixture_function_marker", None) is not None
        or type(getattr(plugin, name)).__name__ == "FixtureFunctionDefinition"
    }
    assert names == {
        "troupe_hub",
        "troupe_hub_client",
        "troupe_hub_options",
        "troupe_hub_store",
        "troupe_sqlite_hub_store",
        "troupe_store_faults",
        "troupe_crash_points",
    }


def test_without_pytest_trio_the_failure_names_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        async def test_uses_the_hub(troupe_hub_client):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:trio", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*the troupe_hub fixture is async and needs pytest-trio: pip install pytest-trio*"]
    )
