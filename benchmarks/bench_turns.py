"""Long-session benchmark: the CPU cost of one turn early in a session and late in it.

``python -m benchmarks turns`` (``python -m benchmarks.bench_turns --help`` for the sizes).
Two agents (``AgentClient``s on one ``HubClient(LocalLink(hub))``, MemoryStore) talk in one
conversation, each answering the other at once, until the session reaches ``--high`` plus a
window. Each turn's cost is the CPU (``time.process_time``, the whole process) from one
``respond`` call to the next: the answer posted, delivered, acked, the other agent's
pre-checks and history, and its ``respond``. The report gives the median per-turn cost over
the ``--window`` turns from seq ``--low`` and from seq ``--high``, and their ratio.

Target (issue 15): a turn at seq 10,000 costs within 1.2x of a turn at seq 100, i.e. nothing
per turn grows with the session. Before issue 15 every turn re-rendered the whole transcript
(0.23 us per prior envelope per turn, the issue measured): turns were quadratic in the session.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Sequence

import attrs
import trio

from troupe import HubClient, LocalLink, Passport, Turn, open_hub

LOW = 100
HIGH = 10_000
WINDOW = 100
#: The figure's target: a turn at HIGH costs at most this many times a turn at LOW.
TARGET = 1.2


@attrs.frozen
class TurnCosts:
    """Median per-turn costs (microseconds) in the two windows of one session."""

    low_cpu_us: float
    high_cpu_us: float
    low_wall_us: float
    high_wall_us: float
    #: The session's length when it stopped (the last envelope's seq).
    last_seq: int
    seconds: float

    @property
    def ratio(self) -> float:
        return self.high_cpu_us / self.low_cpu_us


class Talker:
    """Answers every text at once; notes when each of its turns starts; stops at ``stop``."""

    def __init__(self, marks: list[tuple[int, float, float]], stop: int, done: trio.Event):
        self._marks = marks
        self._stop = stop
        self._done = done

    async def respond(self, turn: Turn) -> str | None:
        self._marks.append((turn.envelope.seq, time.process_time(), time.perf_counter()))
        if turn.envelope.seq >= self._stop:
            self._done.set()
            return None
        return f"reply to {turn.envelope.seq}"


def _window(marks: list[tuple[int, float, float]], start: int, size: int) -> tuple[float, float]:
    """Median CPU and wall microseconds between consecutive turns from seq ``start`` on."""
    at = next(i for i, (seq, _cpu, _wall) in enumerate(marks) if seq >= start)
    span = marks[at : at + size + 1]
    if len(span) < 2:
        raise ValueError(f"fewer than two turns from seq {start}: make the session longer")
    cpu = [b[1] - a[1] for a, b in itertools.pairwise(span)]
    wall = [b[2] - a[2] for a, b in itertools.pairwise(span)]
    return statistics.median(cpu) * 1e6, statistics.median(wall) * 1e6


async def session_run(low: int, high: int, window: int) -> TurnCosts:
    """One conversation of two agents, run to seq ``high + window``."""
    marks: list[tuple[int, float, float]] = []
    done = trio.Event()
    stop = high + window + 1
    start = time.perf_counter()
    async with open_hub(ttl_sweep_interval=0) as hub, HubClient(LocalLink(hub)) as client:
        ada = await client.register(Talker(marks, stop, done), Passport(name="ada"))
        await client.register(Talker(marks, stop, done), Passport(name="bob"))
        # No max_turns cap: the session runs well past the default 200 texts.
        chat = await ada.open(type="conversation", target="bob", knobs={"max_turns": None})
        await ada.send(chat.session_id, "hello")
        await done.wait()
    low_cpu, low_wall = _window(marks, low, window)
    high_cpu, high_wall = _window(marks, high, window)
    return TurnCosts(
        low_cpu, high_cpu, low_wall, high_wall, marks[-1][0], time.perf_counter() - start
    )


def report(costs: TurnCosts, low: int, high: int, window: int) -> str:
    verdict = "ok" if costs.ratio <= TARGET else "MISSED"
    return "\n".join(
        [
            f"one conversation, two AgentClients answering each other, MemoryStore; "
            f"medians over {window} turns (session ran to seq {costs.last_seq:,} in "
            f"{costs.seconds:.1f} s)",
            f"  turn at seq {low:>6,}: {costs.low_cpu_us:>8.1f} us CPU  "
            f"{costs.low_wall_us:>8.1f} us wall",
            f"  turn at seq {high:>6,}: {costs.high_cpu_us:>8.1f} us CPU  "
            f"{costs.high_wall_us:>8.1f} us wall",
            f"  ratio seq {high:,} / seq {low:,}: {costs.ratio:.2f}x CPU "
            f"(target <= {TARGET}x: {verdict}); "
            f"{(costs.high_cpu_us - costs.low_cpu_us) / (high - low):.3f} us more per turn "
            "per prior envelope",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_turns", description=__doc__)
    parser.add_argument("--low", type=int, default=LOW, help="the early window's first seq")
    parser.add_argument("--high", type=int, default=HIGH, help="the late window's first seq")
    parser.add_argument("--window", type=int, default=WINDOW, help="turns per window")
    args = parser.parse_args([] if argv is None else argv)
    if not 0 < args.low < args.high or args.window < 2:
        parser.error("need 0 < --low < --high and --window >= 2")
    costs = trio.run(session_run, args.low, args.high, args.window)
    print(report(costs, args.low, args.high, args.window))


if __name__ == "__main__":
    main(sys.argv[1:])
