"""Small attrs converters and time helpers shared by the records (no cattrs here)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime


def to_tuple(items: Iterable[str]) -> tuple[str, ...]:
    """Accept a list (what users write) and keep an immutable tuple."""
    return items if type(items) is tuple else tuple(items)


def to_opt_tuple(items: Iterable[str] | None) -> tuple[str, ...] | None:
    if items is None:
        return None
    return items if type(items) is tuple else tuple(items)


def iso(ts: float) -> str:
    """The one timestamp format: UTC, microseconds, ``+00:00`` (sorts as it reads)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


#: The last whole second :func:`iso_stamp` formatted, and its text up to the seconds.
_second: list[tuple[int, str]] = [(0, "1970-01-01T00:00:00")]


def iso_stamp(ts: float) -> tuple[str, float]:
    """``iso(ts)``, and the float ``parse_iso`` reads back from it, without a parse.

    The hub stamps every envelope: the text of the second is made once per second, the
    microseconds rounded as ``datetime.fromtimestamp`` rounds them (half to even).
    """
    frac, whole = math.modf(ts)
    micro = round(frac * 1e6)
    second = int(whole)
    if micro >= 1_000_000:
        second += 1
        micro -= 1_000_000
    elif micro < 0:
        second -= 1
        micro += 1_000_000
    cached, text = _second[0]
    if cached != second or not text:
        text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:-6]
        _second[0] = (second, text)
    return f"{text}.{micro:06d}+00:00", (second * 1_000_000 + micro) / 1_000_000


def is_due(stamp: str, now: float) -> bool:
    """Whether the time ``stamp`` (ISO) has come at ``now``, to the microsecond.

    A stamp is ``iso(t)`` read back as a float, so ``parse_iso(iso(t + 120))`` may come out a
    fraction of a microsecond after ``t + 120``; that must not move a deadline by a sweep.
    """
    return round(parse_iso(stamp) - now, 6) <= 0


def parse_iso(text: str) -> float:
    """Seconds since the epoch for an ISO-8601 timestamp (any offset; naive means UTC)."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
