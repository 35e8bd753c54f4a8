"""Builders and a tiny hub stand-in shared by the session-type tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from troupe.model import (
    EV_TEXT,
    Envelope,
    Participant,
    ParticipantRole,
    SessionMetadata,
    SessionState,
)
from troupe.session_types import AnySessionType, Transition
from troupe.workflow import round_robin

SID = "s1"


def metadata(
    type_name: str,
    ids: Sequence[str],
    *,
    knobs: dict[str, Any] | None = None,
    state: SessionState = SessionState.ACTIVE,
) -> SessionMetadata:
    """A session of ``type_name`` created by ``ids[0]``, roles assigned as the hub does.

    Args:
        type_name: The manifest type.
        ids: Participant ids, creator first.
        knobs: The session's knobs.
        state: The lifecycle state.

    Returns:
        The metadata; a workflow's knobs default to a round robin over ``ids``.
    """
    if knobs is None and type_name == "workflow" and ids:
        knobs = {"graph": round_robin(ids).to_dict()}
    other = ParticipantRole.RESPONDENT if len(ids) == 2 else ParticipantRole.PARTICIPANT
    participants = tuple(
        Participant(agent_id=a, role=ParticipantRole.INITIATOR if i == 0 else other, order=i)
        for i, a in enumerate(ids)
    )
    return SessionMetadata(
        session_id=SID,
        manifest_type=type_name,
        manifest_version=1,
        creator_id=ids[0] if ids else "nobody",
        participants=participants,
        state=state,
        created_at="2026-01-01T00:00:00.000000+00:00",
        knobs=knobs or {},
    )


def envelope(
    sender: str,
    text: str = "hi",
    *,
    event_type: str = EV_TEXT,
    seq: int = 0,
    audience: Iterable[str] | None = None,
) -> Envelope:
    """An envelope as the hub would have stamped it at ``seq`` (unstamped for ``seq=0``).

    Args:
        sender: The sender id.
        text: Put in ``event_data["text"]``.
        event_type: The event type.
        seq: The WAL position; the envelope id is ``e<seq>``.
        audience: Who it is for (``None`` = everyone).

    Returns:
        The envelope.
    """
    return Envelope(
        session_id=SID,
        sender_id=sender,
        event_type=event_type,
        event_data={"text": text},
        audience=None if audience is None else tuple(audience),
        envelope_id=f"e{seq}" if seq else "",
        seq=seq,
    )


@attrs.define
class Run:
    """A session driven the way the session actor drives it: validate, stamp, fold, act."""

    session_type: AnySessionType
    meta: SessionMetadata
    state: Any = None
    wal: list[Envelope] = attrs.Factory(list)
    transitions: list[Transition] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.session_type.validate_create(self.meta)
        self.state = self.session_type.initial_state(self.meta)

    def post(self, unstamped: Envelope) -> Envelope:
        """Accept ``unstamped`` or raise what ``validate_send`` raises.

        Args:
            unstamped: The envelope as a sender posts it.

        Returns:
            The stamped copy now in the WAL.
        """
        self.session_type.validate_send(self.meta, unstamped, self.state)
        seq = len(self.wal) + 1
        stamped = attrs.evolve(unstamped, envelope_id=f"e{seq}", seq=seq)
        self.wal.append(stamped)
        self.state = self.session_type.fold(stamped, self.state)
        transition = self.session_type.on_accepted(self.meta, stamped, self.state)
        if transition is not None:
            self.transitions.append(transition)
            self.meta = attrs.evolve(
                self.meta, state=transition.state, close_reason=transition.reason
            )
        return stamped

    def say(self, sender: str, text: str = "hi") -> Envelope:
        """Post an ``EV_TEXT`` from ``sender``.

        Args:
            sender: The sender id.
            text: The text.

        Returns:
            The stamped envelope.
        """
        return self.post(envelope(sender, text))


def refold(session_type: AnySessionType, meta: SessionMetadata, wal: Iterable[Envelope]) -> Any:
    """Fold ``wal`` from the initial state, as recovery does.

    Args:
        session_type: The session type.
        meta: The session's metadata.
        wal: The accepted envelopes.

    Returns:
        The final state.
    """
    state = session_type.initial_state(meta)
    for env in wal:
        state = session_type.fold(env, state)
    return state
