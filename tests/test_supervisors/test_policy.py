"""The sans-IO restart policy: intensity window, restart types, jittered backoff."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from troupe.supervisors import Backoff, RestartWindow
from troupe.supervisors._policy import should_restart


@pytest.mark.parametrize(
    ("restart", "crashed", "expected"),
    [
        ("permanent", False, True),
        ("permanent", True, True),
        ("transient", False, False),
        ("transient", True, True),
        ("temporary", False, False),
        ("temporary", True, False),
    ],
)
def test_restart_types(restart: str, crashed: bool, expected: bool) -> None:
    assert should_restart(restart, crashed=crashed) is expected  # type: ignore[arg-type]


def test_window_gives_up_on_one_restart_too_many() -> None:
    window = RestartWindow(max_restarts=2, within_s=5.0)
    assert window.record_crash(0.0) == "restart"
    assert window.record_crash(1.0) == "restart"
    assert window.record_crash(2.0) == "give_up"


def test_window_forgets_restarts_older_than_within_s() -> None:
    window = RestartWindow(max_restarts=1, within_s=5.0)
    for now in (0.0, 5.5, 11.0, 16.5):
        assert window.record_crash(now) == "restart"
        assert window.recent == 1


def test_max_restarts_zero_never_restarts() -> None:
    assert RestartWindow(max_restarts=0, within_s=1.0).record_crash(0.0) == "give_up"


@pytest.mark.parametrize(("max_restarts", "within_s"), [(-1, 1.0), (1, 0.0), (1, -2.0)])
def test_window_rejects_nonsense(max_restarts: int, within_s: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        RestartWindow(max_restarts, within_s)


@given(
    max_restarts=st.integers(0, 5),
    gaps=st.lists(st.floats(0, 10, allow_nan=False), max_size=30),
)
def test_window_gives_up_exactly_when_the_window_is_over_full(
    max_restarts: int, gaps: list[float]
) -> None:
    window = RestartWindow(max_restarts, within_s=5.0)
    now, stamps = 0.0, []
    for gap in gaps:
        now += gap
        stamps.append(now)
        in_window = [t for t in stamps if now - t <= 5.0]
        expected = "restart" if len(in_window) <= max_restarts else "give_up"
        assert window.record_crash(now) == expected


def test_backoff_doubles_and_caps_with_equal_jitter() -> None:
    backoff = Backoff(1.0, 8.0)
    rng = random.Random(7)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (30, 8.0)]:
        delay = backoff.delay(attempt, rng)
        assert base / 2 <= delay <= base


def test_backoff_is_reproducible_with_a_seed() -> None:
    backoff = Backoff(0.5, 30.0)
    first = [backoff.delay(n, random.Random(3)) for n in range(1, 8)]
    again = [backoff.delay(n, random.Random(3)) for n in range(1, 8)]
    assert first == again


@pytest.mark.parametrize(("min_s", "max_s"), [(-1.0, 1.0), (2.0, 1.0)])
def test_backoff_rejects_nonsense(min_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="min_s <= max_s"):
        Backoff(min_s, max_s)
