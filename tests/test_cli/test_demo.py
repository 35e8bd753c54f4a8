"""``troupe demo``: the README's first command, end to end in a subprocess."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_a_network_and_reopens_its_store() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "troupe", "demo"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "[consulting] researcher: An actor is a task" in out
    assert "(session closed: consulting_complete)" in out
    assert "[discussion] critic: Good. Ship it." in out
    summary = dict(
        line.split(None, 1) for line in out.splitlines()[-4:] if not line.startswith("  audit")
    )
    assert summary["agents"] == "4"
    assert summary["sessions"] == "2"
    assert int(summary["envelopes"]) >= 15
