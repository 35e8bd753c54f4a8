"""broadcast@1 — one initiator speaks, everyone else listens (reference §4.6).

Rules:

- The creator as the one initiator, and at least one recipient. No knobs.
- Only the initiator sends ``EV_TEXT``; an explicit audience (a partial broadcast) is fine, as
  long as it names participants (the hub checks that).
- Event types other than ``EV_TEXT`` are refused, except the hub's expectation notices.
- Never closes by itself: the initiator (or anyone) closes it, or its TTL expires it.
- Nobody owes a turn (``expected_next`` is ``None``): the initiator speaks when it likes and
  recipients' turn handlers never answer.
- Default view: the full transcript.
"""

from __future__ import annotations

import attrs

from .._errors import ProtocolError
from ..model import EV_EXPECTATION_VIOLATED, Envelope, SessionMetadata
from ._common import BaseSessionType


@attrs.frozen(kw_only=True)
class BroadcastState:
    """A broadcast's folded state: who speaks, how often they did, and their last message."""

    initiator_id: str
    message_count: int = 0
    last_envelope_id: str | None = None


class BroadcastType(BaseSessionType[BroadcastState]):
    """The broadcast session type: announcements from the initiator to the rest."""

    name = "broadcast"
    state_type = BroadcastState
    other_events = frozenset({EV_EXPECTATION_VIOLATED})

    def initial_state(self, metadata: SessionMetadata) -> BroadcastState:
        """Note the initiator.

        Args:
            metadata: A session that passed ``validate_create``.

        Returns:
            The state before the first message.
        """
        return BroadcastState(initiator_id=metadata.creator_id)

    def check_turn(
        self, metadata: SessionMetadata, envelope: Envelope, state: BroadcastState
    ) -> None:
        """Let only the initiator speak.

        Args:
            metadata: The session's metadata.
            envelope: An ``EV_TEXT`` envelope.
            state: The state before it.

        Raises:
            ProtocolError: Naming the initiator and the sender.
        """
        if envelope.sender_id != state.initiator_id:
            raise ProtocolError(
                f"broadcast {metadata.session_id} hears only its initiator {state.initiator_id},"
                f" got {envelope.sender_id}"
            )

    def fold_turn(self, envelope: Envelope, state: BroadcastState) -> BroadcastState:
        """Count the initiator's message.

        Args:
            envelope: An accepted ``EV_TEXT`` envelope.
            state: The state before it.

        Returns:
            The state after it (unchanged for a text from anyone else).
        """
        if envelope.sender_id != state.initiator_id:
            return state
        return attrs.evolve(
            state, message_count=state.message_count + 1, last_envelope_id=envelope.envelope_id
        )
