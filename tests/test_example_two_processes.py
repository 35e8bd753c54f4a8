"""The two-process example runs end to end: a hub process and two agent processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "two_processes"


@pytest.mark.slow
def test_the_agents_talk_across_processes_and_the_hub_stops_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    # Each line was said in one process and heard in the other.
    assert "[ann] ann: Hello Bob, are you in another process?" in out
    assert "[bob] bob hears: Hello Bob, are you in another process?" in out
    assert "[bob] bob: Yes, goodbye." in out
    assert "[ann] ann hears: Yes, goodbye." in out
    assert "[ann] 8 envelopes in the session's WAL" in out
    assert "[hub] got SIGINT; stopping" in out
    assert out.rstrip().endswith("both agents are done and the hub stopped cleanly")
    assert "Traceback" not in out + done.stderr
