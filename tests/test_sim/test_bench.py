"""The simulation benchmark still runs, at a tiny size, and reports every figure."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_sim
from benchmarks.__main__ import available
from benchmarks.raw_create import raw_create


def test_the_runner_finds_it() -> None:
    assert "sim" in available()


@pytest.mark.slow
def test_it_measures_and_reports_at_a_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    bench_sim.main(
        [
            "--agents=60",
            "--sessions=20",
            "--sessions-passivated=60",
            "--woken=20",
            "--wave=30",
            "--envelopes=50",
        ]
    )
    out = capsys.readouterr().out
    for figure in (
        "RSS per idle agent",
        "bare trio task + channel",
        "RSS per passivated session",
        "wake-up post (rehydrates)",
        "bare trio request/reply",
        "snapshot every 1000",
        "no snapshots (full refold)",
        "raw sqlite3 + orjson read",
        "raw skeleton",
    ):
        assert figure in out
    assert "passivated before the next: 20)" in out


def _shape(value: Any) -> Any:
    """``value`` with every string, number and bool replaced by its type's name: what ids,
    stamps and counts it holds aside, its structure (hashable, to count)."""
    if isinstance(value, dict):
        return tuple((key, _shape(item)) for key, item in value.items())
    if isinstance(value, list):
        return tuple(_shape(item) for item in value)
    return type(value).__name__


def _rows(db: Path) -> dict[str, Counter[Any]]:
    """The shapes of what a store file holds of its sessions, and how many of each."""
    conn = sqlite3.connect(db)
    try:
        audit = Counter(
            (record["kind"], _shape(record))
            for (text,) in conn.execute("SELECT record FROM audit")
            if "session_id" in (record := json.loads(text))
        )
        envelopes = Counter(
            (seq, _shape(json.loads(text)))
            for seq, text in conn.execute("SELECT seq, envelope FROM wal")
        )
        sessions = Counter(
            _shape(json.loads(text)) for (text,) in conn.execute("SELECT metadata FROM sessions")
        )
        dedup = Counter(_shape(list(row)) for row in conn.execute("SELECT * FROM dedup"))
    finally:
        conn.close()
    return {"audit": audit, "envelopes": envelopes, "sessions": sessions, "dedup": dedup}


@pytest.mark.slow
def test_the_raw_skeleton_writes_what_the_hub_writes(tmp_path: Path) -> None:
    # The creates' baseline does the same work: as many rows, of the same shapes, in as
    # many writes, grouped into commits alike.
    n = 40
    ours = bench_sim.virtual(bench_sim._wake, n, 1, n // 2, tmp_path / "hub.db")
    raw = bench_sim.virtual(raw_create, n, n // 2, tmp_path / "raw.db")
    hub_rows, raw_rows = _rows(tmp_path / "hub.db"), _rows(tmp_path / "raw.db")
    # The wake part then opens one more session (with knobs) and posts a seq 4 into two:
    # the shapes the skeleton writes are the hub's, and it writes each as often.
    for table in ("audit", "envelopes", "sessions", "dedup"):
        for shape, count in raw_rows[table].items():
            assert count == n, (table, shape)
            assert hub_rows[table][shape] >= n, (table, shape)
    assert sum(raw_rows["audit"].values()) == 3 * n
    assert {kind for kind, _ in raw_rows["audit"]} == {kind for kind, _ in hub_rows["audit"]}
    assert {seq for seq, _ in raw_rows["envelopes"]} == {1, 2, 3}
    assert sum(raw_rows["sessions"].values()) == sum(raw_rows["dedup"].values()) == n
    # Two appends per session, and the audit records' writes; grouped alike.
    assert ours["writes"] >= 2 * n
    assert raw["writes"] >= 2 * n
    ours_per_commit = ours["writes"] / ours["commits"]
    raw_per_commit = raw["writes"] / raw["commits"]
    assert ours_per_commit > 2
    assert raw_per_commit > 2
    assert 0.5 < raw_per_commit / ours_per_commit < 2
