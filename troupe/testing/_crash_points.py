"""``CrashPoints``: crash session actors at named steps of a post, on purpose.

An implementation of the hub's ``Faults`` protocol (``open_hub(faults=...)``). The session
actor calls ``check(point, session_id)`` at each step of a post (``CRASH_POINTS``:
``before_append``, ``after_append``, ``after_fold``, ``after_dispatch``); an armed point
raises :class:`InjectedCrash` there, which crashes the actor like any bug would: its
supervisor restarts it from the WAL and the hub retries the post once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping

import attrs

from ..hub import CRASH_POINTS, InjectedCrash


def _check_point(point: str) -> str:
    if point not in CRASH_POINTS:
        raise ValueError(f"unknown crash point {point!r}; use one of {', '.join(CRASH_POINTS)}")
    return point


@attrs.define(eq=False)
class _Armed:
    point: str
    session_id: str | None
    remaining: float
    skip: int = 0

    def matches(self, point: str, session_id: str) -> bool:
        if self.point != point or self.remaining <= 0:
            return False
        if self.session_id is not None and self.session_id != session_id:
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        return True


@attrs.define(eq=False)
class _Random:
    probability: float
    points: frozenset[str]
    session_id: str | None
    rng: random.Random


@attrs.frozen(kw_only=True)
class CrashPointsStatistics:
    """How many checks the session actors made and how many crashes were injected."""

    checks: int
    crashes: int
    by_point: Mapping[str, int]


class CrashPoints:
    """Crash session actors at named steps: for one session or all, N times or at random.

    Pass it to ``open_hub(faults=...)``; arm it before or while the hub runs. With nothing
    armed every check passes. ``history`` lists every ``(point, session_id)`` it crashed, in
    order.
    """

    def __init__(self) -> None:
        self._armed: list[_Armed] = []
        self._random: _Random | None = None
        self._checks = 0
        self._by_point: dict[str, int] = {}
        self.history: list[tuple[str, str]] = []

    def crash_at(
        self,
        point: str,
        *,
        session_id: str | None = None,
        times: int | None = 1,
        after: int = 0,
    ) -> None:
        """Crash the next ``times`` posts that reach ``point``.

        Args:
          point: one of ``CRASH_POINTS``.
          session_id: only in this session (``None``: in any session).
          times: how many crashes; ``None`` crashes every time until :meth:`clear`.
          after: let this many posts pass ``point`` first (``after=1``: crash the second
            one, e.g. an invite's ack rather than the invite).

        Raises:
          ValueError: an unknown point, ``times < 1`` or ``after < 0``.
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 (or None for always), got {times}")
        if after < 0:
            raise ValueError(f"after must be >= 0, got {after}")
        remaining = math.inf if times is None else times
        self._armed.append(_Armed(_check_point(point), session_id, remaining, after))

    def crash_randomly(
        self,
        probability: float,
        *,
        seed: int,
        points: Iterable[str] = CRASH_POINTS,
        session_id: str | None = None,
    ) -> None:
        """Crash at each check of ``points`` with ``probability``, reproducibly from ``seed``.

        Replaces an earlier ``crash_randomly``; ``crash_at`` faults still apply first.

        Raises:
          ValueError: an unknown point, or a probability outside [0, 1].
        """
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be within [0, 1], got {probability}")
        chosen = frozenset(_check_point(p) for p in points)
        self._random = _Random(probability, chosen, session_id, random.Random(seed))

    def clear(self) -> None:
        """Disarm everything (the counters and ``history`` stay)."""
        self._armed.clear()
        self._random = None

    def statistics(self) -> CrashPointsStatistics:
        return CrashPointsStatistics(
            checks=self._checks, crashes=len(self.history), by_point=dict(self._by_point)
        )

    def check(self, point: str, session_id: str) -> None:
        """The hub's ``Faults`` hook: raise :class:`InjectedCrash` when ``point`` is armed."""
        self._checks += 1
        if self._should_crash(point, session_id):
            self._by_point[point] = self._by_point.get(point, 0) + 1
            self.history.append((point, session_id))
            raise InjectedCrash(f"injected crash at {point} in session {session_id}")

    def _should_crash(self, point: str, session_id: str) -> bool:
        for armed in self._armed:
            if armed.matches(point, session_id):
                armed.remaining -= 1
                if armed.remaining <= 0:
                    self._armed.remove(armed)
                return True
        chance = self._random
        if chance is None or point not in chance.points:
            return False
        if chance.session_id is not None and chance.session_id != session_id:
            return False
        return chance.rng.random() < chance.probability
