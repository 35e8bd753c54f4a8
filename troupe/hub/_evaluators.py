"""The expectation evaluators: who is late, as pure functions of what the hub already knows.

Rules (reference §3.9, params default in brackets):

- An evaluator reads the session's metadata, its expected turn (from the session type's
  state), its activity summary and the hub clock's ``now``; it never reads the WAL. It
  returns who is late (``""`` = the session as a whole) and since which mark.
- ``acks_within`` [30 s]: while PENDING, each invitee still to ack once ``created_at`` is
  that old.
- ``reply_within`` [600 s]: while ACTIVE, each participant whose last received message is
  that old and who has sent nothing since.
- ``max_silence`` [3600 s]: while ACTIVE, the session when its last content (else
  ``created_at``) is that old.
- ``turn_within`` [120 s]: while ACTIVE, the expected speaker (else the session) when the
  current turn began (the last content or ``hide`` / ``remove`` notice, else ``created_at``)
  that long ago.
- ``applies_to`` (role names or agent ids) keeps only those violators; a session-wide
  violation always applies.
- A ``seconds`` param that is not a non-negative number raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs

from ..model import Expectation, SessionMetadata, SessionState, parse_iso
from ..session_types import ExpectedTurn
from ._activity import Activity, Mark


@attrs.frozen
class Late:
    """A violator (``""``: the whole session) and the mark their clock started at."""

    agent_id: str
    since: Mark


#: name -> default ``seconds``.
DEFAULT_SECONDS: Final[dict[str, float]] = {
    "acks_within": 30,
    "reply_within": 600,
    "max_silence": 3600,
    "turn_within": 120,
}

#: ``(expectation, metadata, expected turn, activity, now) -> who is late``; ``now`` is
#: hub-clock seconds, the expected turn comes from the session type's state.
Evaluator = Callable[
    [Expectation, SessionMetadata, ExpectedTurn | None, Activity, float], list[Late]
]


def threshold(expectation: Expectation) -> float:
    """The ``seconds`` an expectation allows.

    Args:
        expectation: An expectation with a known ``name``.

    Returns:
        ``params["seconds"]``, or the evaluator's default.

    Raises:
        ValueError: When the param is not a non-negative number.
    """
    value = expectation.params.get("seconds", DEFAULT_SECONDS[expectation.name])
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(
            f"{expectation.name}: seconds must be a non-negative number, got {value!r}"
        )
    return float(value)


def _created(metadata: SessionMetadata) -> Mark:
    return Mark(parse_iso(metadata.created_at), 0)


def acks_within(
    expectation: Expectation,
    metadata: SessionMetadata,
    turn: ExpectedTurn | None,
    activity: Activity,
    now: float,
) -> list[Late]:
    """Invitees of a PENDING session who have not acked in time.

    Args and returns: see ``Evaluator``.
    """
    if metadata.state is not SessionState.PENDING:
        return []
    since = _created(metadata)
    if now - since.at < threshold(expectation):
        return []
    return [Late(agent_id, since) for agent_id in metadata.pending_acks]


def reply_within(
    expectation: Expectation,
    metadata: SessionMetadata,
    turn: ExpectedTurn | None,
    activity: Activity,
    now: float,
) -> list[Late]:
    """Participants who have left a message to them unanswered for too long.

    Args and returns: see ``Evaluator``.
    """
    if metadata.state is not SessionState.ACTIVE:
        return []
    limit = threshold(expectation)
    late = []
    for agent_id in metadata.participant_ids():
        got = activity.received.get(agent_id)
        if got is None or now - got.at < limit:
            continue
        sent = activity.sent.get(agent_id)
        if sent is None or sent.seq < got.seq:
            late.append(Late(agent_id, got))
    return late


def max_silence(
    expectation: Expectation,
    metadata: SessionMetadata,
    turn: ExpectedTurn | None,
    activity: Activity,
    now: float,
) -> list[Late]:
    """The session, when nothing was said in it for too long.

    Args and returns: see ``Evaluator``.
    """
    if metadata.state is not SessionState.ACTIVE:
        return []
    since = activity.content or _created(metadata)
    return [Late("", since)] if now - since.at >= threshold(expectation) else []


def turn_within(
    expectation: Expectation,
    metadata: SessionMetadata,
    turn: ExpectedTurn | None,
    activity: Activity,
    now: float,
) -> list[Late]:
    """The expected speaker (or the session), when the current turn has lasted too long.

    Args and returns: see ``Evaluator``.
    """
    if metadata.state is not SessionState.ACTIVE:
        return []
    since = activity.turn or _created(metadata)
    if now - since.at < threshold(expectation):
        return []
    return [Late(turn.agent_id if turn is not None else "", since)]


#: name -> evaluator.
EVALUATORS: Final[dict[str, Evaluator]] = {
    "acks_within": acks_within,
    "reply_within": reply_within,
    "max_silence": max_silence,
    "turn_within": turn_within,
}


def applies(expectation: Expectation, metadata: SessionMetadata, agent_id: str) -> bool:
    """Whether ``expectation.applies_to`` covers ``agent_id``.

    Args:
        expectation: The expectation.
        metadata: The session (for roles).
        agent_id: A violator, or ``""`` for the whole session.

    Returns:
        True for everyone when ``applies_to`` is ``None``, and for session-wide violations.
    """
    if expectation.applies_to is None or agent_id == "":
        return True
    role = metadata.role_of(agent_id)
    return agent_id in expectation.applies_to or (
        role is not None and role.value in expectation.applies_to
    )
