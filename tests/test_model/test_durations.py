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
        ("-1", -1),  # a TTL <= 0 means "no expiry" to the hub
    ],
)
def test_the_reference_durations(value: str | int, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["abc", "5x", "10y", "fast", "1.5h", "m", "s5", True, 1.5])
def test_anything_else_is_refused_naming_the_value(value: object) -> None:
    with pytest.raises(ValueError, match="not a duration") as info:
        parse_duration(value)  # type: ignore[arg-type]
    assert repr(value) in str(info.value)
