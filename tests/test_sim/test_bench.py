"""The simulation benchmark still runs, at a tiny size, and reports every figure."""

from __future__ import annotations

import pytest

from benchmarks import bench_sim
from benchmarks.__main__ import available


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
    ):
        assert figure in out
    assert "passivated before the next: 20)" in out
