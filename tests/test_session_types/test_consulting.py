"""consulting@1: one question from the initiator, one reply from the respondent, closed."""

from __future__ import annotations

import attrs
import pytest

from tests.test_session_types._helpers import Run, envelope, metadata
from troupe import ProtocolError
from troupe.model import EV_EXPECTATION_VIOLATED, Expectation, ParticipantRole, SessionState
from troupe.session_types import (
    ConsultingPhase,
    ConsultingState,
    ConsultingType,
    ExpectedTurn,
    FullTranscript,
    Transition,
)

CONSULTING = ConsultingType()


def run() -> Run:
    return Run(CONSULTING, metadata("consulting", ["a", "b"]))


def test_identity_and_expectations() -> None:
    assert (CONSULTING.name, CONSULTING.version) == ("consulting", 1)
    assert CONSULTING.expectations == (
        Expectation(name="acks_within", on_violation="auto_close", params={"seconds": 30}),
        Expectation(name="reply_within", on_violation="auto_close", params={"seconds": 600}),
    )


@pytest.mark.parametrize("ids", [["a"], ["a", "b", "c"]])
def test_create_needs_exactly_two(ids: list[str]) -> None:
    with pytest.raises(
        ProtocolError, match=f"consulting s1 needs exactly 2 participants, got {len(ids)}"
    ):
        CONSULTING.validate_create(metadata("consulting", ids))


def test_create_needs_a_respondent() -> None:
    meta = metadata("consulting", ["a", "b"])
    CONSULTING.validate_create(meta)
    other = attrs.evolve(meta.participants[1], role=ParticipantRole.PARTICIPANT)
    bad = attrs.evolve(meta, participants=(meta.participants[0], other))
    with pytest.raises(
        ProtocolError, match="consulting s1 needs a respondent, but b has role participant"
    ):
        CONSULTING.validate_create(bad)


def test_create_takes_no_knobs() -> None:
    with pytest.raises(ProtocolError, match=r"consulting s1 does not take knob\(s\) ordering"):
        CONSULTING.validate_create(metadata("consulting", ["a", "b"], knobs={"ordering": "x"}))


def test_a_full_exchange_closes_with_consulting_complete() -> None:
    r = run()
    assert r.state == ConsultingState(initiator_id="a", respondent_id="b")
    assert CONSULTING.expected_next(r.meta, r.state) == ExpectedTurn(agent_id="a")

    question = r.say("a", "what is 6 x 7?")
    assert r.state == ConsultingState(
        initiator_id="a",
        respondent_id="b",
        phase=ConsultingPhase.AWAITING_REPLY,
        last_envelope_id="e1",
    )
    assert r.transitions == []
    assert CONSULTING.expected_next(r.meta, r.state) == ExpectedTurn(
        agent_id="b", triggering_envelope_id=question.envelope_id
    )

    r.say("b", "42")
    assert r.state == ConsultingState(
        initiator_id="a", respondent_id="b", phase=ConsultingPhase.COMPLETE, last_envelope_id="e2"
    )
    assert r.transitions == [Transition(state=SessionState.CLOSED, reason="consulting_complete")]
    assert r.meta.state is SessionState.CLOSED
    assert CONSULTING.expected_next(r.meta, r.state) is None
    # Even a caller holding stale ACTIVE metadata is told nobody is expected.
    assert CONSULTING.expected_next(metadata("consulting", ["a", "b"]), r.state) is None


@pytest.mark.parametrize("sender", ["b", "stranger"])
def test_only_the_initiator_may_ask(sender: str) -> None:
    r = run()
    with pytest.raises(
        ProtocolError, match=f"consulting s1 expects first send from initiator a, got {sender}"
    ):
        r.say(sender)
    assert r.wal == []


@pytest.mark.parametrize("sender", ["a", "stranger"])
def test_only_the_respondent_may_reply(sender: str) -> None:
    r = run()
    r.say("a")
    with pytest.raises(
        ProtocolError, match=f"consulting s1 expects reply from respondent b, got {sender}"
    ):
        r.say(sender)
    assert len(r.wal) == 1


@pytest.mark.parametrize("sender", ["a", "b"])
def test_nothing_more_once_complete(sender: str) -> None:
    r = run()
    r.say("a")
    r.say("b")
    with pytest.raises(
        ProtocolError, match=f"consulting s1 is already complete; refused text from {sender}"
    ):
        CONSULTING.validate_send(r.meta, envelope(sender), r.state)


def test_the_audience_is_not_checked() -> None:
    r = run()
    r.post(envelope("a", audience=["a"]))
    r.post(envelope("b", audience=[]))
    assert r.transitions[-1].reason == "consulting_complete"


def test_informational_events_do_not_answer_the_question() -> None:
    r = run()
    r.say("a")
    r.post(envelope("b", event_type=EV_EXPECTATION_VIOLATED))
    assert r.state.phase is ConsultingPhase.AWAITING_REPLY
    assert r.transitions == []


def test_fold_ignores_a_text_from_whoever_lacks_the_floor() -> None:
    state = CONSULTING.initial_state(metadata("consulting", ["a", "b"]))
    assert CONSULTING.fold(envelope("b", seq=1), state) == state
    asked = CONSULTING.fold(envelope("a", seq=1), state)
    assert CONSULTING.fold(envelope("a", seq=2), asked) == asked
    done = CONSULTING.fold(envelope("b", seq=2), asked)
    assert CONSULTING.fold(envelope("b", seq=3), done) == done


def test_default_view_is_the_full_transcript() -> None:
    r = run()
    assert CONSULTING.default_view_policy(r.meta, "b") == FullTranscript()
