"""``Supervisor.on_crash``: every crash of a running child is reported, with its fate."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from troupe.supervisors import open_dynamic_supervisor, open_supervisor

from ._children import Log, Puppet, settle, start_actor, worker

Crash = tuple[str, str, str, bool]


def recorder(seen: list[Crash]) -> Callable[[str, Exception, bool], None]:
    def on_crash(child_id: str, error: Exception, restarting: bool) -> None:
        seen.append((child_id, type(error).__name__, str(error), restarting))

    return on_crash


async def test_each_crash_is_reported_then_the_give_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    seen: list[Crash] = []
    given_up: list[str] = []

    async def on_give_up(child_id: str, crash: BaseException | None) -> None:
        given_up.append(f"{child_id} given up after {len(seen)} reports")

    async with open_dynamic_supervisor(max_restarts=2, within_s=10, on_give_up=on_give_up) as sup:
        sup.on_crash = recorder(seen)
        s1 = await start_actor(sup, worker("s1", log, restart="transient"))
        s2 = await start_actor(sup, worker("s2", log, restart="transient"))
        for _ in range(3):
            await s1.tell("crash")
            await settle()
        await s2.stop()  # an orderly exit is no crash
        await settle()
    assert seen == [
        ("s1", "ValueError", "s1 crashed", True),
        ("s1", "ValueError", "s1 crashed", True),
        ("s1", "ValueError", "s1 crashed", False),
    ]
    assert given_up == ["s1 given up after 3 reports"]  # the report comes first


async def test_a_child_that_is_not_restarted_is_reported_as_such(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    seen: list[Crash] = []
    temp, perm = Puppet("temp", log), Puppet("perm", log)
    async with open_supervisor("one_for_one", max_restarts=5, within_s=10) as sup:
        sup.on_crash = recorder(seen)
        await sup.start_child(temp.spec(restart="temporary"))
        await sup.start_child(perm.spec())
        temp.order("crash")
        await settle()
        perm.order("exit")  # restarted (permanent), but it did not crash
        await settle()
        perm.order("crash")
        await settle()
        assert [c.id for c in sup.which_children()] == ["perm"]
    assert seen == [
        ("temp", "ValueError", "temp crashed", False),
        ("perm", "ValueError", "perm crashed", True),
    ]


async def test_a_hook_that_fails_is_logged_and_the_child_still_restarts(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log()

    def broken(child_id: str, error: Exception, restarting: bool) -> None:
        raise RuntimeError("the audit log is gone")

    async with open_dynamic_supervisor(name="sessions") as sup:
        sup.on_crash = broken
        ref = await start_actor(sup, worker("s", log, restart="transient"))
        await ref.tell("crash")
        await settle()
        assert await ref.ask("ping") == "s:ping"
        assert sup.statistics().restarts == 1
    assert "sessions: on_crash failed for child 's'" in caplog.text
