"""The session lifecycle: every move a session's state may make, as one table.

Rules:

- A session is created ``PENDING`` (``INITIAL``): its invites are out. Each thing that may
  happen to a session is a :class:`SessionEvent`; ``TRANSITIONS`` maps (state, event) to the
  state it leads to. A pair the table lacks is not a move: :func:`next_state` raises
  :class:`~troupe.IllegalTransition` naming both, and the session stays as it was (the
  caller changes the state only to what ``next_state`` returned, and only after it).
- Events that leave the state as it is (an ack, a turn, a notice) are in the table too:
  whether a post may enter a session at all is the same question.
- ``CLOSED`` and ``EXPIRED`` are terminal: nothing leads out of them. Closing a session
  that has ended is not a move; ``close_session`` answers it with the session unchanged
  (it is idempotent, as in the reference), before it asks the table.
- There is no ``CLOSING`` state: the reference reserved one that nothing entered (its
  session types close directly); a session that a custom session type had moved there
  (stored as ``"closing"``) is read back as ``ACTIVE``, the state it had come from.
- The README's lifecycle diagram is :func:`render_lifecycle`'s output (a test keeps them
  equal).

Sans-IO: no trio, no hub; the session actor asks, then moves.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from .._errors import IllegalTransition
from ._envelope import EV_CHANNEL_INVITE_ACK, EV_CHANNEL_INVITE_REJECT, is_substantive
from ._session import SessionState

PENDING, ACTIVE = SessionState.PENDING, SessionState.ACTIVE
CLOSED, EXPIRED = SessionState.CLOSED, SessionState.EXPIRED


class SessionEvent(enum.Enum):
    """What may happen to a session (``EVENT_DOCS`` says what each is; the value is the
    name the diagram shows)."""

    ACK = "ack"
    REJECT = "reject"
    NOTICE = "notice"
    QUORUM = "quorum"
    TURN = "turn"
    CLOSE = "close"
    EXPIRE = "expire"


#: What each event is (the README shows it).
EVENT_DOCS: Final[Mapping[SessionEvent, str]] = {
    SessionEvent.ACK: "an invitee acks its invite (late, once others made the quorum)",
    SessionEvent.REJECT: "an invitee rejects its invite; the session then closes "
    "(`invite_rejected`)",
    SessionEvent.NOTICE: "a protocol post other than an answer to an invite (an invite, a "
    "task notice)",
    SessionEvent.QUORUM: "enough invitees acked (`required_acks`, else all): the session opens",
    SessionEvent.TURN: "a substantive post (a turn, a packet, an expectation notice)",
    SessionEvent.CLOSE: "`close_session`, a reject, a failed or timed-out handshake, the "
    "session type, an `auto_close` expectation, or too many crashes",
    SessionEvent.EXPIRE: "its TTL passed (`ttl_expired`)",
}


#: The state a new session is in.
INITIAL: Final = PENDING

#: Every move: (state, event) -> the state it leads to. Nothing else is a move.
TRANSITIONS: Final[Mapping[tuple[SessionState, SessionEvent], SessionState]] = {
    (PENDING, SessionEvent.ACK): PENDING,
    (PENDING, SessionEvent.REJECT): PENDING,
    (PENDING, SessionEvent.NOTICE): PENDING,
    (PENDING, SessionEvent.QUORUM): ACTIVE,
    (PENDING, SessionEvent.CLOSE): CLOSED,
    (PENDING, SessionEvent.EXPIRE): EXPIRED,
    (ACTIVE, SessionEvent.ACK): ACTIVE,
    (ACTIVE, SessionEvent.NOTICE): ACTIVE,
    (ACTIVE, SessionEvent.TURN): ACTIVE,
    (ACTIVE, SessionEvent.CLOSE): CLOSED,
    (ACTIVE, SessionEvent.EXPIRE): EXPIRED,
}

#: The event that ends a session in a given terminal state (``EndSession``, a session type's
#: ``Transition``).
ENDING: Final[Mapping[SessionState, SessionEvent]] = {
    CLOSED: SessionEvent.CLOSE,
    EXPIRED: SessionEvent.EXPIRE,
}


def next_state(current: SessionState, event: SessionEvent) -> SessionState:
    """The state ``event`` moves a session in ``current`` to.

    Raises:
      IllegalTransition: the table has no such move (``state`` and ``event`` name it).
    """
    try:
        return TRANSITIONS[current, event]
    except KeyError:
        raise IllegalTransition(
            f"the lifecycle has no {event.value} in state {current.value}",
            state=current.value,
            event=event.value,
        ) from None


def post_event(event_type: str) -> SessionEvent:
    """The lifecycle event a post of ``event_type`` is."""
    if is_substantive(event_type):
        return SessionEvent.TURN
    if event_type == EV_CHANNEL_INVITE_ACK:
        return SessionEvent.ACK
    if event_type == EV_CHANNEL_INVITE_REJECT:
        return SessionEvent.REJECT
    return SessionEvent.NOTICE


def admit(session_id: str, state: SessionState, reason: str, event: SessionEvent) -> None:
    """Refuse ``event`` in session ``session_id`` (in ``state``, ended for ``reason``) unless
    the table has it, with the error a caller of the hub gets.

    Raises:
      IllegalTransition: the table has no such move.
    """
    if (state, event) in TRANSITIONS:
        return
    if state.terminal:
        why = f"session {session_id} is {state.value} ({reason or 'no reason'})"
    elif event is SessionEvent.TURN:
        why = f"session {session_id} is not active (it is {state.value})"
    elif event is SessionEvent.REJECT:
        why = f"session {session_id} is already {state.value}; close it instead"
    else:
        why = f"session {session_id} is {state.value}"
    raise IllegalTransition(
        f"{why}: the lifecycle has no {event.value} in state {state.value}",
        state=state.value,
        event=event.value,
    )


def ending_event(target: SessionState) -> SessionEvent:
    """The event that moves a session to the terminal ``target`` (a close, an expiry).

    Raises:
      IllegalTransition: ``target`` is not terminal (a session opens by its handshake only).
    """
    try:
        return ENDING[target]
    except KeyError:
        raise IllegalTransition(
            f"a session is only ever asked to end (closed or expired), not to be "
            f"{target.value}: it opens by its handshake",
            state=target.value,
        ) from None


def render_lifecycle() -> str:
    """The README's lifecycle block: a Mermaid diagram of ``TRANSITIONS``, and the events."""
    edges: dict[tuple[SessionState, SessionState], list[str]] = {}
    for (source, event), target in TRANSITIONS.items():
        edges.setdefault((source, target), []).append(event.value)
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {INITIAL.value}: create_session"]
    for (source, target), events in edges.items():
        lines.append(f"    {source.value} --> {target.value}: {', '.join(events)}")
    lines += [f"    {state.value} --> [*]" for state in SessionState if state.terminal]
    lines += ["```", "", "| event | what it is |", "|---|---|"]
    lines += [f"| {event.value} | {EVENT_DOCS[event]} |" for event in SessionEvent]
    return "\n".join(lines) + "\n"
