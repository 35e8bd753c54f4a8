"""Turn history is folded as deliveries arrive: bounded per session, right after a restart."""

from __future__ import annotations

from typing import Any

import pytest
from trio.testing import MockClock

from troupe import AgentClient, Envelope, HubClient, Turn
from troupe.session_types import HistoryItem, WindowedSummary

from ..harness import WAIT, HubPair, from_, open_hub_pair


class _Counting:
    """Counts the envelopes the agent's turns read from the WAL."""

    def __init__(self, hc: HubClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.envelopes = 0
        self.calls = 0
        read = hc.read_wal

        async def counted(session_id: str, **kw: Any) -> list[Envelope]:
            page = await read(session_id, **kw)
            self.calls += 1
            self.envelopes += len(page)
            return page

        monkeypatch.setattr(hc, "read_wal", counted)


async def _expected(p: HubPair, turn: Turn) -> list[HistoryItem]:
    """The conversation's view of the WAL before the turn's trigger, rendered in full."""
    prior = [e for e in await p.wal(turn.session_id) if e.seq < turn.envelope.seq]
    stype = p.hc.session_type_for(turn.session)
    return WindowedSummary(recent_n=10).project(
        prior, participant_id=turn.agent_id, render=stype.render, name_for=p.hub.name_for
    )


def _held(client: AgentClient, session_id: str) -> int:
    return len(client._views[session_id].fold)


async def test_a_long_session_keeps_the_window_and_reads_nothing_per_turn(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_hub_pair() as p:
        sage, silent = await p.scripted("sage", lambda turn: None)
        al = await p.human("al")
        ch = await al.open(type="conversation", target="sage", knobs={"max_turns": None})
        counting = _Counting(p.hc, monkeypatch)
        for i in range(10_000):
            await al.send(ch.session_id, f"m{i}")
            if i % 500 == 499:
                await p.settle()
        await p.settle()
        assert len(silent.turns) == 10_000
        # The view holds the window, not the session; after the first turn (which read
        # what came before its trigger) every turn was served from deliveries alone.
        assert _held(sage, ch.session_id) == 10
        assert counting.calls == 1
        assert counting.envelopes < 10
        last = silent.turns[-1]
        assert last.history == await _expected(p, last)
        assert last.history[0].content == "Earlier in this session: 9989 message(s) from " + (
            al.agent_id + "."
        )


async def test_own_replies_are_read_back_one_per_turn(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_hub_pair() as p:
        sage, echo = await p.scripted("sage")
        al = await p.human("al")
        ch = await al.open(type="conversation", target="sage", knobs={"max_turns": None})
        await al.send(ch.session_id, "first")
        await al.wait_for_channel_event(channel_id=ch.session_id, predicate=from_(sage))
        counting = _Counting(p.hc, monkeypatch)
        for i in range(300):
            await al.send(ch.session_id, f"m{i}")
            await al.wait_for_channel_event(
                channel_id=ch.session_id, predicate=from_(sage), timeout=WAIT
            )
        # The agent is not delivered its own reply: each turn reads that one envelope.
        assert counting.calls == 300
        assert counting.envelopes == 300
        assert _held(sage, ch.session_id) == 10
        for turn in (echo.turns[1], echo.turns[57], echo.turns[-1]):
            assert turn.history == await _expected(p, turn)


async def test_history_after_a_reattach_is_folded_from_the_wal(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        sage, _ = await p.scripted("sage")
        al = await p.human("al", hc=p.client())  # stays connected while sage's client closes
        ch = await al.open(type="conversation", target="sage", knobs={"max_turns": None})
        for i in range(25):
            await al.send(ch.session_id, f"m{i}")
            await al.wait_for_channel_event(
                channel_id=ch.session_id, predicate=from_(sage), timeout=WAIT
            )
        await p.hc.close()
        _, back = await p.reattach("sage", again := _Recorder())
        assert isinstance(back, AgentClient)
        await al.send(ch.session_id, "after")
        await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(back), timeout=WAIT
        )
        (turn,) = again.turns
        assert turn.text == "after"
        assert turn.history == await _expected(p, turn)
        assert turn.history[0].content.startswith("Earlier in this session: 40 message(s)")


class _Recorder:
    def __init__(self) -> None:
        self.turns: list[Turn] = []

    async def respond(self, turn: Turn) -> str:
        self.turns.append(turn)
        return "ok"


async def test_a_trigger_older_than_the_view_gets_the_history_before_it(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        sage, silent = await p.scripted("sage", lambda turn: None)
        al = await p.human("al")
        ch = await al.open(type="conversation", target="sage", knobs={"max_turns": None})
        for i in range(15):
            await al.send(ch.session_id, f"m{i}")
        await p.settle()
        wal = await p.wal(ch.session_id)
        old = next(e for e in wal if e.text == "m3")
        # Handled again (as a turn owed after a restart is): the view is not rewound.
        await sage.handle(old)
        turn = silent.turns[-1]
        assert turn.envelope == old
        assert turn.history == await _expected(p, turn)
        assert [h.content for h in turn.history] == ["m0", "m1", "m2"]
        assert sage._views[ch.session_id].seq == wal[-1].seq
