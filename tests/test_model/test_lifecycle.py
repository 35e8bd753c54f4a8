"""The session lifecycle table: its moves, its refusals, and the README drawn from it."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from troupe import IllegalTransition, ProtocolError
from troupe.model import SessionMetadata, SessionState, structure
from troupe.model._lifecycle import (
    EVENT_DOCS,
    INITIAL,
    TRANSITIONS,
    SessionEvent,
    admit,
    ending_event,
    next_state,
    render_lifecycle,
)

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN = "<!-- lifecycle: rendered by troupe.model._lifecycle.render_lifecycle() -->\n"
END = "<!-- /lifecycle -->"

ALL_PAIRS = list(itertools.product(SessionState, SessionEvent))
ALLOWED = [pair for pair in ALL_PAIRS if pair in TRANSITIONS]
REFUSED = [pair for pair in ALL_PAIRS if pair not in TRANSITIONS]


def _id(pair: tuple[SessionState, SessionEvent]) -> str:
    return f"{pair[0].value}-{pair[1].value}"


@pytest.mark.parametrize("pair", ALLOWED, ids=_id)
def test_every_move_in_the_table_is_made(pair: tuple[SessionState, SessionEvent]) -> None:
    state, event = pair
    assert next_state(state, event) is TRANSITIONS[pair]
    admit("s1", state, "", event)  # no error


@pytest.mark.parametrize("pair", REFUSED, ids=_id)
def test_every_move_not_in_the_table_raises_naming_state_and_event(
    pair: tuple[SessionState, SessionEvent],
) -> None:
    state, event = pair
    with pytest.raises(IllegalTransition) as raised:
        next_state(state, event)
    assert (raised.value.state, raised.value.event) == (state.value, event.value)
    assert str(raised.value) == f"the lifecycle has no {event.value} in state {state.value}"
    with pytest.raises(
        IllegalTransition,
        match=f"^session s1 is .*: the lifecycle has no {event.value} in state {state.value}$",
    ):
        admit("s1", state, "why", event)


def test_the_table_has_the_reference_moves() -> None:
    """Reference §2.7: pending opens on its quorum; pending and active close and expire; the
    terminal states lead nowhere; an ended session takes nothing, a reject needs PENDING."""
    assert INITIAL is SessionState.PENDING
    moves = {(s, t) for (s, _), t in TRANSITIONS.items() if s is not t}
    assert moves == {
        (SessionState.PENDING, SessionState.ACTIVE),
        (SessionState.PENDING, SessionState.CLOSED),
        (SessionState.PENDING, SessionState.EXPIRED),
        (SessionState.ACTIVE, SessionState.CLOSED),
        (SessionState.ACTIVE, SessionState.EXPIRED),
    }
    assert not [pair for pair in TRANSITIONS if pair[0].terminal]
    assert (SessionState.PENDING, SessionEvent.TURN) not in TRANSITIONS
    assert (SessionState.ACTIVE, SessionEvent.REJECT) not in TRANSITIONS
    # Every state is reached (none is dead weight), every event is used.
    reached = {INITIAL, *TRANSITIONS.values()}
    assert reached == set(SessionState)
    assert {event for _, event in TRANSITIONS} == set(SessionEvent) == set(EVENT_DOCS)


def test_illegal_transition_is_a_protocol_error_with_the_callers_messages() -> None:
    with pytest.raises(ProtocolError, match=r"^session s is closed \(invite_timeout\)"):
        admit("s", SessionState.CLOSED, "invite_timeout", SessionEvent.ACK)
    with pytest.raises(ProtocolError, match=r"^session s is not active \(it is pending\)"):
        admit("s", SessionState.PENDING, "", SessionEvent.TURN)
    with pytest.raises(ProtocolError, match=r"^session s is already active; close it instead"):
        admit("s", SessionState.ACTIVE, "", SessionEvent.REJECT)


def test_only_an_end_is_asked_for() -> None:
    assert ending_event(SessionState.CLOSED) is SessionEvent.CLOSE
    assert ending_event(SessionState.EXPIRED) is SessionEvent.EXPIRE
    for state in (SessionState.PENDING, SessionState.ACTIVE):
        with pytest.raises(IllegalTransition, match=f"not to be {state.value}"):
            ending_event(state)


@given(st.lists(st.sampled_from(list(SessionEvent)), max_size=30))
def test_random_event_sequences_never_leave_the_table(events: list[SessionEvent]) -> None:
    state = INITIAL
    for event in events:
        if (state, event) in TRANSITIONS:
            after = next_state(state, event)
            assert after is TRANSITIONS[state, event]
        else:
            with pytest.raises(IllegalTransition):
                next_state(state, event)
            after = state  # a refused move changes nothing
        assert after in {INITIAL, *TRANSITIONS.values()}
        if state.terminal:
            assert after is state
        state = after


def test_a_stored_closing_session_reads_back_as_active() -> None:
    """CLOSING is gone; only a custom session type could have stored it, coming from ACTIVE."""
    assert SessionState("closing") is SessionState.ACTIVE
    md = structure(
        {
            "session_id": "s",
            "manifest_type": "conversation",
            "manifest_version": 1,
            "creator_id": "a",
            "participants": [],
            "state": "closing",
            "created_at": "2026-01-01T00:00:00Z",
        },
        SessionMetadata,
    )
    assert md.state is SessionState.ACTIVE
    with pytest.raises(ValueError, match="is not a valid SessionState"):
        SessionState("paused")


def test_the_readme_lifecycle_is_the_rendered_table() -> None:
    text = README.read_text()
    found = re.search(re.escape(BEGIN) + "(.*?)" + re.escape(END), text, re.DOTALL)
    assert found is not None, f"README.md has no block between {BEGIN!r} and {END!r}"
    assert found.group(1) == render_lifecycle(), (
        "README.md's lifecycle block is out of date: paste render_lifecycle()'s output in"
    )
