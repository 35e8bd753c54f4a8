"""A child that ends for good is forgotten as its incarnation ends, not later.

Before, the supervisor's control task forgot it when it got to the exit report, so a
``start_child`` with the same id right after the exit (a session actor started again after
it stopped) could raise ``ValueError: already has a child``, depending on which of the two
woken tasks trio ran first. Each test repeats the race enough times that the old behaviour
could not pass by luck (trio picks the order of a batch at random: 2**-20).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from troupe.actors import Actor
from troupe.supervisors import ChildSpec, open_dynamic_supervisor, open_supervisor

ROUNDS = 20


class Echo(Actor[str, str]):
    async def handle(self, msg: str) -> str:
        return msg


@pytest.mark.parametrize("restart", ["transient", "temporary"])
async def test_an_actor_stopped_normally_can_be_started_again_at_once(
    autojump_clock: trio.testing.MockClock, restart: Any
) -> None:
    async with open_dynamic_supervisor(name="sessions") as sup:
        for i in range(ROUNDS):
            ref = await sup.start_child(ChildSpec("s", Echo, restart=restart))
            assert ref is not None
            assert await ref.ask(f"hello {i}") == f"hello {i}"
            await ref.stop()
            assert "s" not in sup
            assert not ref.alive
        assert sup.statistics().restarts == 0


async def test_a_temporary_child_that_crashed_is_logged_and_forgotten(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    crashed = trio.Event()

    async def crasher(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await crashed.wait()
        raise RuntimeError("boom")

    async with open_supervisor(name="root") as sup:
        for _ in range(ROUNDS):
            crashed = trio.Event()
            await sup.start_child(ChildSpec("t", crasher, restart="temporary"))
            crashed.set()
            await trio.testing.wait_all_tasks_blocked()
            assert "t" not in sup
        assert sup.statistics().restarts == 0
    crashes = [r for r in caplog.records if r.levelname == "ERROR" and "crashed" in r.message]
    assert len(crashes) == ROUNDS
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in crashes)


async def test_a_permanent_child_that_stops_is_still_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor(name="root") as sup:
        ref = await sup.start_child(ChildSpec("p", Echo))
        assert ref is not None
        await ref.stop()
        await trio.testing.wait_all_tasks_blocked()
        assert "p" in sup
        assert await ref.ask("again") == "again"
        assert sup.statistics().restarts == 1


async def test_a_normal_exit_is_not_logged_at_info(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # ``troupe serve`` logged an INFO line with these internals on every client disconnect.
    caplog.set_level("DEBUG", logger="troupe")
    async with open_dynamic_supervisor(name="endpoints") as sup:
        ref = await sup.start_child(ChildSpec("c", Echo, restart="temporary"))
        assert ref is not None
        await ref.stop()
        await trio.testing.wait_all_tasks_blocked()
    exits = [r for r in caplog.records if "exited and is not restarted" in r.getMessage()]
    assert [r.levelname for r in exits] == ["DEBUG"]
