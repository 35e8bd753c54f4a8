"""The examples' ``main()`` run in-process on virtual time, and print what they promise."""

from __future__ import annotations

import pytest
from trio.testing import MockClock

from ..harness import example


async def test_quickstart(autojump_clock: MockClock, capsys: pytest.CaptureFixture[str]) -> None:
    await example("quickstart").main()
    assert capsys.readouterr().out == "echo: hello\n"


async def test_consult_a_human(
    autojump_clock: MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    await example("consult_a_human").main()
    assert capsys.readouterr().out.splitlines() == [
        "alice sees: 'When can you meet next week?'",
        "scheduler got: 'Tuesday at 10 works.'",
        "session closed: consulting_complete",
    ]


async def test_gatekeeper(autojump_clock: MockClock, capsys: pytest.CaptureFixture[str]) -> None:
    await example("gatekeeper").main()
    assert capsys.readouterr().out.splitlines() == [
        "eve was refused: True",
        "ada owes the first turn, since the session opened: True",
        "gate: welcome, ada",
        "the discussion's state: DiscussionState",
        "health: HubHealth(serving=True, supervisor='running', store_reachable=True, "
        "live_sessions=1, connections=1)",
        "gate is unregistered",
    ]


async def test_round_table(autojump_clock: MockClock, capsys: pytest.CaptureFixture[str]) -> None:
    await example("round_table").main()
    lines = capsys.readouterr().out.splitlines()
    spoken = [line for line in lines if not line.startswith("  (")]
    assert spoken == [
        "ada: Shall we pick a name for the project?",
        "brian: Something short.",
        "chen: Something about actors on a stage.",
        "dora: How about troupe?",
        "ada: Then troupe it is.",
        "brian: Agreed.",
        "chen: Ship it.",
        "dora has nothing to add.",
        "7 lines spoken, 15 envelopes in the WAL",
    ]
    assert "  (dora has heard 6 line(s); last: '[brian]: Agreed.')" in lines
