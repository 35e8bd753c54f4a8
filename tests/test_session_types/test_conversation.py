"""conversation@1: two participants talk freely; nobody else may."""

from __future__ import annotations

import pytest

from tests.test_session_types._helpers import Run, envelope, metadata
from troupe import ProtocolError
from troupe.model import Expectation
from troupe.session_types import ConversationState, ConversationType, WindowedSummary

CONVERSATION = ConversationType()


def run() -> Run:
    return Run(CONVERSATION, metadata("conversation", ["a", "b"]))


def test_identity_and_expectations() -> None:
    assert (CONVERSATION.name, CONVERSATION.version) == ("conversation", 1)
    assert CONVERSATION.expectations == (
        Expectation(name="max_silence", on_violation="audit", params={"seconds": 3600}),
    )


@pytest.mark.parametrize("ids", [["a"], ["a", "b", "c"]])
def test_create_needs_exactly_two(ids: list[str]) -> None:
    with pytest.raises(
        ProtocolError, match=f"conversation s1 needs exactly 2 participants, got {len(ids)}"
    ):
        CONVERSATION.validate_create(metadata("conversation", ids))


def test_create_takes_no_knobs() -> None:
    with pytest.raises(ProtocolError, match=r"conversation s1 does not take knob\(s\) topic"):
        CONVERSATION.validate_create(metadata("conversation", ["a", "b"], knobs={"topic": "x"}))


def test_either_participant_speaks_in_any_order_and_it_never_closes() -> None:
    r = run()
    for sender in ["b", "b", "a", "b", "a", "a"]:
        r.say(sender)
        assert CONVERSATION.expected_next(r.meta, r.state) is None
    assert r.state == ConversationState(
        participants=("a", "b"), turn_count=6, last_speaker_id="a", last_envelope_id="e6"
    )
    assert r.transitions == []


def test_non_participants_are_refused() -> None:
    r = run()
    r.say("a")
    with pytest.raises(
        ProtocolError, match="conversation s1 only accepts sends from participants, got c"
    ):
        r.say("c")
    assert len(r.wal) == 1
    assert r.state.turn_count == 1


def test_a_subset_audience_still_counts() -> None:
    r = run()
    r.post(envelope("b", audience=["a"]))
    assert r.state.last_speaker_id == "b"


def test_default_view_keeps_ten() -> None:
    r = run()
    assert CONVERSATION.default_view_policy(r.meta, "a") == WindowedSummary(recent_n=10)
