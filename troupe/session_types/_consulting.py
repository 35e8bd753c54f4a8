"""consulting@1 — one question, one reply, then closed (reference §4.2).

Rules:

- Exactly two participants: the creator as initiator and one respondent. No knobs.
- Phases, in order: ``AWAITING_QUESTION`` (only the initiator may send ``EV_TEXT``),
  ``AWAITING_REPLY`` (only the respondent may), ``COMPLETE`` (nobody may). ``_FLOOR`` below is
  the whole machine: who holds the floor in each phase and the phase their text leads to.
- The audience of a text is not checked.
- The reply closes the session: ``on_accepted`` asks for CLOSED with reason
  ``consulting_complete``.
- Turn: the initiator with no trigger; then the respondent, triggered by the question; then
  nobody.
- Fold follows the table and ignores a text from anyone but the one holding the floor.
- Expectations: ``acks_within`` 30 s → ``auto_close``; ``reply_within`` 600 s → ``auto_close``.
- Default view: the full transcript.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from .._errors import ProtocolError
from ..model import Envelope, Expectation, ParticipantRole, SessionMetadata, SessionState
from ._base import ExpectedTurn, Transition
from ._common import BaseSessionType


class ConsultingPhase(enum.Enum):
    """Where a consulting session is: waiting for the question, for the reply, or done."""

    AWAITING_QUESTION = "awaiting_question"
    AWAITING_REPLY = "awaiting_reply"
    COMPLETE = "complete"


#: phase → (the role that holds the floor, the phase after their text).
_FLOOR: Final[dict[ConsultingPhase, tuple[ParticipantRole, ConsultingPhase]]] = {
    ConsultingPhase.AWAITING_QUESTION: (ParticipantRole.INITIATOR, ConsultingPhase.AWAITING_REPLY),
    ConsultingPhase.AWAITING_REPLY: (ParticipantRole.RESPONDENT, ConsultingPhase.COMPLETE),
}


@attrs.frozen(kw_only=True)
class ConsultingState:
    """A consulting session's folded state.

    ``last_envelope_id`` is the last text accepted: the question while the reply is awaited.
    """

    initiator_id: str
    respondent_id: str
    phase: ConsultingPhase = attrs.field(
        default=ConsultingPhase.AWAITING_QUESTION, converter=ConsultingPhase
    )
    last_envelope_id: str | None = None

    def floor_holder(self) -> str | None:
        """The id of whoever may send the next text, or ``None`` once complete.

        Returns:
            An agent id, or ``None``.
        """
        floor = _FLOOR.get(self.phase)
        if floor is None:
            return None
        return self.initiator_id if floor[0] is ParticipantRole.INITIATOR else self.respondent_id


class ConsultingType(BaseSessionType[ConsultingState]):
    """The consulting session type: a strict question-and-answer between two agents."""

    name = "consulting"
    state_type = ConsultingState
    max_participants = 2
    other_role = ParticipantRole.RESPONDENT
    # The invitee must ack within 30 s and the respondent reply within 600 s, else close.
    declared_expectations = (
        Expectation(name="acks_within", on_violation="auto_close", params={"seconds": 30}),
        Expectation(name="reply_within", on_violation="auto_close", params={"seconds": 600}),
    )

    def initial_state(self, metadata: SessionMetadata) -> ConsultingState:
        """Snapshot who asks and who answers, waiting for the question.

        Args:
            metadata: A session that passed ``validate_create``.

        Returns:
            The state before the first text.
        """
        respondent = next(
            p.agent_id for p in metadata.participants if p.agent_id != metadata.creator_id
        )
        return ConsultingState(initiator_id=metadata.creator_id, respondent_id=respondent)

    def check_turn(
        self, metadata: SessionMetadata, envelope: Envelope, state: ConsultingState
    ) -> None:
        """Let only the floor holder send a text, and nobody once the reply is in.

        Args:
            metadata: The session's metadata.
            envelope: An ``EV_TEXT`` envelope.
            state: The state before it.

        Raises:
            ProtocolError: Naming the rule and the ids.
        """
        where = f"consulting {metadata.session_id}"
        sender = envelope.sender_id
        match state.phase:
            case ConsultingPhase.COMPLETE:
                raise ProtocolError(f"{where} is already complete; refused text from {sender}")
            case ConsultingPhase.AWAITING_QUESTION if sender != state.initiator_id:
                raise ProtocolError(
                    f"{where} expects first send from initiator {state.initiator_id}, got {sender}"
                )
            case ConsultingPhase.AWAITING_REPLY if sender != state.respondent_id:
                raise ProtocolError(
                    f"{where} expects reply from respondent {state.respondent_id}, got {sender}"
                )

    def fold_turn(self, envelope: Envelope, state: ConsultingState) -> ConsultingState:
        """Move to the next phase when the floor holder's text lands.

        Args:
            envelope: An accepted ``EV_TEXT`` envelope.
            state: The state before it.

        Returns:
            The state after it (unchanged for a text from anyone else).
        """
        if envelope.sender_id != state.floor_holder():
            return state
        _, after = _FLOOR[state.phase]
        return attrs.evolve(state, phase=after, last_envelope_id=envelope.envelope_id)

    def turn_accepted(
        self, metadata: SessionMetadata, envelope: Envelope, state: ConsultingState
    ) -> Transition | None:
        """Close the session once the reply is in.

        Args:
            metadata: The session's metadata.
            envelope: The accepted text.
            state: The state after it.

        Returns:
            CLOSED with ``consulting_complete`` after the reply, else ``None``.
        """
        if state.phase is ConsultingPhase.COMPLETE:
            return Transition(state=SessionState.CLOSED, reason="consulting_complete")
        return None

    def next_turn(self, metadata: SessionMetadata, state: ConsultingState) -> ExpectedTurn | None:
        """The initiator (no trigger), then the respondent (triggered by the question).

        Args:
            metadata: The session's metadata.
            state: The current state.

        Returns:
            The expected turn, or ``None`` once complete.
        """
        holder = state.floor_holder()
        if holder is None:
            return None
        return ExpectedTurn(agent_id=holder, triggering_envelope_id=state.last_envelope_id)
