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


def _rows(db: Path) -> dict[str, Any]:
    """What a store file holds of its sessions: counts, and the shape of every row."""
    conn = sqlite3.connect(db)
    try:
        audit = Counter(
            record["kind"]
            for (text,) in conn.execute("SELECT record FROM audit")
            if "session_id" in (record := json.loads(text))
        )
        envelopes = Counter(
            (seq, tuple(json.loads(text)))
            for seq, text in conn.execute("SELECT seq, envelope FROM wal")
        )
        sessions = Counter(
            (md["state"], tuple(md))
            for (text,) in conn.execute("SELECT metadata FROM sessions")
            if (md := json.loads(text))
        )
        (dedup,) = conn.execute("SELECT count(*) FROM dedup").fetchone()
    finally:
        conn.close()
    return {"audit": audit, "envelopes": envelopes, "sessions": sessions, "dedup": dedup}


@pytest.mark.slow
def test_the_raw_skeleton_writes_what_the_hub_writes(tmp_path: Path) -> None:
    # The creates' baseline does the same work: as many rows, of the same shapes.
    bench_sim.virtual(bench_sim._wake, 40, 1, 20, tmp_path / "hub.db")
    result = bench_sim.virtual(raw_create, 40, 20, tmp_path / "raw.db")
    hub, raw = _rows(tmp_path / "hub.db"), _rows(tmp_path / "raw.db")
    assert raw["audit"] == Counter(session_created=40, invite_acked=40, session_opened=40)
    assert set(raw["audit"]) == set(hub["audit"])
    assert sum(raw["envelopes"].values()) == 3 * 40
    # Invite, ack, OPENED: the hub's (the wake part also posts a seq 4 into two sessions).
    assert set(raw["envelopes"]) == {key for key in hub["envelopes"] if key[0] <= 3}
    assert sum(raw["sessions"].values()) == 40
    # Every one ACTIVE, as the hub's (but for the session the wake part opens with knobs).
    (shape,) = raw["sessions"]
    assert hub["sessions"].most_common(1) == [(shape, 40)]
    assert raw["dedup"] == 40 == hub["dedup"] - 1
    assert 0 < result["commits"] < 2 * 40  # grouped, as the hub's writer groups them
