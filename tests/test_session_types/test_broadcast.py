"""broadcast@1: the initiator speaks to everyone (or a subset); nobody answers."""

from __future__ import annotations

import pytest

from tests.test_session_types._helpers import Run, envelope, metadata
from troupe import ProtocolError
from troupe.session_types import BroadcastState, BroadcastType, FullTranscript

BROADCAST = BroadcastType()


def run(ids: list[str] | None = None) -> Run:
    return Run(BROADCAST, metadata("broadcast", ids or ["a", "b", "c", "d"]))


def test_identity() -> None:
    assert (BROADCAST.name, BROADCAST.version, BROADCAST.expectations) == ("broadcast", 1, ())


def test_create_needs_a_recipient() -> None:
    with pytest.raises(ProtocolError, match="broadcast s1 needs at least 2 participants, got 1"):
        BROADCAST.validate_create(metadata("broadcast", ["a"]))
    BROADCAST.validate_create(metadata("broadcast", ["a", "b"]))


def test_the_initiator_speaks_as_often_as_it_likes_and_nothing_closes() -> None:
    r = run()
    for _ in range(3):
        last = r.say("a")
    r.post(envelope("a", audience=["c"]))  # a partial broadcast
    assert r.state == BroadcastState(initiator_id="a", message_count=4, last_envelope_id="e4")
    assert last.envelope_id == "e3"
    assert r.transitions == []
    assert BROADCAST.expected_next(r.meta, r.state) is None


@pytest.mark.parametrize("sender", ["b", "d", "stranger"])
def test_recipients_may_not_speak(sender: str) -> None:
    r = run()
    r.say("a")
    with pytest.raises(
        ProtocolError, match=f"^broadcast s1 hears only its initiator a, got {sender}$"
    ):
        r.say(sender)
    assert len(r.wal) == 1


def test_default_view_is_the_full_transcript() -> None:
    assert BROADCAST.default_view_policy(run().meta, "b") == FullTranscript()
