"""Shutdown: reverse start order, one child at a time, shutdown_s, terminate_child, no leaks."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe import ActorDead
from troupe.supervisors import ChildSpec, open_supervisor

from ._children import Log, Puppet, Worker, settle, start_actor, worker


class TimedLog(Log):
    """A log whose entries carry the mock-clock time: ``"2.0 stop b"``."""

    def append(self, event: str) -> None:
        super().append(f"{trio.current_time():.1f} {event}")


async def test_children_stop_in_reverse_order_each_waited_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = TimedLog()
    f = Puppet("f", log)
    async with open_supervisor() as sup:
        await sup.start_child(worker("a", log, stop_takes=1.0))
        await sup.start_child(f.spec())
        await sup.start_child(worker("c", log, stop_takes=2.0))
        await trio.sleep(10)
    # c takes 2 s to stop, and f is not touched before c is done; f is cancelled at once.
    assert log == [
        "0.0 start a",
        "0.0 start f",
        "0.0 start c",
        "12.0 stop c",
        "12.0 finally f",
        "13.0 stop a",
    ]


async def test_an_actor_child_is_cancelled_after_shutdown_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = TimedLog()
    async with open_supervisor() as sup:
        await sup.start_child(worker("a", log))
        stuck = await start_actor(sup, worker("stuck", log, shutdown_s=3.0))
        await stuck.tell("hang")
    # No "stop stuck": it never got to on_stop; a was stopped only after the 3 s.
    assert log == ["0.0 start a", "0.0 start stuck", "3.0 stop a"]
    assert not stuck.alive


async def test_shutdown_s_zero_cancels_an_actor_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = TimedLog()
    async with open_supervisor() as sup:
        await sup.start_child(worker("a", log, shutdown_s=0, stop_takes=1.0))
    assert log == ["0.0 start a"]


async def test_cancel_stops_the_children_and_ends_the_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor() as sup:
        await sup.start_child(worker("a", log))
        await sup.start_child(worker("b", log))
        sup.cancel()
        sup.cancel()  # idempotent
        await trio.sleep(1000)
    assert trio.current_time() < 1000
    assert log == ["start a", "start b", "stop b", "stop a"]


async def test_cancel_then_leaving_the_block_stops_each_child_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = TimedLog()
    async with open_supervisor() as sup:
        await sup.start_child(worker("a", log, stop_takes=1.0))
        await sup.start_child(worker("b", log, stop_takes=1.0))
        sup.cancel()
    assert log == ["0.0 start a", "0.0 start b", "1.0 stop b", "2.0 stop a"]


async def test_start_child_is_refused_while_shutting_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor(name="sup") as sup:
        await sup.start_child(worker("a", log, stop_takes=1.0))
        sup.cancel()
        await settle()
        with pytest.raises(RuntimeError, match="'sup' is shutting down"):
            await sup.start_child(worker("b", log))


async def test_an_outer_cancel_still_stops_children_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = TimedLog()
    with trio.move_on_after(5):
        async with open_supervisor() as sup:
            await sup.start_child(worker("a", log, stop_takes=1.0))
            await sup.start_child(worker("b", log, stop_takes=1.0))
            await trio.sleep_forever()
    assert log == ["0.0 start a", "0.0 start b", "6.0 stop b", "7.0 stop a"]


async def test_a_cancelled_start_child_cancels_the_child_that_was_starting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class SlowStart(Worker):
        async def on_start(self) -> None:
            self.log.append("starting")
            await trio.sleep_forever()

    log = Log()
    with trio.fail_after(5):
        async with open_supervisor() as sup:
            with trio.move_on_after(1) as scope:
                await sup.start_child(ChildSpec("slow", lambda: SlowStart("slow", log)))
            assert scope.cancelled_caught
            assert len(sup) == 0
    assert log == ["starting"]


async def test_a_child_ready_after_its_starter_was_cancelled_is_stopped_and_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Its start shields itself past the starter's deadline: it becomes ready after the
    # starter was cancelled. The starter still raises its Cancelled, and the child does not
    # stay behind, running (or listed) without anyone holding its ref.
    class Stubborn(Worker):
        async def on_start(self) -> None:
            self.log.append("starting")
            with trio.CancelScope(shield=True):
                await trio.sleep(2)
            self.log.append("ready")

    log = TimedLog()
    with trio.fail_after(5):
        async with open_supervisor() as sup:
            with trio.move_on_after(1) as scope:
                await sup.start_child(ChildSpec("late", lambda: Stubborn("late", log)))
            assert scope.cancelled_caught
            assert trio.current_time() == 2.0  # it waited for the child to exit
            assert len(sup) == 0
            await trio.sleep(1)
    assert log == ["0.0 starting", "2.0 ready"]  # cancelled at once: no stop, no message


async def test_terminate_child_stops_it_for_good(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    async with open_supervisor() as sup:
        a = await start_actor(sup, worker("a", log))
        await sup.start_child(worker("b", log))
        await sup.terminate_child("a")
        await sup.terminate_child("unknown")  # nothing to do
        await settle()
        assert log == ["start a", "start b", "stop a"]
        assert [c.id for c in sup.which_children()] == ["b"]
        with pytest.raises(ActorDead):
            await a.ask("hello")
    assert log[-1] == "stop b"


async def test_terminate_child_during_its_backoff_does_not_restart_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    f = Puppet("f", log)
    async with open_supervisor(backoff=(2, 2), seed=0) as sup:
        await sup.start_child(f.spec())
        f.order("crash")
        await settle()  # crashed; the supervisor waits before restarting it
        await sup.terminate_child("f")
        await trio.sleep(5)
        assert log == ["start f", "finally f"]
        assert len(sup) == 0


async def test_a_stuck_sibling_is_not_stopped_again_after_its_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # one_for_all: b is stuck in handle(), so the stop message the supervisor sent it is
    # still queued when b is cancelled after shutdown_s. b's next incarnation must not
    # read that stale stop and exit at once (which would be one more restart).
    log = Log()
    async with open_supervisor("one_for_all", max_restarts=5) as sup:
        a = await start_actor(sup, worker("a", log))
        b = await start_actor(sup, worker("b", log, shutdown_s=1.0))
        await b.tell("hang")
        await settle()
        await a.tell("crash")
        await trio.sleep(2)
        assert log == ["start a", "start b", "start a", "start b"]
        assert sup.statistics().restarts == 1
        assert await b.ask("ping") == "b:ping"


async def test_nothing_outlives_the_block(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    f = Puppet("f", log)
    living = trio.lowlevel.current_statistics().tasks_living
    async with open_supervisor("one_for_all", backoff=(1, 1)) as sup:
        a = await start_actor(sup, worker("a", log))
        await sup.start_child(f.spec())
        b = await start_actor(sup, worker("b", log, shutdown_s=0.5))
        await b.tell("hang")
        f.order("crash")  # the supervisor is in its backoff when the block ends
        await settle()
    assert trio.lowlevel.current_statistics().tasks_living == living
    assert not a.alive
    assert not b.alive
