"""The pytest plugin: registered as an entry point, and its fixtures fit together."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest
import trio

from troupe import MemoryStore, Passport, SQLiteStore
from troupe.hub import Hub
from troupe.store import Store
from troupe.testing import CrashPoints, FaultyStore, TaskLeak, open_test_hub

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


async def test_open_test_hub_restarts_on_one_store_with_its_own_crash_points(
    autojump_clock: object,
) -> None:
    store = MemoryStore()
    async with open_test_hub(store, ttl_sweep_interval=0) as hub:
        assert hub.core.store is store
        assert isinstance(hub.core.faults, CrashPoints)
        assert hub.core.config.ttl_sweep_interval == 0
        passport = await hub.register(Passport(name="al"))
    points = CrashPoints()
    async with open_test_hub(store, faults=points) as again:
        assert again.core.faults is points
        assert again.find_agent_id("al") == passport.agent_id
    async with open_test_hub() as fresh:
        assert isinstance(fresh.core.store, MemoryStore)
        assert fresh.core.store is not store


async def test_open_test_hub_names_a_task_that_outlives_it(autojump_clock: object) -> None:
    async with trio.open_nursery() as outer:
        with pytest.raises(TaskLeak, match=r"1 task.*sleep_forever"):
            async with open_test_hub():
                outer.start_soon(trio.sleep_forever)
        outer.cancel_scope.cancel()


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
