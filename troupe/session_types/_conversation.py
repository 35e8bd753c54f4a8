"""conversation@1 — free-form talk between two agents (reference §4.3).

Rules:

- Exactly two participants: the creator as initiator and one respondent.
- Knob ``max_turns`` (default :data:`DEFAULT_MAX_TURNS`, ``None`` for no cap): after that
  many texts the session closes with reason ``max_turns``, so two agents that always answer
  each other cannot talk for ever.
- Either participant may send ``EV_TEXT`` at any time; anyone else is refused.
- Each text from a participant bumps ``turn_count`` and records its sender and id; a text from
  anyone else folds to the same state.
- Otherwise never closes by itself (an explicit close or the TTL ends it). No expected turn:
  anyone may speak, so nobody is waited on.
- Expectation: ``max_silence`` 3600 s → ``audit``.
- Default view: a windowed summary keeping the last 10 messages.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from .._errors import ProtocolError
from ..model import Envelope, Expectation, ParticipantRole, SessionMetadata, SessionState
from ..model._convert import to_tuple
from ._base import Transition, ViewPolicy
from ._common import BaseSessionType
from ._views import WindowedSummary

#: How many messages the default view keeps verbatim.
RECENT_N: Final = 10
#: Texts after which a conversation closes (``knobs={"max_turns": n}``; ``None``: no cap).
DEFAULT_MAX_TURNS: Final = 200


def max_turns_of(metadata: SessionMetadata) -> int | None:
    """The session's ``max_turns`` knob (the default when absent)."""
    value: Any = metadata.knobs.get("max_turns", DEFAULT_MAX_TURNS)
    return None if value is None else int(value)


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
    known_knobs = frozenset({"max_turns"})

    def validate_create(self, metadata: SessionMetadata) -> None:
        """Check the participants and the ``max_turns`` knob (a positive int or None).

        Raises:
            ProtocolError: Naming the session and the knob's value.
        """
        super().validate_create(metadata)
        value = metadata.knobs.get("max_turns", DEFAULT_MAX_TURNS)
        if value is not None and (type(value) is not int or value < 1):
            raise ProtocolError(
                f"conversation {metadata.session_id}: knob max_turns must be a positive int "
                f"or None, got {value!r}"
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
        return ConversationState(  # (not attrs.evolve: this runs for every text)
            participants=state.participants,
            turn_count=state.turn_count + 1,
            last_speaker_id=envelope.sender_id,
            last_envelope_id=envelope.envelope_id,
        )

    def turn_accepted(
        self, metadata: SessionMetadata, envelope: Envelope, state: ConversationState
    ) -> Transition | None:
        """Close the session (``max_turns``) once it holds ``max_turns`` texts.

        Args:
            metadata: The session's metadata (its knobs).
            envelope: The accepted text.
            state: The state after it.

        Returns:
            The close, or ``None``.
        """
        cap = max_turns_of(metadata)
        if cap is not None and state.turn_count >= cap:
            return Transition(state=SessionState.CLOSED, reason="max_turns")
        return None

    def default_view_policy(self, metadata: SessionMetadata, participant_id: str) -> ViewPolicy:
        """The last ten messages verbatim after a summary of the rest.

        Args:
            metadata: The session's metadata.
            participant_id: Whose view.

        Returns:
            ``WindowedSummary(recent_n=10)``.
        """
        return WindowedSummary(recent_n=RECENT_N)
