"""The actor kernel against bare trio: tell throughput, ask round trips, bytes per idle actor.

Each figure is the median of several runs, each in a fresh ``trio.run``, troupe and bare
runs alternating. The bare-trio side is what an actor replaces: a task looping on a memory
channel (for ask, plus a reply channel that the asker waits on). The issue's targets: tell
>= 0.6x and ask >= 0.5x the bare figure, and an idle actor (task + mailbox + ref) <= 1.5x
the bytes of a bare task blocked on a memory channel.

Run with ``./dev bench kernel`` (``python -m benchmarks kernel``).
"""

from __future__ import annotations

import gc
import platform
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
import trio.testing

from troupe.actors import DEFAULT_CAPACITY, Actor, spawn

#: Sizes used by ``main()``; ``measure()`` takes smaller ones for a quick check.
TELL_N = 50_000
ASK_N = 20_000
IDLE_N = 10_000
REPEATS = 5


class _Counter(Actor[int, int]):
    """Counts what it handles and answers an ask with the message itself."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = 0
        self.all_seen = trio.Event()

    async def handle(self, msg: int) -> int:
        self.seen += 1
        if self.seen == self.expected:
            self.all_seen.set()
        return msg


class _Idle(Actor[None, None]):
    async def handle(self, msg: None) -> None:
        pass


# -- one run of each measurement; each returns a rate (per second) or bytes ---------------


async def _tell_troupe(n: int) -> float:
    async with trio.open_nursery() as nursery:
        counter = _Counter(n)
        ref = await spawn(nursery, counter)
        start = time.perf_counter()
        for i in range(n):
            await ref.tell(i)
        await counter.all_seen.wait()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return n / elapsed


async def _tell_bare(n: int) -> float:
    send, recv = trio.open_memory_channel[int](DEFAULT_CAPACITY)
    all_seen = trio.Event()

    async def consumer() -> None:
        seen = 0
        async for _ in recv:
            seen += 1
            if seen == n:
                all_seen.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        for i in range(n):
            await send.send(i)
        await all_seen.wait()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return n / elapsed


async def _ask_troupe(n: int) -> float:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, _Counter(n))
        start = time.perf_counter()
        for i in range(n):
            await ref.ask(i)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return n / elapsed


async def _ask_bare(n: int) -> float:
    Request = tuple[int, trio.MemorySendChannel[int]]
    send, recv = trio.open_memory_channel[Request](DEFAULT_CAPACITY)
    # One reply channel reused for every request: the cheapest raw reply path in trio.
    reply_send, reply_recv = trio.open_memory_channel[int](1)

    async def server() -> None:
        async for msg, reply_to in recv:
            await reply_to.send(msg)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        for i in range(n):
            await send.send((i, reply_send))
            await reply_recv.receive()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return n / elapsed


async def _idle_bytes(n: int, make: Callable[[trio.Nursery], Awaitable[object]]) -> float:
    """Bytes allocated per idle thing (a task and what it owns), blocked and settled."""
    keep: list[object] = []
    async with trio.open_nursery() as nursery:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(n):
                keep.append(await make(nursery))
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        nursery.cancel_scope.cancel()
    return (after - before) / n


async def _idle_troupe(n: int) -> float:
    async def make(nursery: trio.Nursery) -> object:
        return await spawn(nursery, _Idle())

    return await _idle_bytes(n, make)


async def _idle_bare(n: int) -> float:
    async def loop(recv: trio.MemoryReceiveChannel[None]) -> None:
        async for _ in recv:
            pass

    async def make(nursery: trio.Nursery) -> object:
        send, recv = trio.open_memory_channel[None](DEFAULT_CAPACITY)
        nursery.start_soon(loop, recv)
        return send

    return await _idle_bytes(n, make)


# -- reporting ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Figure:
    """One line of the report: the troupe and bare-trio medians and the target ratio."""

    name: str
    unit: str
    troupe: float
    bare: float
    target: float
    #: True for rates (troupe / bare must reach the target), False for bytes (stay under).
    higher_is_better: bool

    @property
    def ratio(self) -> float:
        return self.troupe / self.bare

    @property
    def met(self) -> bool:
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target


def _interleaved(
    ours: Callable[[int], Awaitable[float]],
    theirs: Callable[[int], Awaitable[float]],
    n: int,
    repeats: int,
) -> tuple[float, float]:
    """Medians of ``repeats`` runs of each, alternating troupe and bare run by run.

    A slow spell of the shared machine then weighs on both sides of the ratio alike (all
    troupe runs first, then all bare runs, let a spell land on one side only).
    """
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for side, run in zip(samples, (ours, theirs), strict=True):
            gc.collect()
            side.append(trio.run(run, n))
    return statistics.median(samples[0]), statistics.median(samples[1])


def measure(*, tell_n: int, ask_n: int, idle_n: int, repeats: int) -> list[Figure]:
    """Run every measurement ``repeats`` times, troupe and bare interleaved.

    Args:
      tell_n: messages per tell run.
      ask_n: round trips per ask run.
      idle_n: idle actors (and bare tasks) per memory run.
      repeats: runs per figure; the report uses the median.

    Returns:
      The figures for tell, ask and idle memory.
    """
    pairs: list[tuple[str, str, Any, Any, int, float, bool]] = [
        ("tell", "msgs/s", _tell_troupe, _tell_bare, tell_n, 0.6, True),
        ("ask", "asks/s", _ask_troupe, _ask_bare, ask_n, 0.5, True),
        ("idle actor", "bytes", _idle_troupe, _idle_bare, idle_n, 1.5, False),
    ]
    figures = []
    for name, unit, ours, theirs, n, target, higher in pairs:
        troupe, bare = _interleaved(ours, theirs, n, repeats)
        figures.append(
            Figure(
                name=name,
                unit=unit,
                troupe=troupe,
                bare=bare,
                target=target,
                higher_is_better=higher,
            )
        )
    return figures


def report(figures: list[Figure], *, repeats: int) -> str:
    """Format the figures as a table.

    Args:
      figures: what :func:`measure` returned.
      repeats: how many runs each median is over (for the heading).

    Returns:
      The table, one line per figure.
    """
    lines = [
        f"troupe kernel vs bare trio: medians of {repeats} runs "
        f"(Python {platform.python_version()}, trio {trio.__version__})",
        f"{'':<12}{'unit':>8}{'troupe':>12}{'bare trio':>12}{'ratio':>8}{'target':>9}",
    ]
    for f in figures:
        op = ">=" if f.higher_is_better else "<="
        verdict = "ok" if f.met else "MISSED"
        lines.append(
            f"{f.name:<12}{f.unit:>8}{f.troupe:>12,.0f}{f.bare:>12,.0f}"
            f"{f.ratio:>7.2f}x{op:>4}{f.target:.1f}x  {verdict}"
        )
    return "\n".join(lines)


def main() -> None:
    """Measure at full size and print the table."""
    figures = measure(tell_n=TELL_N, ask_n=ASK_N, idle_n=IDLE_N, repeats=REPEATS)
    print(report(figures, repeats=REPEATS))
