"""conversation@1: two participants talk freely; nobody else may."""

from __future__ import annotations

import attrs
import pytest

from tests.test_session_types._helpers import Run, envelope, metadata
from troupe import ProtocolError, SessionState
from troupe.model import Expectation
from troupe.session_types import ConversationState, ConversationType, Transition, WindowedSummary
from troupe.session_types._conversation import DEFAULT_MAX_TURNS

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


def test_create_takes_no_knob_but_max_turns() -> None:
    with pytest.raises(ProtocolError, match=r"conversation s1 does not take knob\(s\) topic"):
        CONVERSATION.validate_create(metadata("conversation", ["a", "b"], knobs={"topic": "x"}))


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", True])
def test_max_turns_must_be_a_positive_int_or_none(bad: object) -> None:
    with pytest.raises(
        ProtocolError,
        match=rf"conversation s1: knob max_turns must be a positive int or None, got {bad!r}",
    ):
        CONVERSATION.validate_create(metadata("conversation", ["a", "b"], knobs={"max_turns": bad}))


def test_it_closes_after_max_turns_texts() -> None:
    r = Run(CONVERSATION, metadata("conversation", ["a", "b"], knobs={"max_turns": 3}))
    r.say("a")
    r.say("b")
    assert r.transitions == []
    r.say("a")
    assert r.transitions == [Transition(state=SessionState.CLOSED, reason="max_turns")]


def test_the_default_cap_is_200_and_none_lifts_it() -> None:
    assert DEFAULT_MAX_TURNS == 200
    r = run()
    for i in range(DEFAULT_MAX_TURNS - 1):
        r.say("ab"[i % 2])
    assert r.transitions == []
    r.say("a")
    assert r.transitions == [Transition(state=SessionState.CLOSED, reason="max_turns")]
    endless = Run(CONVERSATION, metadata("conversation", ["a", "b"], knobs={"max_turns": None}))
    for i in range(DEFAULT_MAX_TURNS + 5):
        endless.say("ab"[i % 2])
    assert endless.transitions == []


def test_either_participant_speaks_in_any_order_and_it_does_not_close_by_itself() -> None:
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


def test_folding_a_text_names_every_field_of_the_state() -> None:
    """``fold_turn`` builds the next state field by field (not ``attrs.evolve``: it runs for
    every text): a field added to the state must be added there, or it would be reset on
    every text. This lists the fields it names."""
    assert [f.name for f in attrs.fields(ConversationState)] == [
        "participants",
        "turn_count",
        "last_speaker_id",
        "last_envelope_id",
    ]
