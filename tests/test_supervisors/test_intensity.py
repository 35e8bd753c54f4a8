"""Restart intensity (give up and escalate) and backoff between restarts, on the mock clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe import ActorDead, RestartIntensityExceeded
from troupe.actors import Actor, ActorRef
from troupe.supervisors import ChildSpec, Supervisor, open_supervisor

from ._children import Log, Worker, settle, start_actor, worker


async def test_too_many_restarts_stop_everything_and_raise_bare(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    refs: list[ActorRef[str, str]] = []

    async def run() -> None:
        async with open_supervisor(max_restarts=2, within_s=10.0, name="root") as sup:
            refs.extend([await start_actor(sup, worker(cid, log)) for cid in "abc"])
            for _ in range(3):
                await refs[1].tell("crash")
                await settle()
            raise AssertionError("the block should have been cancelled")  # pragma: no cover

    # pytest.raises, not RaisesGroup: the error must come out bare, not in an ExceptionGroup.
    with pytest.raises(RestartIntensityExceeded, match=r"'root'.*more than 2 restarts") as info:
        await run()
    assert isinstance(info.value.__cause__, ValueError)
    assert str(info.value.__cause__) == "b crashed"
    assert log.count("start b") == 3
    assert log[-2:] == ["stop c", "stop a"]
    assert not any(ref.alive for ref in refs)


async def test_asks_queued_when_the_supervisor_gives_up_fail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    refs: list[ActorRef[str, str]] = []

    async def run() -> None:
        async with open_supervisor(max_restarts=0) as sup:
            refs.append(await start_actor(sup, worker("w", log)))
            refs[0].tell_nowait("crash")
            with trio.fail_after(1), pytest.raises(ActorDead):
                await refs[0].ask("queued")
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded):
        await run()
    with pytest.raises(ActorDead):
        await refs[0].ask("after")


async def test_a_restart_that_fails_before_ready_counts_as_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    incarnations = []

    class FailsAfterFirst(Worker):
        async def on_start(self) -> None:
            incarnations.append(self)
            if len(incarnations) > 1:
                raise OSError(f"cannot restart ({len(incarnations)})")

    log = Log()

    async def run() -> None:
        async with open_supervisor(max_restarts=3, within_s=10.0) as sup:
            ref = await start_actor(sup, ChildSpec("w", lambda: FailsAfterFirst("w", log)))
            await ref.tell("crash")
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded) as info:
        await run()
    assert str(info.value.__cause__) == "cannot restart (4)"
    assert len(incarnations) == 4


async def test_crashes_spread_beyond_the_window_do_not_give_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor(max_restarts=1, within_s=5.0) as sup:
        ref = await start_actor(sup, worker("w", log))
        for _ in range(10):
            await ref.tell("crash")
            await settle()
            await trio.sleep(5.5)
        assert sup.statistics().restarts == 10
        assert ref.alive


async def test_normal_exits_of_permanent_children_count_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()

    async def run() -> None:
        async with open_supervisor(max_restarts=1, within_s=5.0) as sup:
            ref = await start_actor(sup, worker("w", log))
            await ref.stop()
            await settle()
            await ref.stop()
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded) as info:
        await run()
    assert info.value.__cause__ is None  # nothing crashed: the child kept exiting


async def restart_delays(seed: int) -> list[float]:
    """Crash a child repeatedly under backoff=(1, 8); return the waits before each restart."""
    starts: list[float] = []
    restarted = [trio.Event()]

    class Stamped(Actor[str, None]):
        async def on_start(self) -> None:
            starts.append(trio.current_time())
            restarted[0].set()

        async def handle(self, msg: str) -> None:
            raise ValueError(msg)

    delays = []
    async with open_supervisor(max_restarts=100, within_s=1000.0, backoff=(1, 8), seed=seed) as sup:
        ref = await start_actor(sup, ChildSpec("w", Stamped))
        for _ in range(6):
            restarted[0] = trio.Event()
            crashed_at = trio.current_time()
            await ref.tell("crash")
            await restarted[0].wait()
            delays.append(starts[-1] - crashed_at)
    return delays


async def test_backoff_waits_with_jitter_between_min_and_max(
    autojump_clock: trio.testing.MockClock,
) -> None:
    delays = await restart_delays(seed=1)
    for delay, base in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert base / 2 <= delay <= base
    assert len({round(d, 2) for d in delays[3:]}) > 1  # jittered, not in lockstep


async def test_backoff_is_reproducible_with_a_seed(autojump_clock: trio.testing.MockClock) -> None:
    # approx: the mock clock has moved on between runs, so float sums round differently.
    assert await restart_delays(seed=5) == pytest.approx(await restart_delays(seed=5))
    assert await restart_delays(seed=5) != pytest.approx(await restart_delays(seed=6))


async def test_without_backoff_restarts_are_immediate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor() as sup:
        ref = await start_actor(sup, worker("w", log))
        before = trio.current_time()
        await ref.tell("crash")
        await settle()
        assert log == ["start w", "start w"]
        assert trio.current_time() == before


async def test_one_childs_backoff_does_not_delay_anothers_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor(max_restarts=10, within_s=100.0, backoff=(4, 4), seed=0) as sup:
        a = await start_actor(sup, worker("a", log))
        b = await start_actor(sup, worker("b", log))
        await a.tell("crash")
        await settle()
        await trio.sleep(1)
        await b.tell("crash")
        with trio.fail_after(4.1):
            await log.wait_for("start b", 2)
        assert log.count("start a") == 2
        # b's wait started when b crashed, not when a's restart was done.
        assert log.index("start b", 2) > log.index("start a", 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "one_for_some"}, "unknown strategy"),
        ({"max_restarts": -1}, "max_restarts"),
        ({"within_s": 0}, "within_s"),
        ({"backoff": (5, 1)}, "backoff"),
    ],
)
async def test_bad_arguments_raise_a_bare_value_error(
    kwargs: dict[str, object], match: str, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(ValueError, match=match):
        async with open_supervisor(**kwargs):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_state_says_running_restarting_stopping_or_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    seen: list[str] = []
    held: list[Supervisor] = []

    async def run() -> None:
        async with open_supervisor(
            max_restarts=1, within_s=100.0, backoff=(5.0, 5.0), name="s"
        ) as sup:
            held.append(sup)
            ref = await start_actor(sup, worker("w", log))
            seen.append(sup.state)
            await ref.tell("crash")
            await settle()
            seen.append(sup.state)  # down until its backoff is over
            await trio.sleep(10)
            seen.append(sup.state)
            [child] = sup.which_children()
            assert child.ref is not None
            await child.ref.tell("crash")  # a second crash within the window: give up
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded):
        await run()
    assert seen == ["running", "restarting", "running"]
    assert held[0].state == "failed"
    async with open_supervisor(name="t") as sup:
        sup.cancel()
        assert sup.state == "stopping"
