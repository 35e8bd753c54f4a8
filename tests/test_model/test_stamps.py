"""The hub's cheap stamps decide exactly as the slow ones did (issue 15, item 3)."""

from __future__ import annotations

import random
import time

import attrs
import pytest

from troupe.hub._core import new_uuid
from troupe.model import Envelope, iso, parse_iso
from troupe.model._convert import iso_stamp

EDGES = (
    0.0,
    1.0,
    1e-7,
    -0.5,
    1765000000.0,
    1765000000.9999996,  # rounds up into the next second
    1765000000.0000005,  # half a microsecond: to even
    1765000000.0000015,
    1765000059.9999999,  # and into the next minute
)


@pytest.mark.parametrize("ts", EDGES)
def test_an_edge_stamp_is_iso_and_reads_back_as_parse_iso(ts: float) -> None:
    text, at = iso_stamp(ts)
    assert text == iso(ts)
    assert at == parse_iso(iso(ts))


def test_random_stamps_are_iso_and_read_back_as_parse_iso() -> None:
    rng = random.Random(15)
    for _ in range(20_000):
        ts = rng.uniform(0, 4e9)
        if rng.random() < 0.5:  # on and around whole microseconds
            ts = round(ts, 6) + rng.choice((5e-7, -5e-7, 0.0))
        text, at = iso_stamp(ts)
        assert text == iso(ts), ts
        assert at == parse_iso(text), ts


def test_stamps_out_of_order_use_their_own_second() -> None:
    """The cached second is only a shortcut: going back in time formats the right one."""
    later, _ = iso_stamp(1765000100.25)
    earlier, _ = iso_stamp(1765000000.25)
    assert later == iso(1765000100.25)
    assert earlier == iso(1765000000.25)


def test_ids_are_32_hex_digits_and_do_not_repeat() -> None:
    ids = {new_uuid() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)


def test_a_stamped_copy_keeps_every_other_field_and_changes_only_the_stamp() -> None:
    """``Envelope.stamped`` names each field (for speed): every field must be named here,
    so a new one cannot be dropped from the copy unnoticed."""
    values = {
        "session_id": "s1",
        "sender_id": "a1",
        "event_type": "text",
        "event_data": {"text": "hi"},
        "audience": ("b1",),
        "envelope_id": "",
        "seq": 0,
        "created_at": "",
        "task_id": "t1",
        "causation_id": "c1",
        "idempotency_key": "k1",
        "trace_id": "00-abc-def-01",
        "priority": "high",
        "depth": 3,
        "stream_id": "st1",
    }
    assert set(values) == {f.name for f in attrs.fields(Envelope)}
    original = Envelope(**values)  # type: ignore[arg-type]
    stamped = original.stamped("e1", 7, "2026-12-07T00:00:00.000000+00:00")
    assert stamped == attrs.evolve(
        original, envelope_id="e1", seq=7, created_at="2026-12-07T00:00:00.000000+00:00"
    )
    assert (original.envelope_id, original.seq) == ("", 0)  # the original is untouched


def test_ids_start_with_their_millisecond_so_later_ids_sort_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Time-ordered ids (issue 15, item 6): a store keyed by them appends at its indexes' end."""
    now = [1_765_000_000_123_456_789]
    monkeypatch.setattr(time, "time_ns", lambda: now[0])
    first = [new_uuid() for _ in range(100)]
    now[0] += 1_000_000  # one millisecond later
    second = [new_uuid() for _ in range(100)]
    assert {i[:12] for i in first} == {f"{1_765_000_000_123:012x}"}
    assert {i[:12] for i in second} == {f"{1_765_000_000_124:012x}"}
    assert max(first) < min(second)
    assert len({i[12:] for i in first + second}) == 200  # the other 80 bits are random
