"""Driving a synchronous Hypothesis state machine against a hub that lives in one trio run.

Hypothesis runs a ``RuleBasedStateMachine`` synchronously: a rule cannot ``await``. pytest-trio
runs each test in one trio run, with the ``autojump_clock`` it provides. So the test (async,
in that run) hands the machine to a worker thread (``trio.to_thread``), and each rule runs its
async part back on the trio thread with ``trio.from_thread.run`` and waits for it. Only one
of the two threads works at a time, so the run is as sequential as a plain test.

Each step runs with the clock on autojump (so timeouts cost no time and a hang is caught by
the step's deadline) and then lets a few virtual seconds pass, so the hub's background work
(a retried close, a restart) is done before the invariants are checked. Then the clock stops:
between steps no task is runnable and no virtual time passes, so what the next step sees
does not depend on how long Hypothesis took to choose it.

The garbage collector is switched off while the machine runs (the machine collects on the
trio thread when a hub closes): collected on the machine's thread, an async generator the
hub dropped would be finalized outside trio (a ResourceWarning, an error in this suite).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio.testing

T = TypeVar("T")

#: Virtual seconds a step may take before it counts as a hang.
STEP_DEADLINE = 60.0
#: Virtual seconds the hub is given after each step to finish what the step started.
SETTLE_S = 5.0


class Bridge:
    """Runs async steps from the machine's thread in the test's trio run.

    Use it as a context manager around the machine's run: it stops automatic garbage
    collection meanwhile (see the module docstring).
    """

    def __init__(self, clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
        self.clock = clock
        self.nursery = nursery
        clock.autojump_threshold = math.inf

    def __enter__(self) -> Bridge:
        gc.disable()
        # What exists now (pytest, Hypothesis, every module) outlives the machine: frozen, it
        # is left out of the collections the machine makes, which then cost a few ms each.
        gc.collect()
        gc.freeze()
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.collect()  # still on the trio thread
        gc.unfreeze()
        gc.enable()

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, settle: bool = True) -> T:
        """Run ``await fn(*args)`` on the trio thread (from the machine's thread), then give
        the hub ``SETTLE_S`` virtual seconds (``settle=False``: none, for a check)."""
        return trio.from_thread.run(self._step, fn, args, settle)

    async def _step(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], settle: bool
    ) -> T:
        self.clock.autojump_threshold = 0
        try:
            with trio.fail_after(STEP_DEADLINE):
                result = await fn(*args)
                if settle:
                    await trio.sleep(SETTLE_S)
                return result
        finally:
            self.clock.autojump_threshold = math.inf
            await trio.testing.wait_all_tasks_blocked()
