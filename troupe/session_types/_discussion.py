"""discussion@1 — round-robin talk among two or more agents (reference §4.4).

Rules:

- At least two participants (no upper bound), the creator as initiator. One knob, ``ordering``,
  and ``round_robin`` (the default) is its only value.
- The speaking order is the participants sorted by ``order``, snapshotted at creation; the
  creator speaks first.
- Only the expected speaker may send ``EV_TEXT``; the audience is free (a text to a subset
  still passes the floor on).
- A text passes the floor to the speaker after its sender, wrapping round; a text from someone
  outside the order folds to the same state.
- Never closes by itself. Turn: the expected speaker, triggered by the last text (no trigger
  for the creator's first turn).
- Expectations: ``turn_within`` 120 s → ``warn``; ``turn_within`` 600 s → ``hide``.
- Default view: named windowed summary keeping ``max(2 * participants, 4)`` messages.
"""

from __future__ import annotations

from typing import Final

import attrs

from .._errors import ProtocolError
from ..model import Envelope, Expectation, SessionMetadata
from ..model._convert import to_tuple
from ._base import ExpectedTurn, ViewPolicy
from ._common import BaseSessionType
from ._views import NamedWindowedSummary

#: The orderings ``knobs["ordering"]`` may name.
ORDERINGS: Final = ("round_robin",)


@attrs.frozen(kw_only=True)
class DiscussionState:
    """A discussion's folded state: the speaking order and whose turn it is."""

    participant_order: tuple[str, ...] = attrs.field(converter=to_tuple)
    expected_next_speaker: str
    last_speaker_id: str | None = None
    last_envelope_id: str | None = None
    turn_count: int = 0


class DiscussionType(BaseSessionType[DiscussionState]):
    """The discussion session type: participants take turns in a fixed rotation."""

    name = "discussion"
    state_type = DiscussionState
    known_knobs = frozenset({"ordering"})
    # A stalled speaker is warned after 120 s and hidden after 600 s (what hiding does is the
    # hub handler's business, issue 6).
    declared_expectations = (
        Expectation(name="turn_within", on_violation="warn", params={"seconds": 120}),
        Expectation(name="turn_within", on_violation="hide", params={"seconds": 600}),
    )

    def validate_create(self, metadata: SessionMetadata) -> None:
        """Check the participants and that ``ordering`` is one this type supports.

        Args:
            metadata: The session about to be created.

        Raises:
            ProtocolError: Naming the rule broken and the ids or knob involved.
        """
        super().validate_create(metadata)
        ordering = metadata.knobs.get("ordering", "round_robin")
        if ordering not in ORDERINGS:
            raise ProtocolError(
                f"discussion {metadata.session_id}: ordering {ordering!r} not supported"
                f" (only {', '.join(ORDERINGS)})"
            )

    def initial_state(self, metadata: SessionMetadata) -> DiscussionState:
        """Snapshot the speaking order, with the creator to speak first.

        Args:
            metadata: A session that passed ``validate_create``.

        Returns:
            The state before the first text.
        """
        order = [p.agent_id for p in sorted(metadata.participants, key=lambda p: p.order)]
        return DiscussionState(participant_order=order, expected_next_speaker=metadata.creator_id)

    def check_turn(
        self, metadata: SessionMetadata, envelope: Envelope, state: DiscussionState
    ) -> None:
        """Let only the expected speaker send a text.

        Args:
            metadata: The session's metadata.
            envelope: An ``EV_TEXT`` envelope.
            state: The state before it.

        Raises:
            ProtocolError: Naming the session, the expected speaker and the sender.
        """
        if envelope.sender_id != state.expected_next_speaker:
            raise ProtocolError(
                f"discussion {metadata.session_id} expects {state.expected_next_speaker}"
                f" to speak, got {envelope.sender_id}"
            )

    def fold_turn(self, envelope: Envelope, state: DiscussionState) -> DiscussionState:
        """Pass the floor to the speaker after the sender, wrapping round.

        Args:
            envelope: An accepted ``EV_TEXT`` envelope.
            state: The state before it.

        Returns:
            The state after it (unchanged for a sender outside the order).
        """
        order = state.participant_order
        if envelope.sender_id not in order:
            return state
        after = order[(order.index(envelope.sender_id) + 1) % len(order)]
        return attrs.evolve(
            state,
            expected_next_speaker=after,
            last_speaker_id=envelope.sender_id,
            last_envelope_id=envelope.envelope_id,
            turn_count=state.turn_count + 1,
        )

    def next_turn(self, metadata: SessionMetadata, state: DiscussionState) -> ExpectedTurn | None:
        """The expected speaker, triggered by the last text.

        Args:
            metadata: The session's metadata.
            state: The current state.

        Returns:
            The expected turn.
        """
        return ExpectedTurn(
            agent_id=state.expected_next_speaker, triggering_envelope_id=state.last_envelope_id
        )

    def default_view_policy(self, metadata: SessionMetadata, participant_id: str) -> ViewPolicy:
        """A named windowed summary sized to two rounds (at least four messages).

        Args:
            metadata: The session's metadata.
            participant_id: Whose view.

        Returns:
            ``NamedWindowedSummary(recent_n=max(2 * participants, 4))``.
        """
        return NamedWindowedSummary(recent_n=max(2 * len(metadata.participants), 4))
