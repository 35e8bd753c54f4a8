"""conversation@1 — free-form talk between two agents (reference §4.3).

Rules:

- Exactly two participants: the creator as initiator and one respondent. No knobs.
- Either participant may send ``EV_TEXT`` at any time; anyone else is refused.
- Each text from a participant bumps ``turn_count`` and records its sender and id; a text from
  anyone else folds to the same state.
- Never closes by itself (an explicit close or the TTL ends it). No expected turn: anyone may
  speak, so nobody is waited on.
- Expectation: ``max_silence`` 3600 s → ``audit``.
- Default view: a windowed summary keeping the last 10 messages.
"""

from __future__ import annotations

from typing import Final

import attrs

from .._errors import ProtocolError
from ..model import Envelope, Expectation, ParticipantRole, SessionMetadata
from ..model._convert import to_tuple
from ._base import ViewPolicy
from ._common import BaseSessionType
from ._views import WindowedSummary

#: How many messages the default view keeps verbatim.
RECENT_N: Final = 10


@attrs.frozen(kw_only=True)
class ConversationState:
    """A conversation's folded state: who takes part, how many texts, the last one."""

    participants: tuple[str, ...] = attrs.field(converter=to_tuple)
    turn_count: int = 0
    last_speaker_id: str | None = None
    last_envelope_id: str | None = None


class ConversationType(BaseSessionType[ConversationState]):
    """The conversation session type: two agents talk freely until someone closes it."""

    name = "conversation"
    state_type = ConversationState
    max_participants = 2
    other_role = ParticipantRole.RESPONDENT
    # An hour without content is audited.
    declared_expectations = (
        Expectation(name="max_silence", on_violation="audit", params={"seconds": 3600}),
    )

    def initial_state(self, metadata: SessionMetadata) -> ConversationState:
        """Snapshot the participants, with no text yet.

        Args:
            metadata: A session that passed ``validate_create``.

        Returns:
            The state before the first text.
        """
        return ConversationState(participants=metadata.participant_ids())

    def check_turn(
        self, metadata: SessionMetadata, envelope: Envelope, state: ConversationState
    ) -> None:
        """Let any participant speak; refuse everyone else.

        Args:
            metadata: The session's metadata.
            envelope: An ``EV_TEXT`` envelope.
            state: The state before it.

        Raises:
            ProtocolError: Naming the session and the sender.
        """
        if envelope.sender_id not in state.participants:
            raise ProtocolError(
                f"conversation {metadata.session_id} only accepts sends from participants,"
                f" got {envelope.sender_id}"
            )

    def fold_turn(self, envelope: Envelope, state: ConversationState) -> ConversationState:
        """Count a participant's text and remember it.

        Args:
            envelope: An accepted ``EV_TEXT`` envelope.
            state: The state before it.

        Returns:
            The state after it (unchanged for a non-participant).
        """
        if envelope.sender_id not in state.participants:
            return state
        return attrs.evolve(
            state,
            turn_count=state.turn_count + 1,
            last_speaker_id=envelope.sender_id,
            last_envelope_id=envelope.envelope_id,
        )

    def default_view_policy(self, metadata: SessionMetadata, participant_id: str) -> ViewPolicy:
        """The last ten messages verbatim after a summary of the rest.

        Args:
            metadata: The session's metadata.
            participant_id: Whose view.

        Returns:
            ``WindowedSummary(recent_n=10)``.
        """
        return WindowedSummary(recent_n=RECENT_N)
