"""Session records: lifecycle state, participants, expectations, metadata — reference §2.7."""

from __future__ import annotations

import enum
from typing import Any

import attrs

from ._convert import to_tuple


class SessionState(enum.Enum):
    """Where a session is in its life; ``closed`` and ``expired`` are terminal.

    The moves between them are the table in ``troupe.model._lifecycle``.
    """

    PENDING = "pending"
    ACTIVE = "active"
    CLOSED = "closed"
    EXPIRED = "expired"

    @classmethod
    def _missing_(cls, value: object) -> SessionState | None:
        # "closing": a state the reference reserved and nothing built in entered; only a
        # custom session type could have moved a session there, from ACTIVE. Such a stored
        # session is read back as it was before that move (see _lifecycle's rules).
        return cls.ACTIVE if value == "closing" else None

    @property
    def terminal(self) -> bool:
        return self in (SessionState.CLOSED, SessionState.EXPIRED)


class ParticipantRole(enum.Enum):
    """The creator is the initiator; in a two-party session the other is the respondent."""

    INITIATOR = "initiator"
    RESPONDENT = "respondent"
    PARTICIPANT = "participant"


@attrs.frozen(kw_only=True)
class Participant:
    agent_id: str
    role: ParticipantRole
    order: int
    joined_at: str = ""


@attrs.frozen(kw_only=True)
class Expectation:
    """A timed expectation a session type declares, checked by the hub's sweeper.

    ``name`` picks the evaluator (``acks_within``, ``reply_within``, ``max_silence``,
    ``turn_within``); ``on_violation`` the handler (``audit``, ``warn``, ``notify_session``,
    ``auto_close``, ``hide``, ``remove``); ``params`` e.g. ``{"seconds": 30}``;
    ``applies_to`` role names or agent ids (``None`` = everyone).
    """

    name: str
    on_violation: str = "audit"
    params: dict[str, Any] = attrs.field(factory=dict)
    applies_to: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class SessionMetadata:
    """The lifecycle record of one session, persisted on every change.

    The session actor owns it and publishes a new immutable copy on each change.
    ``handshake_deadline`` is when a PENDING session stops waiting for acks; it is persisted
    so a PENDING session found after a restart is still timed out.
    """

    session_id: str
    manifest_type: str
    manifest_version: int
    creator_id: str
    participants: tuple[Participant, ...]
    state: SessionState
    created_at: str
    expires_at: str | None = None
    closed_at: str | None = None
    close_reason: str = ""
    parent_session_id: str | None = None
    knobs: dict[str, Any] = attrs.field(factory=dict)
    labels: dict[str, str] = attrs.field(factory=dict)
    required_acks: int | None = None
    pending_acks: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    rejected_by: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    expectations: tuple[Expectation, ...] = ()
    handshake_deadline: str | None = None

    def participant_ids(self) -> list[str]:
        return [p.agent_id for p in self.participants]

    def is_terminal(self) -> bool:
        return self.state.terminal

    def role_of(self, agent_id: str) -> ParticipantRole | None:
        for p in self.participants:
            if p.agent_id == agent_id:
                return p.role
        return None
