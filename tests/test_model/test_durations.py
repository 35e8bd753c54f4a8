"""``parse_duration``: the reference's durations, and a clear error for anything else."""

from __future__ import annotations

import pytest

from troupe.model import parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("2h", 7200),
        ("4h", 14400),
        ("1d", 86400),
        ("0s", 0),
        (0, 0),
        (3600, 3600),
        ("", 0),
        ("60", 60),
        (" 5m ", 300),
        ("3650d", 3650 * 86400),  # MAX_DURATION_S
    ],
)
def test_the_reference_durations(value: str | int, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["abc", "5x", "10y", "fast", "1.5h", "m", "s5", True, 1.5])
def test_anything_else_is_refused_naming_the_value(value: object) -> None:
    with pytest.raises(ValueError, match="not a duration") as info:
        parse_duration(value)  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("-1", "cannot be negative"),
        (-1, "cannot be negative"),
        ("-5m", "cannot be negative"),
        (10**12, "exceeds the longest allowed"),
        ("99999999999d", "exceeds the longest allowed"),
        ("3651d", "exceeds the longest allowed"),
        ("9" * 5000, "exceeds the longest allowed"),
    ],
)
def test_negative_and_overlong_durations_are_refused(value: str | int, complaint: str) -> None:
    # A TTL of 10**12 s made the hub actor raise "year out of range" (issue 13); a negative
    # one was read as "no expiry".
    with pytest.raises(ValueError, match=complaint):
        parse_duration(value)
