"""notification@1 — one message from the initiator, then closed (reference §4.8).

Rules:

- Exactly two participants: the creator as initiator and one respondent. No knobs.
- Exactly one ``EV_TEXT``, from the initiator; the session closes as soon as it lands
  (``notification_done``), so the recipient is delivered it and never answers.
- Event types other than ``EV_TEXT`` are refused, except the hub's expectation notices.
- Turn: the initiator (no trigger) until the message is sent.
- Default view: the full transcript.
"""

from __future__ import annotations

import attrs

from .._errors import ProtocolError
from ..model import (
    EV_EXPECTATION_VIOLATED,
    Envelope,
    ParticipantRole,
    SessionMetadata,
    SessionState,
)
from ._base import ExpectedTurn, Transition
from ._common import BaseSessionType


@attrs.frozen(kw_only=True)
class NotificationState:
    """A notification's folded state: whether the one message went out."""

    initiator_id: str
    envelope_id: str | None = None

    @property
    def sent(self) -> bool:
        return self.envelope_id is not None


class NotificationType(BaseSessionType[NotificationState]):
    """The notification session type: fire one message and close."""

    name = "notification"
    state_type = NotificationState
    max_participants = 2
    other_role = ParticipantRole.RESPONDENT
    other_events = frozenset({EV_EXPECTATION_VIOLATED})

    def initial_state(self, metadata: SessionMetadata) -> NotificationState:
        """Note the initiator; nothing is sent yet.

        Args:
            metadata: A session that passed ``validate_create``.

        Returns:
            The state before the message.
        """
        return NotificationState(initiator_id=metadata.creator_id)

    def check_turn(
        self, metadata: SessionMetadata, envelope: Envelope, state: NotificationState
    ) -> None:
        """Let the initiator send one text, and nobody anything after it.

        Args:
            metadata: The session's metadata.
            envelope: An ``EV_TEXT`` envelope.
            state: The state before it.

        Raises:
            ProtocolError: Naming the rule and the ids.
        """
        where = f"notification {metadata.session_id}"
        if state.sent:
            raise ProtocolError(
                f"{where} already delivered its message; refused {envelope.sender_id}"
            )
        if envelope.sender_id != state.initiator_id:
            raise ProtocolError(
                f"{where} takes one text from its initiator {state.initiator_id},"
                f" got {envelope.sender_id}"
            )

    def fold_turn(self, envelope: Envelope, state: NotificationState) -> NotificationState:
        """Note the message.

        Args:
            envelope: An accepted ``EV_TEXT`` envelope.
            state: The state before it.

        Returns:
            The state after it (unchanged for anything but the initiator's first text).
        """
        if state.sent or envelope.sender_id != state.initiator_id:
            return state
        return attrs.evolve(state, envelope_id=envelope.envelope_id)

    def turn_accepted(
        self, metadata: SessionMetadata, envelope: Envelope, state: NotificationState
    ) -> Transition | None:
        """Close as soon as the message is in.

        Args:
            metadata: The session's metadata.
            envelope: The accepted text.
            state: The state after it.

        Returns:
            CLOSED with ``notification_done`` once sent.
        """
        if state.sent:
            return Transition(state=SessionState.CLOSED, reason="notification_done")
        return None

    def next_turn(self, metadata: SessionMetadata, state: NotificationState) -> ExpectedTurn | None:
        """The initiator, until the message is sent.

        Args:
            metadata: The session's metadata.
            state: The current state.

        Returns:
            The initiator's turn, or ``None``.
        """
        return None if state.sent else ExpectedTurn(agent_id=state.initiator_id)
