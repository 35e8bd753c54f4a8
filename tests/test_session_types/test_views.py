"""View policies: visibility, roles, windowing and names (reference §2.10)."""

from __future__ import annotations

import pytest

from tests.test_session_types._helpers import envelope
from troupe.model import EV_EXPECTATION_VIOLATED, EV_SESSION_OPENED, EV_TEXT, Envelope
from troupe.session_types import (
    FullTranscript,
    HistoryItem,
    NamedTranscript,
    NamedWindowedSummary,
    ViewPolicy,
    WindowedSummary,
)

NAMES = {"a": "Alice", "b": "Bob", "c": "Carol", "z": "Zed"}


def render(env: Envelope) -> str | None:
    return env.text if env.event_type == EV_TEXT else None


def name_for(agent_id: str) -> str:
    return NAMES[agent_id]


def view(policy: ViewPolicy, wal: list[Envelope], me: str = "a") -> list[HistoryItem]:
    return policy.project(wal, participant_id=me, render=render, name_for=name_for)


def talk(*senders: str) -> list[Envelope]:
    return [envelope(s, f"m{i}", seq=i) for i, s in enumerate(senders, start=1)]


def test_full_transcript_makes_own_lines_assistant_and_others_user() -> None:
    items = view(FullTranscript(), talk("a", "b", "c"))
    assert items == [
        HistoryItem(role="assistant", content="m1", sender_id="a", envelope_id="e1"),
        HistoryItem(role="user", content="m2", sender_id="b", envelope_id="e2"),
        HistoryItem(role="user", content="m3", sender_id="c", envelope_id="e3"),
    ]


def test_views_show_only_what_is_visible_and_rendered() -> None:
    wal = [
        envelope("b", "to c only", seq=1, audience=["c"]),
        envelope("b", "to me", seq=2, audience=["a"]),
        envelope("a", "my aside to c", seq=3, audience=["c"]),
        envelope("b", "opened", seq=4, event_type=EV_SESSION_OPENED),
        envelope("b", "warned", seq=5, event_type=EV_EXPECTATION_VIOLATED),
        envelope("c", "to all", seq=6),
    ]
    for policy in (
        FullTranscript(),
        NamedTranscript(),
        WindowedSummary(recent_n=5),
        NamedWindowedSummary(recent_n=5),
    ):
        assert [i.envelope_id for i in view(policy, wal)] == ["e2", "e3", "e6"], policy.name
        assert [i.envelope_id for i in view(policy, wal, me="c")] == ["e1", "e3", "e6"]


def test_windowed_summary_keeps_the_window_verbatim_when_short() -> None:
    wal = talk("a", "b", "a")
    assert view(WindowedSummary(recent_n=3), wal) == view(FullTranscript(), wal)


def test_windowed_summary_summarises_what_falls_out_of_the_window() -> None:
    wal = talk("c", "b", "c", "a", "b", "a")
    items = view(WindowedSummary(recent_n=2), wal)
    assert items[0] == HistoryItem(
        role="system", content="Earlier in this session: 4 message(s) from a, b, c."
    )
    assert [(i.role, i.content) for i in items[1:]] == [("user", "m5"), ("assistant", "m6")]


def test_the_summary_counts_only_visible_messages() -> None:
    wal = [*talk("b", "b"), envelope("c", "hidden", seq=3, audience=["b"]), *talk("b")]
    items = view(WindowedSummary(recent_n=1), wal)
    assert items[0].content == "Earlier in this session: 2 message(s) from b."
    assert len(items) == 2


def test_named_transcript_prefixes_other_speakers_only() -> None:
    items = view(NamedTranscript(), talk("a", "b", "c"))
    assert [i.content for i in items] == ["m1", "[Bob]: m2", "[Carol]: m3"]
    assert [i.sender_id for i in items] == ["a", "b", "c"]


def test_named_windowed_summary_lists_names_sorted() -> None:
    wal = talk("z", "b", "a", "c", "b")
    items = view(NamedWindowedSummary(recent_n=2), wal)
    assert [i.content for i in items] == [
        "Earlier in this session: 3 message(s) from Alice, Bob, Zed.",
        "[Carol]: m4",
        "[Bob]: m5",
    ]


def test_view_names() -> None:
    assert FullTranscript().name == "full_transcript"
    assert WindowedSummary(recent_n=1).name == "windowed_summary"
    assert NamedTranscript().name == "named_transcript"
    assert NamedWindowedSummary(recent_n=1).name == "named_windowed_summary"


@pytest.mark.parametrize("recent_n", [0, -3])
def test_a_window_below_one_is_refused(recent_n: int) -> None:
    with pytest.raises(ValueError, match=f"recent_n must be at least 1, got {recent_n}"):
        WindowedSummary(recent_n=recent_n)
    with pytest.raises(ValueError, match=f"recent_n must be at least 1, got {recent_n}"):
        NamedWindowedSummary(recent_n=recent_n)


def test_an_empty_session_has_an_empty_view() -> None:
    assert view(NamedWindowedSummary(recent_n=1), []) == []
