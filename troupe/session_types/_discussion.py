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
- ``hide`` / ``remove`` notices act as ``_stalls`` says: a stalled speaker's turn is
  skipped, or they leave the rotation. The only way a discussion closes by itself is a
  ``remove`` that leaves nobody (``no_participants``).
- Turn: the expected speaker, triggered by the envelope that gave them the floor (the last
  text, or a stall notice; no trigger for the creator's first turn).
- Expectations: ``turn_within`` 120 s → ``warn``; ``turn_within`` 600 s → ``hide``.
- Default view: named windowed summary keeping ``max(2 * participants, 4)`` messages; texts
  and stall notices are shown.
"""

from __future__ import annotations

from typing import ClassVar, Final

import attrs

from .._errors import ProtocolError
from ..model import Envelope, Expectation, SessionMetadata, SessionState
from ..model._convert import to_tuple
from ._base import ExpectedTurn, Transition, ViewPolicy
from ._common import BaseSessionType
from ._stalls import pass_floor, read_stall, render_rotation, rotation_turn, rotation_view

#: The orderings ``knobs["ordering"]`` may name.
ORDERINGS: Final = ("round_robin",)


@attrs.frozen(kw_only=True)
class DiscussionState:
    """A discussion's folded state: the speaking order and whose turn it is.

    ``last_envelope_id`` is the envelope that gave the floor to ``expected_next_speaker``;
    ``participant_order`` loses those a ``remove`` notice took out (``None`` speaks when
    nobody is left).
    """

    participant_order: tuple[str, ...] = attrs.field(converter=to_tuple)
    expected_next_speaker: str | None
    last_speaker_id: str | None = None
    last_envelope_id: str | None = None
    turn_count: int = 0


class DiscussionType(BaseSessionType[DiscussionState]):
    """The discussion session type: participants take turns in a fixed rotation."""

    name = "discussion"
    state_type = DiscussionState
    known_knobs = frozenset({"ordering"})
    # A stalled speaker is warned after 120 s; after 600 s their turn is skipped.
    declared_expectations: ClassVar[tuple[Expectation, ...]] = (
        Expectation(name="turn_within", on_violation="warn", params={"seconds": 120}),
        Expectation(name="turn_within", on_violation="hide", params={"seconds": 600}),
    )

    def next_turn(self, metadata: SessionMetadata, state: DiscussionState) -> ExpectedTurn | None:
        """The expected speaker, triggered by what gave them the floor."""
        return rotation_turn(state)

    def default_view_policy(self, metadata: SessionMetadata, participant_id: str) -> ViewPolicy:
        """A named windowed summary sized to two rounds (at least four messages)."""
        return rotation_view(metadata)

    def render(self, envelope: Envelope) -> str | None:
        """Texts and stall notices (a notice that passed the floor is the next turn's input)."""
        return render_rotation(envelope)

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
        if state.expected_next_speaker is None:
            raise ProtocolError(
                f"discussion {metadata.session_id} has nobody left in its rotation;"
                f" refused text from {envelope.sender_id}"
            )
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

    def fold(self, envelope: Envelope, state: DiscussionState) -> DiscussionState:
        """The state after ``envelope``: texts and stall notices move the floor.

        Args:
            envelope: An accepted envelope.
            state: The state before it.

        Returns:
            The state after it.
        """
        stall = read_stall(envelope)
        if stall is None:
            return super().fold(envelope, state)
        holder = state.expected_next_speaker
        order = state.participant_order
        if stall.action == "remove":
            order = tuple(p for p in order if p not in stall.violators)
        if holder is None or holder not in stall.violators:
            return attrs.evolve(state, participant_order=order)
        gone = stall.violators if stall.action == "remove" else ()
        nxt = pass_floor(state.participant_order, holder, gone)
        return attrs.evolve(
            state,
            participant_order=order,
            expected_next_speaker=nxt,
            last_envelope_id=envelope.envelope_id,
        )

    def on_accepted(
        self, metadata: SessionMetadata, envelope: Envelope, state: DiscussionState
    ) -> Transition | None:
        """Close once a ``remove`` left nobody to speak.

        Args:
            metadata: The session's metadata.
            envelope: The accepted envelope.
            state: The state after it.

        Returns:
            CLOSED with ``no_participants``, or ``None``.
        """
        if state.expected_next_speaker is None and read_stall(envelope) is not None:
            return Transition(state=SessionState.CLOSED, reason="no_participants")
        return None
