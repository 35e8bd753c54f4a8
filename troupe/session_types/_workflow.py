"""workflow@1 — turn-taking driven by a transition graph (reference §4.5).

Rules:

- At least two participants, the creator as initiator. Knobs: ``graph`` (required: a
  ``TransitionGraph.to_dict()``) and ``context_vars`` (optional object). The graph must read
  (``WorkflowGraphError`` names what does not) and name participants only (``ProtocolError``
  names the others).
- Turns are ``EV_TEXT`` and ``EV_PACKET``, from the expected speaker only. A packet must be
  well-formed (``_packet``); a handoff ``target`` must be a participant still in the rotation.
- ``EV_CONTEXT_SET`` (well-formed, from a participant, at any time) updates the context
  variables and nothing else. Other event types are information.
- A turn: apply the packet's context updates, count the turn, then a handoff ``target``
  wins; otherwise the graph decides. A decision naming a removed participant passes on to
  the next one in the rotation.
- After a turn the session closes when nobody is to speak (the terminate reason, else
  ``workflow_terminated``), or when ``max_turns`` turns were taken (``max_turns``).
- ``hide`` / ``remove`` notices act as ``_stalls`` says, passing the floor in participant
  order; a ``remove`` that leaves nobody closes the session (``no_participants``).
- Turn: the expected speaker, triggered by the envelope that gave them the floor (none
  before the first turn).
- Expectations: ``turn_within`` 120 s → ``warn``; ``turn_within`` 600 s → ``auto_close``.
- Views: named windowed summary of ``max(2 * participants, 4)``; texts, packets (a
  ``[Handed off via <tool>] <reason>`` line, then the body) and stall notices are shown.
- Replies: ``build_reply`` turns what ``respond`` returned (``_reply``) into a packet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .._errors import ProtocolError, WorkflowGraphError
from ..model import (
    EV_CONTEXT_SET,
    EV_PACKET,
    EV_TEXT,
    Envelope,
    Expectation,
    SessionMetadata,
    SessionState,
)
from ..model._convert import to_tuple
from ._base import ExpectedTurn, Transition, ViewPolicy
from ._common import BaseSessionType
from ._graph import TransitionGraph
from ._graph_parts import Decision
from ._packet import Packet, read_context, read_packet
from ._reply import reply_packet
from ._stalls import Stall, pass_floor, read_stall, render_rotation, rotation_turn, rotation_view


def _as_graph(value: TransitionGraph | Mapping[str, Any]) -> TransitionGraph:
    return value if isinstance(value, TransitionGraph) else TransitionGraph.from_dict(value)


@attrs.frozen(kw_only=True)
class WorkflowState:
    """A workflow's folded state.

    ``last_envelope_id`` is the envelope that gave ``expected_next_speaker`` the floor (the
    last turn, or a stall notice); ``removed`` are participants out of the rotation.
    """

    graph: TransitionGraph = attrs.field(converter=_as_graph)
    participant_order: tuple[str, ...] = attrs.field(converter=to_tuple)
    creator_id: str
    expected_next_speaker: str | None
    last_speaker_id: str | None = None
    last_envelope_id: str | None = None
    turn_count: int = 0
    pending_close_reason: str = ""
    context_vars: dict[str, Any] = attrs.field(factory=dict)
    removed: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)


class WorkflowType(BaseSessionType[WorkflowState]):
    """The workflow session type: a graph decides who speaks after each turn."""

    name = "workflow"
    state_type = WorkflowState
    known_knobs = frozenset({"graph", "context_vars"})
    turn_events = frozenset({EV_TEXT, EV_PACKET})
    # A stalled speaker is warned after 120 s; after 600 s the workflow fails fast.
    declared_expectations = (
        Expectation(name="turn_within", on_violation="warn", params={"seconds": 120}),
        Expectation(name="turn_within", on_violation="auto_close", params={"seconds": 600}),
    )

    def next_turn(self, metadata: SessionMetadata, state: WorkflowState) -> ExpectedTurn | None:
        """The expected speaker, triggered by what gave them the floor."""
        return rotation_turn(state)

    def default_view_policy(self, metadata: SessionMetadata, participant_id: str) -> ViewPolicy:
        """A named windowed summary sized to two rounds (at least four messages)."""
        return rotation_view(metadata)

    def validate_create(self, metadata: SessionMetadata) -> None:
        """Check the participants, the graph and the context variables.

        Args:
            metadata: The session about to be created.

        Raises:
            WorkflowGraphError: The graph does not read (the message says why).
            ProtocolError: A missing graph, a graph naming non-participants, or bad
                ``context_vars``.
        """
        super().validate_create(metadata)
        where = f"workflow {metadata.session_id}"
        data = metadata.knobs.get("graph")
        if not isinstance(data, Mapping):
            raise ProtocolError(
                f"{where} requires knobs['graph'] as a dict (TransitionGraph.to_dict())"
            )
        try:
            graph = TransitionGraph.from_dict(data)
        except WorkflowGraphError as exc:
            raise WorkflowGraphError(f"{where}: invalid workflow graph: {exc}") from exc
        strangers = sorted(graph.agent_ids() - set(metadata.participant_ids()))
        if strangers:
            raise ProtocolError(
                f"{where}: the graph names {', '.join(strangers)}, not participants"
            )
        context = metadata.knobs.get("context_vars", {})
        if not isinstance(context, Mapping) or not all(isinstance(k, str) for k in context):
            raise ProtocolError(
                f"{where}: knobs['context_vars'] must be an object with string keys"
            )

    def initial_state(self, metadata: SessionMetadata) -> WorkflowState:
        """Read the graph; the initial speaker has the floor.

        Args:
            metadata: A session that passed ``validate_create``.

        Returns:
            The state before the first turn.
        """
        graph = TransitionGraph.from_dict(metadata.knobs["graph"])
        order = [p.agent_id for p in sorted(metadata.participants, key=lambda p: p.order)]
        return WorkflowState(
            graph=graph,
            participant_order=order,
            creator_id=metadata.creator_id,
            expected_next_speaker=graph.initial_speaker,
            context_vars=dict(metadata.knobs.get("context_vars", {})),
        )

    def validate_send(
        self, metadata: SessionMetadata, envelope: Envelope, state: WorkflowState
    ) -> None:
        """Check context updates here; turns in ``check_turn``; let the rest through.

        Args:
            metadata: The session's metadata.
            envelope: The envelope being posted.
            state: The state before it.

        Raises:
            ProtocolError: Naming the rule and the ids.
        """
        if envelope.event_type != EV_CONTEXT_SET:
            super().validate_send(metadata, envelope, state)
            return
        where = f"workflow {metadata.session_id}"
        if metadata.role_of(envelope.sender_id) is None:
            raise ProtocolError(
                f"{where} only accepts EV_CONTEXT_SET from participants, got {envelope.sender_id}"
            )
        try:
            read_context(envelope.event_data, "context set")
        except ValueError as exc:
            raise ProtocolError(
                f"{where}: bad context set from {envelope.sender_id}: {exc}"
            ) from exc

    def check_turn(
        self, metadata: SessionMetadata, envelope: Envelope, state: WorkflowState
    ) -> None:
        """Let only the expected speaker take a turn, with a well-formed packet.

        Args:
            metadata: The session's metadata.
            envelope: An ``EV_TEXT`` or ``EV_PACKET`` envelope.
            state: The state before it.

        Raises:
            ProtocolError: Naming the session, the expected speaker and the sender, or what
                is wrong with the packet.
        """
        where = f"workflow {metadata.session_id}"
        sender = envelope.sender_id
        expected = state.expected_next_speaker
        if expected is None:
            reason = state.pending_close_reason or "workflow_terminated"
            raise ProtocolError(f"{where} has ended ({reason}); refused turn from {sender}")
        if sender != expected:
            raise ProtocolError(f"{where} expects {expected} to speak, got {sender}")
        if envelope.event_type != EV_PACKET:
            return
        try:
            packet = read_packet(envelope.event_data)
        except ValueError as exc:
            raise ProtocolError(f"{where}: bad packet from {sender}: {exc}") from exc
        target = packet.routing.target
        if packet.routing.kind == "handoff" and target is not None:
            if target not in state.participant_order or target in state.removed:
                raise ProtocolError(
                    f"{where}: {sender} hands off to {target}, who is not in the rotation"
                )

    def fold(self, envelope: Envelope, state: WorkflowState) -> WorkflowState:
        """The state after ``envelope``: context sets, stall notices and turns change it.

        Args:
            envelope: An accepted envelope.
            state: The state before it.

        Returns:
            The state after it.
        """
        if envelope.event_type == EV_CONTEXT_SET:
            try:
                update = read_context(envelope.event_data)
            except ValueError:
                return state
            return attrs.evolve(state, context_vars=update.apply(state.context_vars))
        stall = read_stall(envelope)
        if stall is not None:
            return self._stalled(stall, envelope, state)
        return super().fold(envelope, state)

    def fold_turn(self, envelope: Envelope, state: WorkflowState) -> WorkflowState:
        """Apply the turn's updates, then hand the floor on (handoff first, else the graph).

        Args:
            envelope: An accepted ``EV_TEXT`` or ``EV_PACKET``.
            state: The state before it.

        Returns:
            The state after it (unchanged for a sender outside the rotation).
        """
        sender = envelope.sender_id
        if sender not in state.participant_order:
            return state
        packet = _packet_of(envelope)
        after = attrs.evolve(
            state,
            context_vars=packet.update.apply(state.context_vars),
            turn_count=state.turn_count + 1,
            last_speaker_id=sender,
            last_envelope_id=envelope.envelope_id,
        )
        routing = packet.routing
        target = routing.target if routing.kind == "handoff" else None
        if target is not None and target in state.participant_order:
            decision = Decision(target)
        else:
            decision = state.graph.decide(after, sender, routing.tool)
        return _settle(after, decision)

    def _stalled(self, stall: Stall, envelope: Envelope, state: WorkflowState) -> WorkflowState:
        order = state.participant_order
        removed = state.removed
        if stall.action == "remove":
            removed += tuple(
                v for v in dict.fromkeys(stall.violators) if v in order and v not in removed
            )
        holder = state.expected_next_speaker
        if holder is None or holder not in stall.violators:
            return attrs.evolve(state, removed=removed)
        moved = attrs.evolve(state, removed=removed, last_envelope_id=envelope.envelope_id)
        return _settle(moved, Decision(pass_floor(order, holder, removed), "no_participants"))

    def on_accepted(
        self, metadata: SessionMetadata, envelope: Envelope, state: WorkflowState
    ) -> Transition | None:
        """Close when nobody is to speak, or once ``max_turns`` turns were taken.

        Args:
            metadata: The session's metadata.
            envelope: The accepted envelope.
            state: The state after it.

        Returns:
            CLOSED with the reason, or ``None``.
        """
        turn = self.takes_turn(envelope.event_type)
        if not turn and read_stall(envelope) is None:
            return None
        if state.expected_next_speaker is None:
            return Transition(
                state=SessionState.CLOSED,
                reason=state.pending_close_reason or "workflow_terminated",
            )
        max_turns = state.graph.max_turns
        if turn and max_turns is not None and state.turn_count >= max_turns:
            return Transition(state=SessionState.CLOSED, reason="max_turns")
        return None

    def render(self, envelope: Envelope) -> str | None:
        """Texts, packets (a handoff line, then the body) and stall notices.

        Args:
            envelope: Any envelope of the session.

        Returns:
            The text, or ``None`` to leave the envelope out.
        """
        if envelope.event_type != EV_PACKET:
            return render_rotation(envelope)
        try:
            packet = read_packet(envelope.event_data)
        except ValueError:
            return None
        lines = []
        routing = packet.routing
        if routing.kind == "handoff":
            lines.append(f"[Handed off via {routing.tool or 'handoff'}] {routing.reason}".rstrip())
        if packet.body:
            lines.append(packet.body)
        return "\n".join(lines) or None

    def dump_state(self, state: WorkflowState) -> Any:
        """JSON data for a snapshot, the graph in its serialised form.

        Args:
            state: A workflow state.

        Returns:
            A dict of JSON values.
        """
        data = super().dump_state(state)
        data["graph"] = state.graph.to_dict()
        return data

    def build_reply(
        self, metadata: SessionMetadata, sender_id: str, reply: Any, trigger: Envelope
    ) -> Envelope | None:
        """The packet for what ``respond`` returned (``None``: a silent round).

        Args:
            metadata: The session's metadata.
            sender_id: The agent that answered.
            reply: ``None``, a ``str``, a ``Handoff`` or a ``Reply``.
            trigger: The envelope the agent answered.

        Returns:
            An ``EV_PACKET`` envelope answering ``trigger``, or ``None``.

        Raises:
            TypeError: For any other kind of reply.
        """
        packet = reply_packet(reply)
        if packet is None:
            return None
        return Envelope(
            session_id=trigger.session_id,
            sender_id=sender_id,
            event_type=EV_PACKET,
            event_data=packet.to_json(),
            causation_id=trigger.envelope_id,
            depth=trigger.depth,
        )


def _packet_of(envelope: Envelope) -> Packet:
    """The packet of a turn: a text is a packet with that body and no routing."""
    if envelope.event_type == EV_TEXT:
        return Packet(body=envelope.text or "")
    try:
        return read_packet(envelope.event_data)
    except ValueError:
        return Packet()  # refused at the door; a WAL from elsewhere folds as a plain turn


def _settle(state: WorkflowState, decision: Decision) -> WorkflowState:
    """Give the floor as ``decision`` says, passing it on past removed participants."""
    speaker = decision.next_speaker
    if speaker is not None and speaker in state.removed:
        speaker = pass_floor(state.participant_order, speaker, state.removed)
    reason = decision.close_reason if speaker is None else ""
    if speaker is None and not reason and decision.next_speaker is not None:
        reason = "no_participants"
    return attrs.evolve(state, expected_next_speaker=speaker, pending_close_reason=reason)
