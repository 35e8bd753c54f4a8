"""The evaluators: pure functions of metadata, expected turn, activity summary and now."""

from __future__ import annotations

import attrs
import pytest

from tests.test_session_types._helpers import metadata
from troupe.hub._activity import Activity, Mark
from troupe.hub._evaluators import (
    Late,
    acks_within,
    applies,
    max_silence,
    reply_within,
    threshold,
    turn_within,
)
from troupe.model import Expectation, SessionState, parse_iso
from troupe.session_types import ExpectedTurn

META = metadata("discussion", ["a", "b", "c"])
CREATED = parse_iso(META.created_at)
START = Mark(CREATED, 0)


def expect(name: str, seconds: object = None, **kw: object) -> Expectation:
    params = {} if seconds is None else {"seconds": seconds}
    return Expectation(name=name, params=params, **kw)  # type: ignore[arg-type]


def test_defaults_and_bad_params() -> None:
    assert [threshold(expect(n)) for n in ("acks_within", "reply_within")] == [30, 600]
    assert [threshold(expect(n)) for n in ("max_silence", "turn_within")] == [3600, 120]
    assert threshold(expect("turn_within", 2.5)) == 2.5
    for bad in (-1, "10", True, None):
        with pytest.raises(ValueError, match="turn_within: seconds must be a non-negative"):
            threshold(Expectation(name="turn_within", params={"seconds": bad}))


def test_acks_within_names_the_invitees_still_pending() -> None:
    pending = attrs.evolve(META, state=SessionState.PENDING, pending_acks=("c",))
    exp = expect("acks_within")
    assert acks_within(exp, pending, None, Activity(), CREATED + 29.9) == []
    assert acks_within(exp, pending, None, Activity(), CREATED + 30) == [Late("c", START)]
    assert acks_within(exp, META, None, Activity(), CREATED + 99) == []  # ACTIVE: acks are done


def test_reply_within_names_who_left_a_message_unanswered() -> None:
    exp = expect("reply_within", 10)
    asked = Mark(CREATED + 5, 3)
    activity = Activity(
        sent={"a": asked, "c": Mark(CREATED + 6, 4)},
        received={"b": asked, "c": asked, "a": Mark(CREATED + 6, 4)},
    )
    assert reply_within(exp, META, None, activity, CREATED + 14.9) == []
    # c answered after the question; a's message from c is 9.99 s old; b never answered.
    assert reply_within(exp, META, None, activity, CREATED + 15.99) == [Late("b", asked)]
    closed = attrs.evolve(META, state=SessionState.CLOSED)
    assert reply_within(exp, closed, None, activity, CREATED + 99) == []


def test_max_silence_counts_from_the_last_content_or_creation() -> None:
    exp = expect("max_silence", 60)
    assert max_silence(exp, META, None, Activity(), CREATED + 60) == [Late("", START)]
    said = Activity(content=Mark(CREATED + 50, 7))
    assert max_silence(exp, META, None, said, CREATED + 109) == []
    assert max_silence(exp, META, None, said, CREATED + 110) == [Late("", Mark(CREATED + 50, 7))]
    pending = attrs.evolve(META, state=SessionState.PENDING)
    assert max_silence(exp, pending, None, Activity(), CREATED + 1e6) == []


def test_turn_within_names_the_expected_speaker() -> None:
    exp = expect("turn_within")
    turn = ExpectedTurn(agent_id="b")
    began = Activity(turn=Mark(CREATED + 10, 2))
    assert turn_within(exp, META, turn, began, CREATED + 129) == []
    assert turn_within(exp, META, turn, began, CREATED + 130) == [Late("b", Mark(CREATED + 10, 2))]
    assert turn_within(exp, META, None, Activity(), CREATED + 120) == [Late("", START)]


def test_applies_to_takes_ids_and_role_names() -> None:
    everyone = expect("turn_within")
    assert applies(everyone, META, "b")
    by_id = expect("turn_within", applies_to=("b",))
    assert applies(by_id, META, "b")
    assert not applies(by_id, META, "c")
    by_role = expect("turn_within", applies_to=("initiator",))
    assert applies(by_role, META, "a")
    assert not applies(by_role, META, "b")
    assert applies(by_role, META, "")  # a session-wide violation always applies
