"""The hub against a Hypothesis state machine: random use, crashes, store faults, restarts.

See ``_machine.py`` for the rules and invariants and ``_bridge.py`` for how a synchronous
state machine drives a hub inside pytest-trio's run. In CI it runs a small budget
(derandomized: the same examples every run; 30 examples of 50 steps, enough for sessions
to reach their later phases, such as an auction's award); ``TROUPE_RELIABILITY=full ./dev
test tests/test_reliability`` runs the full one, with new random examples each time.

Each example is deterministic as far as trio is (pytest-trio seeds its scheduler): trio
still orders tasks whose deadlines tie by object identity, so over hundreds of random
examples Hypothesis may, rarely, see two runs of one prefix diverge and report
FlakyStrategyDefinition. That alone is not a finding: rerun.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from ._bridge import Bridge
from ._machine import bound_machine

FULL = os.environ.get("TROUPE_RELIABILITY") == "full"

#: TROUPE_RELIABILITY_SHRINK=0 reports the first failing example as found (faster to debug).
SHRINK = os.environ.get("TROUPE_RELIABILITY_SHRINK", "1") != "0"

SETTINGS = settings(
    phases=list(Phase) if SHRINK else [Phase.explicit, Phase.reuse, Phase.generate],
    max_examples=200 if FULL else 30,
    stateful_step_count=60 if FULL else 50,
    deadline=None,
    derandomize=not FULL,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
async def test_the_hub_keeps_its_promises_whatever_happens(
    engine: str,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Thousands of injected crashes log their tracebacks: formatting them would cost more
    # than the run itself. A failing example is replayed with its steps printed anyway.
    caplog.set_level(logging.CRITICAL, logger="troupe")
    async with trio.open_nursery() as nursery:
        with Bridge(autojump_clock, nursery) as bridge:
            machine = bound_machine(bridge, tmp_path, engine)
            await trio.to_thread.run_sync(
                partial(run_state_machine_as_test, machine, settings=SETTINGS)
            )
