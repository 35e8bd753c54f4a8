"""notification@1: one text from the initiator closes the session."""

from __future__ import annotations

import pytest

from tests.test_session_types._helpers import Run, metadata
from troupe import ProtocolError
from troupe.model import SessionState
from troupe.session_types import ExpectedTurn, NotificationState, NotificationType, Transition

NOTIFICATION = NotificationType()


def run() -> Run:
    return Run(NOTIFICATION, metadata("notification", ["a", "b"]))


def test_identity() -> None:
    assert (NOTIFICATION.name, NOTIFICATION.version) == ("notification", 1)
    assert NOTIFICATION.expectations == ()


@pytest.mark.parametrize("ids", [["a"], ["a", "b", "c"]])
def test_create_needs_exactly_two(ids: list[str]) -> None:
    with pytest.raises(ProtocolError, match="notification s1 needs exactly 2 participants"):
        NOTIFICATION.validate_create(metadata("notification", ids))


def test_the_one_message_closes_with_notification_done() -> None:
    r = run()
    assert NOTIFICATION.expected_next(r.meta, r.state) == ExpectedTurn(agent_id="a")
    r.say("a", "the build is green")
    assert r.state == NotificationState(initiator_id="a", envelope_id="e1")
    assert r.transitions == [Transition(state=SessionState.CLOSED, reason="notification_done")]


def test_the_recipient_may_not_send() -> None:
    r = run()
    with pytest.raises(
        ProtocolError, match=r"^notification s1 takes one text from its initiator a, got b$"
    ):
        r.say("b")


def test_a_second_message_is_refused() -> None:
    r = run()
    r.say("a")
    with pytest.raises(ProtocolError, match=r"^notification s1 already delivered its message"):
        NOTIFICATION.validate_send(r.meta, r.wal[0], r.state)
    assert NOTIFICATION.expected_next(metadata("notification", ["a", "b"]), r.state) is None
