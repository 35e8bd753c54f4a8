"""Every example runs to completion on its own, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))

#: Lines each example must print: what its docstring promises it shows.
PRINTS: dict[str, tuple[str, ...]] = {
    "auction.py": ("bid from bo: 700 EUR", "selected: bo", "phase: awarded"),
    "broadcast.py": (
        "bob heard: deploy at noon",
        "ada heard: ada: you are on call",
        "hears only its initiator ops, got bob",
        "closed: announcement over",
    ),
    "consult_a_human.py": (
        "scheduler got: 'Tuesday at 10 works.'",
        "session closed: consulting_complete",
    ),
    "expectations.py": (
        "after 120 s: turn_within -> warn (bob)",
        "after 600 s: turn_within -> hide (bob)",
        "next to speak: ada",
    ),
    "gatekeeper.py": (
        "eve was refused: True",
        "gate: welcome, ada",
        "health: HubHealth(serving=True, supervisor='running', store_reachable=True, "
        "live_sessions=1, connections=1)",
        "gate is unregistered",
    ),
    "listeners.py": (
        "[listener] consulting session created for me, echo",
        "reply: echo: hello",
        "the arbiter picked: bo",
        "[listener] session closed: deal",
        "[listener] bo unregistered",
        "[stream] texts accepted: ['hello', 'echo: hello', 'Who paints my fence?'",
    ),
    "notification.py": (
        "pager got: build 1234 is green",
        "pager saw the session close: notification_done",
        "a second message is refused: the session is closed",
    ),
    "quickstart.py": ("echo: hello",),
    "round_table.py": ("dora has nothing to add.", "7 lines spoken, 15 envelopes in the WAL"),
    "streaming.py": (
        "  chunk 0: 'Structured '",
        "  chunk 11: 'it.'",
        "final: Structured concurrency means every task has a parent that waits for it.",
        "every chunk names the final envelope's stream: True",
        "the WAL holds 2 texts; 12 chunks were never stored",
    ),
    "supervision.py": (
        "ask Explode() -> ActorDead",
        "ask Total() -> 7",
        "tally: stopped with total 7",
        "RestartIntensityExceeded: supervisor 'strict': more than 2 restarts in 1.0s",
    ),
    "workflow_handoff.py": (
        "[-> billing: refund request]",
        "context: {'resolved': True, 'refund_eur': 12}",
        "closed: resolved",
    ),
    "workflow_pipeline.py": (
        "editor: otters hold hands while sleeping",
        "closed: sequence_complete",
    ),
}


def test_every_example_has_its_expected_output() -> None:
    assert sorted(PRINTS) == [p.name for p in EXAMPLES]


def test_there_are_examples() -> None:
    assert EXAMPLES, "examples/ has no *.py files"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_exits_cleanly(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for line in PRINTS[path.name]:
        assert line in done.stdout, f"{path.name} did not print {line!r}:\n{done.stdout}"
