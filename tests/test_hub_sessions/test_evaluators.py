"""The evaluators: pure functions of metadata, expected turn, activity summary and now."""

from __future__ import annotations

import attrs
import pytest

from tests.test_session_types._helpers import metadata
from troupe.hub._activity import Activity, Mark
from troupe.hub._evaluators import Late, Seen, evaluate, threshold
from troupe.model import Expectation, SessionState, iso, parse_iso
from troupe.session_types import ExpectedTurn

META = metadata("discussion", ["a", "b", "c"])
CREATED = parse_iso(META.created_at)
START = Mark(CREATED, 0)


def expect(
    name: str, seconds: float | None = None, applies_to: tuple[str, ...] | None = None
) -> Expectation:
    params = {} if seconds is None else {"seconds": seconds}
    return Expectation(name=name, params=params, applies_to=applies_to)


def seen(
    after: float,
    activity: Activity | None = None,
    turn: ExpectedTurn | None = None,
    state: SessionState = SessionState.ACTIVE,
    pending_acks: tuple[str, ...] = (),
) -> Seen:
    meta = attrs.evolve(META, state=state, pending_acks=pending_acks)
    return Seen(meta, turn, activity or Activity(), CREATED + after)


def test_defaults_and_bad_params() -> None:
    assert [threshold(expect(n)) for n in ("acks_within", "reply_within")] == [30, 600]
    assert [threshold(expect(n)) for n in ("max_silence", "turn_within")] == [3600, 120]
    assert threshold(expect("turn_within", 2.5)) == 2.5
    for bad in (-1, "10", True, None):
        with pytest.raises(ValueError, match="turn_within: seconds must be a non-negative"):
            evaluate(Expectation(name="turn_within", params={"seconds": bad}), seen(999))


def test_an_unknown_evaluator_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        evaluate(expect("eventually"), seen(999))


def test_acks_within_names_the_invitees_still_pending() -> None:
    exp = expect("acks_within")
    pending = SessionState.PENDING
    assert evaluate(exp, seen(29.9, state=pending, pending_acks=("c",))) == []
    assert evaluate(exp, seen(30, state=pending, pending_acks=("c",))) == [Late("c", START)]
    assert evaluate(exp, seen(99, pending_acks=("c",))) == []  # ACTIVE: acks are done


def test_reply_within_names_who_left_a_message_unanswered() -> None:
    exp = expect("reply_within", 10)
    asked = Mark(CREATED + 5, 3)
    activity = Activity(
        sent={"a": asked, "c": Mark(CREATED + 6, 4)},
        received={"b": asked, "c": asked, "a": Mark(CREATED + 6, 4)},
    )
    assert evaluate(exp, seen(14.9, activity)) == []
    # c answered after the question; a's message from c is 9.99 s old; b never answered.
    assert evaluate(exp, seen(15.99, activity)) == [Late("b", asked)]
    assert evaluate(exp, seen(99, activity, state=SessionState.CLOSED)) == []


def test_max_silence_counts_from_the_last_content_or_creation() -> None:
    exp = expect("max_silence", 60)
    assert evaluate(exp, seen(60)) == [Late("", START)]
    said = Activity(content=Mark(CREATED + 50, 7))
    assert evaluate(exp, seen(109, said)) == []
    assert evaluate(exp, seen(110, said)) == [Late("", Mark(CREATED + 50, 7))]
    assert evaluate(exp, seen(1e6, state=SessionState.PENDING)) == []


def test_turn_within_names_the_expected_speaker() -> None:
    exp = expect("turn_within")
    turn = ExpectedTurn(agent_id="b")
    began = Activity(turn=Mark(CREATED + 10, 2))
    assert evaluate(exp, seen(129, began, turn)) == []
    assert evaluate(exp, seen(130, began, turn)) == [Late("b", Mark(CREATED + 10, 2))]
    assert evaluate(exp, seen(120)) == [Late("", START)]


def test_applies_to_takes_ids_and_role_names() -> None:
    turn_b = ExpectedTurn(agent_id="b")
    turn_a = ExpectedTurn(agent_id="a")
    assert evaluate(expect("turn_within", applies_to=("b",)), seen(120, turn=turn_b))
    assert not evaluate(expect("turn_within", applies_to=("c",)), seen(120, turn=turn_b))
    by_role = expect("turn_within", applies_to=("initiator",))
    assert evaluate(by_role, seen(120, turn=turn_a))
    assert not evaluate(by_role, seen(120, turn=turn_b))
    assert evaluate(by_role, seen(120)) == [Late("", START)]  # session-wide always applies


@pytest.mark.parametrize("name", ["acks_within", "max_silence", "turn_within", "reply_within"])
def test_a_deadline_is_met_to_the_microsecond_despite_float_noise(name: str) -> None:
    # A hub clock that is not a whole number of seconds: a mark stamped at `epoch` and read
    # back from its ISO timestamp, and `now` exactly 120 s later, differ by 119.9999995 in
    # floats. Timestamps have microsecond resolution, so that is 120 s: late now, not one
    # sweep later (which made examples/expectations.py print 120 s or 130 s at random).
    epoch = 1790763774.6189766
    at = parse_iso(iso(epoch))
    assert (epoch + 120.0) - at < 120.0  # the noise this test is about
    meta = attrs.evolve(
        META,
        created_at=iso(epoch),
        state=SessionState.PENDING if name == "acks_within" else SessionState.ACTIVE,
        pending_acks=("c",) if name == "acks_within" else (),
    )
    mark = Mark(at, 1)
    activity = Activity(received={"b": mark}, content=mark, turn=mark)
    turn = ExpectedTurn(agent_id="b")
    late = evaluate(expect(name, 120), Seen(meta, turn, activity, epoch + 120.0))
    assert len(late) == 1
