"""discussion@1: participants speak in a fixed rotation that wraps round."""

from __future__ import annotations

import attrs
import pytest

from tests.test_session_types._helpers import Run, envelope, metadata
from troupe import ProtocolError
from troupe.model import EV_EXPECTATION_VIOLATED, Envelope, Expectation, SessionState
from troupe.session_types import (
    DiscussionState,
    DiscussionType,
    ExpectedTurn,
    NamedWindowedSummary,
    Transition,
)

DISCUSSION = DiscussionType()


def run(ids: list[str] | None = None) -> Run:
    return Run(DISCUSSION, metadata("discussion", ids or ["a", "b", "c"]))


def test_identity_and_expectations() -> None:
    assert (DISCUSSION.name, DISCUSSION.version) == ("discussion", 1)
    assert DISCUSSION.expectations == (
        Expectation(name="turn_within", on_violation="warn", params={"seconds": 120}),
        Expectation(name="turn_within", on_violation="hide", params={"seconds": 600}),
    )


def test_create_needs_at_least_two() -> None:
    with pytest.raises(ProtocolError, match="discussion s1 needs at least 2 participants, got 1"):
        DISCUSSION.validate_create(metadata("discussion", ["a"]))
    DISCUSSION.validate_create(metadata("discussion", ["a", "b"]))
    DISCUSSION.validate_create(metadata("discussion", [f"p{i}" for i in range(12)]))


def test_create_accepts_round_robin_only() -> None:
    DISCUSSION.validate_create(
        metadata("discussion", ["a", "b"], knobs={"ordering": "round_robin"})
    )
    for ordering in ("random", "", 3):
        with pytest.raises(
            ProtocolError,
            match=f"discussion s1: ordering {ordering!r} not supported .only round_robin.",
        ):
            DISCUSSION.validate_create(
                metadata("discussion", ["a", "b"], knobs={"ordering": ordering})
            )


def test_create_refuses_other_knobs() -> None:
    with pytest.raises(ProtocolError, match=r"discussion s1 does not take knob\(s\) order$"):
        DISCUSSION.validate_create(metadata("discussion", ["a", "b"], knobs={"order": "x"}))


def test_the_rotation_starts_at_the_creator_and_wraps() -> None:
    r = run()
    assert DISCUSSION.expected_next(r.meta, r.state) == ExpectedTurn(agent_id="a")
    seen = []
    for sender in ["a", "b", "c", "a", "b", "c", "a"]:
        env = r.say(sender)
        turn = DISCUSSION.expected_next(r.meta, r.state)
        assert turn is not None
        assert turn.triggering_envelope_id == env.envelope_id
        seen.append(turn.agent_id)
    assert seen == ["b", "c", "a", "b", "c", "a", "b"]
    assert r.state == DiscussionState(
        participant_order=("a", "b", "c"),
        expected_next_speaker="b",
        last_speaker_id="a",
        last_envelope_id="e7",
        turn_count=7,
    )
    assert r.transitions == []


@pytest.mark.parametrize("sender", ["b", "c", "stranger"])
def test_only_the_expected_speaker_may_speak(sender: str) -> None:
    r = run()
    with pytest.raises(ProtocolError, match=f"^discussion s1 expects a to speak, got {sender}$"):
        r.say(sender)
    r.say("a")
    with pytest.raises(ProtocolError, match="discussion s1 expects b to speak, got a"):
        r.say("a")
    assert len(r.wal) == 1


def test_a_subset_audience_still_passes_the_floor() -> None:
    r = run()
    r.post(envelope("a", audience=["c"]))
    assert r.state.expected_next_speaker == "b"


def test_the_order_follows_participant_order_not_list_position() -> None:
    meta = metadata("discussion", ["a", "b", "c"])
    a, b, c = meta.participants
    shuffled = attrs.evolve(meta, participants=(c, a, b))
    state = DISCUSSION.initial_state(shuffled)
    assert state.participant_order == ("a", "b", "c")
    assert state.expected_next_speaker == "a"


def test_fold_ignores_a_sender_outside_the_order() -> None:
    state = run().state
    assert DISCUSSION.fold(envelope("stranger", seq=1), state) == state


@pytest.mark.parametrize(("count", "window"), [(2, 4), (3, 6), (5, 10)])
def test_default_view_keeps_two_rounds(count: int, window: int) -> None:
    r = run([f"p{i}" for i in range(count)])
    assert DISCUSSION.default_view_policy(r.meta, "p1") == NamedWindowedSummary(recent_n=window)


def stall(action: str, *violators: str) -> Envelope:
    data = {
        "expectation": "turn_within",
        "on_violation": action,
        "violators": list(violators),
        "detail": {"elapsed_seconds": 600},
    }
    return Envelope(
        session_id="s1", sender_id="a", event_type=EV_EXPECTATION_VIOLATED, event_data=data
    )


def test_hide_skips_the_stalled_speakers_turn_once() -> None:
    r = run()
    r.say("a")
    notice = r.post(stall("hide", "b"))
    assert DISCUSSION.expected_next(r.meta, r.state) == ExpectedTurn(
        agent_id="c", triggering_envelope_id=notice.envelope_id
    )
    assert (r.state.turn_count, r.state.participant_order) == (1, ("a", "b", "c"))
    r.say("c")
    r.say("a")
    assert r.state.expected_next_speaker == "b"  # b keeps their place in the next round
    assert DISCUSSION.render(notice) == "[turn_within] b missed their turn; the floor passes on."


def test_a_stale_hide_or_a_warn_changes_nothing() -> None:
    r = run()
    r.say("a")
    before = r.state
    r.post(stall("hide", "a"))
    r.post(stall("warn", "b"))
    assert r.state == before
    assert DISCUSSION.render(r.wal[-1]) is None


def test_remove_drops_the_speaker_from_the_rotation() -> None:
    r = run()
    r.say("a")
    r.post(stall("remove", "b"))
    assert r.state.participant_order == ("a", "c")
    assert r.state.expected_next_speaker == "c"
    r.say("c")
    r.say("a")
    assert r.state.expected_next_speaker == "c"
    with pytest.raises(ProtocolError, match="discussion s1 expects c to speak, got b"):
        r.say("b")
    r.post(stall("remove", "a"))  # not the holder: only leaves the rotation
    assert (r.state.participant_order, r.state.expected_next_speaker) == (("c",), "c")
    assert r.transitions == []


def test_removing_the_last_speaker_closes_with_no_participants() -> None:
    r = run(["a", "b"])
    r.post(stall("remove", "a", "b"))
    assert r.state.expected_next_speaker is None
    assert r.transitions == [Transition(state=SessionState.CLOSED, reason="no_participants")]
    assert DISCUSSION.expected_next(metadata("discussion", ["a", "b"]), r.state) is None
    with pytest.raises(ProtocolError, match="discussion s1 has nobody left in its rotation"):
        DISCUSSION.validate_send(metadata("discussion", ["a", "b"]), envelope("a"), r.state)
