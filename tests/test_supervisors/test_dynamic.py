"""The dynamic supervisor: per-child intensity, on_give_up, siblings unaffected."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe import ActorDead
from troupe.supervisors import open_dynamic_supervisor

from ._children import Log, settle, start_actor, worker


async def test_a_child_over_its_intensity_is_given_up_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    given_up: list[tuple[str, BaseException | None]] = []

    async def on_give_up(child_id: str, crash: BaseException | None) -> None:
        given_up.append((child_id, crash))

    async with open_dynamic_supervisor(max_restarts=2, within_s=10, on_give_up=on_give_up) as sup:
        s1 = await start_actor(sup, worker("s1", log, restart="transient"))
        s2 = await start_actor(sup, worker("s2", log, restart="transient"))
        for _ in range(3):
            await s1.tell("crash")
            await settle()
        assert [(cid, str(crash)) for cid, crash in given_up] == [("s1", "s1 crashed")]
        assert not s1.alive
        with pytest.raises(ActorDead):
            await s1.ask("still there?")
        # s2 has its own window: two crashes are fine, and it keeps serving.
        for _ in range(2):
            await s2.tell("crash")
            await settle()
        assert await s2.ask("ping") == "s2:ping"
        assert [c.id for c in sup.which_children()] == ["s2"]
        assert sup.statistics().restarts_by_child == {"s2": 2}
    assert log.count("start s1") == 3


async def test_without_a_hook_the_child_is_just_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_dynamic_supervisor(max_restarts=0) as sup:
        ref = await start_actor(sup, worker("s", log))
        await ref.tell("crash")
        await settle()
        assert len(sup) == 0
        assert not ref.alive


async def test_shutdown_stops_all_children_concurrently(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_dynamic_supervisor() as sup:
        for i in range(5):
            await sup.start_child(worker(f"s{i}", log, stop_takes=1.0))
        start = trio.current_time()
    assert trio.current_time() - start == pytest.approx(1.0)
    assert sorted(e for e in log if e.startswith("stop")) == [f"stop s{i}" for i in range(5)]
