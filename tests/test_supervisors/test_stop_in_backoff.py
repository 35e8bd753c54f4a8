"""``ActorRef.stop()`` while the supervisor waits out a restart backoff."""

from __future__ import annotations

import trio
import trio.testing

from troupe.supervisors import open_supervisor

from ._children import Log, settle, start_actor, worker

#: Every restart waits 5 to 10 s (the backoff's jitter).
BACKOFF = (10.0, 10.0)


async def test_a_transient_child_stopped_in_its_backoff_is_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor(backoff=BACKOFF, seed=1) as sup:
        ref = await start_actor(sup, worker("a", log, restart="transient"))
        await ref.tell("crash")
        await settle()
        assert [c.running for c in sup.which_children()] == [False]  # waiting to restart
        start = trio.current_time()
        await ref.stop()
        # Returned once it was settled that the child stays stopped, not before.
        assert trio.current_time() - start > 0
        assert not ref.alive
        assert "a" not in sup
        await trio.sleep(60)
        assert log == ["start a"]  # never started again, not even to stop at once


async def test_a_permanent_child_stopped_in_its_backoff_restarts_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor(backoff=BACKOFF, seed=1) as sup:
        ref = await start_actor(sup, worker("a", log))
        await ref.tell("crash")
        await settle()
        async with trio.open_nursery() as nursery:
            # Twice at once: neither request is left over for the new incarnation.
            nursery.start_soon(ref.stop)
            nursery.start_soon(ref.stop)
        # A permanent child comes back; stop() returned once it had, and the stop request
        # (honoured: the child was down) does not stop the new incarnation at once.
        assert [c.running for c in sup.which_children()] == [True]
        assert log == ["start a", "start a"]
        await trio.sleep(60)
        assert log == ["start a", "start a"]
        assert sup.statistics().restarts == 1
        assert await ref.ask("ping") == "a:ping"


async def test_stop_in_a_backoff_returns_when_the_supervisor_shuts_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    stopped = trio.Event()
    async with open_supervisor(backoff=BACKOFF, seed=1) as sup:
        ref = await start_actor(sup, worker("a", log))
        await ref.tell("crash")
        await settle()

        async def stop() -> None:
            await ref.stop()
            stopped.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop)
            await settle()
            assert not stopped.is_set()
            await sup.terminate_child("a")
        assert stopped.is_set()
        assert not ref.alive
    assert log == ["start a"]
