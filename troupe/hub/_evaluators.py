"""The expectation evaluators: who is late, as pure functions of what the hub already knows.

Rules (reference §3.9, params default in brackets):

- An evaluator reads a ``Seen``: the session's metadata, its expected turn (from the session
  type's state), its activity summary and the hub clock's ``now``; it never reads the WAL.
  It returns who is late (``""`` = the session as a whole) and since which mark.
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

from collections.abc import Callable, Iterable, Mapping
from typing import Final

import attrs

from ..model import Expectation, SessionMetadata, SessionState, parse_iso
from ..session_types import ExpectedTurn
from ._activity import Activity, Mark


@attrs.frozen
class Seen:
    """What the evaluators read of one session at one moment."""

    metadata: SessionMetadata
    #: From the session type's ``expected_next``.
    turn: ExpectedTurn | None
    activity: Activity
    #: Hub-clock seconds.
    now: float


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

#: Who is late, in a session in the state the evaluator is registered for.
Evaluator = Callable[[Expectation, Seen], Iterable[Late]]


def threshold(expectation: Expectation) -> float:
    """The ``seconds`` an expectation allows.

    Args:
        expectation: An expectation with a known ``name``.

    Returns:
        ``params["seconds"]``, or the evaluator's default.

    Raises:
        ValueError: When the param is not a non-negative number (or is missing, for an
            evaluator without a default).
    """
    value = expectation.params.get("seconds", DEFAULT_SECONDS.get(expectation.name))
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(
            f"{expectation.name}: seconds must be a non-negative number, got {value!r}"
        )
    return float(value)


def _waited(seen: Seen, since: Mark) -> float:
    """Seconds from ``since`` to now, to the microsecond: the resolution of a timestamp.

    Marks are read back from ISO timestamps, and float noise (``epoch + 120 - epoch`` may be
    119.9999995) would otherwise move a deadline that falls due on a sweep to the next one.
    """
    return round(seen.now - since.at, 6)


def _since_created(seen: Seen) -> Mark:
    return Mark(parse_iso(seen.metadata.created_at), 0)


def _acks_within(expectation: Expectation, seen: Seen) -> list[Late]:
    since = _since_created(seen)
    if _waited(seen, since) < threshold(expectation):
        return []
    return [Late(agent_id, since) for agent_id in seen.metadata.pending_acks]


def _reply_within(expectation: Expectation, seen: Seen) -> list[Late]:
    limit = threshold(expectation)
    late = []
    for agent_id in seen.metadata.participant_ids():
        got = seen.activity.received.get(agent_id)
        if got is None or _waited(seen, got) < limit:
            continue
        sent = seen.activity.sent.get(agent_id)
        if sent is None or sent.seq < got.seq:
            late.append(Late(agent_id, got))
    return late


def _max_silence(expectation: Expectation, seen: Seen) -> list[Late]:
    since = seen.activity.content or _since_created(seen)
    return [Late("", since)] if _waited(seen, since) >= threshold(expectation) else []


def _turn_within(expectation: Expectation, seen: Seen) -> list[Late]:
    since = seen.activity.turn or _since_created(seen)
    if _waited(seen, since) < threshold(expectation):
        return []
    return [Late(seen.turn.agent_id if seen.turn is not None else "", since)]


#: name -> (evaluator, the only session state it is evaluated in).
EVALUATORS: Final[dict[str, tuple[Evaluator, SessionState]]] = {
    "acks_within": (_acks_within, SessionState.PENDING),
    "reply_within": (_reply_within, SessionState.ACTIVE),
    "max_silence": (_max_silence, SessionState.ACTIVE),
    "turn_within": (_turn_within, SessionState.ACTIVE),
}


def evaluate(
    expectation: Expectation,
    seen: Seen,
    evaluators: Mapping[str, tuple[Evaluator, SessionState]] = EVALUATORS,
) -> list[Late]:
    """Who is late for ``expectation`` (see the module docstring), ``applies_to`` honoured.

    Args:
        expectation: An expectation whose ``name`` is in ``evaluators``.
        seen: The session, now.
        evaluators: name -> (evaluator, the state it runs in): a hub's, built-ins and custom.

    Returns:
        The violators and when their clocks started; empty when nobody is late.

    Raises:
        KeyError: For an unknown evaluator name.
        ValueError: For a bad ``seconds`` param.
    """
    evaluator, state = evaluators[expectation.name]
    if seen.metadata.state is not state:
        return []
    late = list(evaluator(expectation, seen))
    return [x for x in late if applies(expectation, seen.metadata, x.agent_id)]


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
