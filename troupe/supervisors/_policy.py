"""Restart decisions, without I/O: OTP's restart intensity and a jittered backoff.

Rules:

- A supervisor may restart while it has seen at most ``max_restarts`` restarts in the last
  ``within_s`` seconds; one more and it gives up (OTP's intensity / period).
- Whether a child is restarted at all depends on its restart type: ``permanent`` always,
  ``transient`` only after a crash, ``temporary`` never.
- The backoff before the n-th restart in a burst is ``min_s * 2**(n-1)``, capped at ``max_s``,
  with equal jitter (half fixed, half random) so that many children do not restart in step.

Drivers pass ``now`` from ``trio.current_time()``; nothing here reads a clock.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Literal, TypeAlias

import attrs

RestartType: TypeAlias = Literal["permanent", "transient", "temporary"]
Strategy: TypeAlias = Literal["one_for_one", "one_for_all", "rest_for_one"]

RESTART_TYPES: tuple[RestartType, ...] = ("permanent", "transient", "temporary")
STRATEGIES: tuple[Strategy, ...] = ("one_for_one", "one_for_all", "rest_for_one")


def should_restart(restart: RestartType, *, crashed: bool) -> bool:
    """Whether a child of this restart type is restarted after it exits."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return crashed
    return False


@attrs.define
class RestartWindow:
    """Decide whether a supervisor may restart a child (OTP intensity/period)."""

    max_restarts: int
    within_s: float
    _stamps: deque[float] = attrs.field(factory=deque, init=False)

    def __attrs_post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if self.within_s <= 0:
            raise ValueError(f"within_s must be > 0, got {self.within_s}")

    def record_crash(self, now: float) -> Literal["restart", "give_up"]:
        """Count one more restart at ``now`` and say whether it is still allowed.

        Args:
          now: the current time, in seconds, from the driver's clock.

        Returns:
          ``"restart"``, or ``"give_up"`` when the window holds more than ``max_restarts``.
        """
        self._stamps.append(now)
        while now - self._stamps[0] > self.within_s:
            self._stamps.popleft()
        return "restart" if len(self._stamps) <= self.max_restarts else "give_up"

    @property
    def recent(self) -> int:
        """How many restarts the window holds (the current burst)."""
        return len(self._stamps)


@attrs.frozen
class Backoff:
    """Exponential backoff with equal jitter between ``min_s`` and ``max_s``."""

    min_s: float
    max_s: float

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.min_s <= self.max_s:
            raise ValueError(f"backoff needs 0 <= min_s <= max_s, got ({self.min_s}, {self.max_s})")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before restart number ``attempt`` (1-based) of a burst."""
        base: float = min(self.max_s, self.min_s * 2.0 ** max(0, attempt - 1))
        return base / 2 + rng.uniform(0, base / 2)
