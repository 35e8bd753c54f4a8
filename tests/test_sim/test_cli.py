"""``troupe sim`` end to end, in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from troupe.cli import main
from troupe.sim.scenarios import SCENARIOS

#: Rows of the summary a seed reproduces (the others are measured on the machine).
REPRODUCED = (
    "scenario / seed",
    "clock",
    "agents",
    "sessions",
    "open / live / passivated",
    "envelopes",
    "posts",
    "restarts",
    "passivations / rehydrations",
    "accepted / rejected / dead letters",
    "agents who know the rumour",
    "WAL hash",
)
ROW = re.compile(r"^│ (?P<label>.+?) +│ (?P<value>.+?) +│$")


def troupe_sim(*args: str, hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "troupe", "sim", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def rows(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        match = ROW.match(line)
        if match:
            found[match["label"]] = match["value"]
    return found


def test_help_documents_every_option_and_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sim", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    for option in (
        "--agents N",
        "--sessions M",
        "--seed S",
        "--virtual-time",
        "--wall-time",
        "--db PATH",
        "--time-scale X",
        "--passivate-after SECONDS",
        "--concurrency K",
        "--log-level",
    ):
        assert option in help_text
    for name in SCENARIOS:
        assert f"  {name} " in help_text


@pytest.mark.slow
def test_the_same_seed_prints_the_same_summary_in_another_process() -> None:
    args = ("gossip", "--agents", "20", "--sessions", "30", "--seed", "5")
    first = troupe_sim(*args, hash_seed="1")
    second = troupe_sim(*args, hash_seed="2")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    a, b = rows(first.stdout), rows(second.stdout)
    assert {k: a[k] for k in REPRODUCED} == {k: b[k] for k in REPRODUCED}
    assert re.fullmatch(r"[0-9a-f]{64}", a["WAL hash"])
    assert a["agents"] == "20"
    assert a["sessions"] == "30"
    for label in ("envelopes/s (wall)", "post latency p50 / p99", "peak RSS"):
        assert label in a
    # The progress bar went to stderr, and finished.
    assert "running sessions" in first.stderr
    assert "30/30" in first.stderr

    other = troupe_sim("gossip", "--agents", "20", "--sessions", "30", "--seed", "6")
    assert other.returncode == 0, other.stderr
    assert rows(other.stdout)["WAL hash"] != a["WAL hash"]


@pytest.mark.slow
def test_a_run_on_sqlite_is_reproducible_and_wants_a_new_file(tmp_path: Path) -> None:
    args = ("crash-storm", "--agents", "10", "--sessions", "12", "--seed", "3")
    first = troupe_sim(*args, "--db", str(tmp_path / "first.db"))
    second = troupe_sim(*args, "--db", str(tmp_path / "second.db"))
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "first.db").stat().st_size > 0
    assert rows(first.stdout)["WAL hash"] == rows(second.stdout)["WAL hash"]
    assert rows(first.stdout)["accepted ids checked / lost / twice"].endswith(" / 0 / 0")

    again = troupe_sim(*args, "--db", str(tmp_path / "first.db"))
    assert again.returncode == 2
    assert "exists" in again.stderr


@pytest.mark.slow
def test_a_wall_time_run_completes() -> None:
    result = troupe_sim("market", "--agents", "6", "--sessions", "6", "--wall-time")
    assert result.returncode == 0, result.stderr
    summary = rows(result.stdout)
    assert summary["clock"] == "wall"
    assert summary["sessions"] == "6"


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["chess"],
        ["gossip", "--agents", "0"],
        ["gossip", "--virtual-time", "--wall-time"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["sim", *args])
        assert exit_.value.code == 2
    assert main(["sim", "round-tables", "--agents", "2"]) == 2
    assert "at least 3 agents" in capsys.readouterr().err
