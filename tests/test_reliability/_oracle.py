"""What a correct hub must answer to a post, worked out from the session's WAL alone.

The state machine judges every post it makes with :func:`verdict`: ``None`` when the hub
must accept it, else why it must refuse it (with a ``ProtocolError``). The rules are the
README's for each built-in session type ("Session types"), written again here by walking
the accepted envelopes, not by calling the session types: a type that accepts a move it
should refuse (or the other way round) disagrees with this module, and the machine says so.

One shortcut: a ``hide`` or ``remove`` notice moves the floor of a discussion or workflow
in ways not redone here; once the WAL holds one, the type's own fold says who speaks next
(``check_invariants`` checks that fold against the hub's published state anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

import attrs

from troupe import (
    EV_AUCTION_SELECT,
    EV_CONTEXT_SET,
    EV_EXPECTATION_VIOLATED,
    EV_PACKET,
    EV_SESSION_CLOSED,
    EV_SESSION_EXPIRED,
    EV_TEXT,
    Envelope,
    SessionMetadata,
)
from troupe.model import is_protocol_event
from troupe.session_types import get
from troupe.testing import fold_wal

Graph = Literal["round_robin", "sequence"]
GRAPHS: Final[tuple[Graph, ...]] = ("round_robin", "sequence")

ENDINGS: Final = frozenset({EV_SESSION_CLOSED, EV_SESSION_EXPIRED})
#: The types that refuse every event type but their own turns (and the hub's notices).
STRICT: Final = {
    "broadcast": frozenset({EV_TEXT}),
    "auction": frozenset({EV_TEXT, EV_AUCTION_SELECT}),
    "notification": frozenset({EV_TEXT}),
}
PACKET_KEYS: Final = frozenset({"body", "routing", "context_updates"})
CONTEXT_KEYS: Final = frozenset({"set", "delete"})


@attrs.frozen
class Plan:
    """A session as the machine opened it: the hub's metadata and a workflow's graph."""

    metadata: SessionMetadata
    graph: Graph | None = None

    @property
    def members(self) -> list[str]:
        """The participants' ids in their order, the creator first."""
        return self.metadata.participant_ids()

    @property
    def creator(self) -> str:
        return self.metadata.creator_id


def verdict(plan: Plan, wal: Sequence[Envelope], envelope: Envelope) -> str | None:
    """Why the hub must refuse ``envelope`` after ``wal``, or ``None`` if it must accept it.

    Args:
        plan: The session.
        wal: Its accepted envelopes, in order (the WAL when the post is validated).
        envelope: A post that is not a repeat of an accepted one.

    Returns:
        A reason, or ``None``.
    """
    return generic_refusal(plan, wal, envelope) or JUDGES[plan.metadata.manifest_type](
        plan, wal, envelope
    )


def generic_refusal(plan: Plan, wal: Sequence[Envelope], envelope: Envelope) -> str | None:
    """Why any session would refuse ``envelope``, before its type's turn rules (or ``None``).

    A post refused by the turn rules alone is a near miss: the moves most likely to find a
    session type that lets through what it should not.
    """
    members = plan.members
    kind = envelope.event_type
    if envelope.sender_id not in members:
        return "the sender is not a participant"
    if envelope.audience is not None and not set(envelope.audience) <= set(members):
        return "the audience names a stranger"
    if any(e.event_type in ENDINGS for e in wal):
        return "the session is over"
    if is_protocol_event(kind) or kind == EV_EXPECTATION_VIOLATED:
        return "the hub's own event type"
    strict = STRICT.get(plan.metadata.manifest_type)
    if strict is not None and kind not in strict:
        return f"{plan.metadata.manifest_type} takes no {kind}"
    return None


def must_be_over(plan: Plan, wal: Sequence[Envelope]) -> bool:
    """Whether the session must have closed by itself after ``wal``: a consulting with its
    reply, a notification with its text, a workflow with nobody left to speak.

    Args:
        plan: The session.
        wal: Its accepted envelopes (the close notice left out or not).

    Returns:
        True when its WAL must end with a close notice.
    """
    kind = plan.metadata.manifest_type
    if kind == "workflow":
        speaker, turns, _ = _workflow_floor(plan, wal)
        return speaker is None or (plan.graph == "sequence" and turns >= len(plan.members))
    if kind == "consulting":
        return _consulting_floor(plan, wal) is None
    return kind == "notification" and any(e.sender_id == plan.creator for e in _texts(wal))


def _texts(wal: Sequence[Envelope]) -> list[Envelope]:
    return [e for e in wal if e.event_type == EV_TEXT]


def _consulting_floor(plan: Plan, wal: Sequence[Envelope]) -> str | None:
    """The initiator until the question, the respondent until the reply, then nobody."""
    floor: list[str] = [plan.creator, *(m for m in plan.members if m != plan.creator)]
    for e in _texts(wal):
        if floor and e.sender_id == floor[0]:
            floor.pop(0)
    return floor[0] if floor else None


def _consulting(plan: Plan, wal: Sequence[Envelope], envelope: Envelope) -> str | None:
    if envelope.event_type != EV_TEXT:
        return None  # information
    holder = _consulting_floor(plan, wal)
    if holder is None:
        return "the question was answered"
    return None if envelope.sender_id == holder else f"{holder} has the floor"


def _conversation(plan: Plan, wal: Sequence[Envelope], envelope: Envelope) -> str | None:
    return None  # any participant, any time


def _broadcast(plan: Plan, wal: Sequence[Envelope], envelope: Envelope) -> str | None:
    return None if envelope.sender_id == plan.creator else "only the initiator broadcasts"


def _notification(plan: Plan, wal: Sequence[Envelope], envelope: Envelope) -> str | None:
    if any(e.sender_id == plan.creator for e in _texts(wal)):
        return "the notification was sent"
    return None if envelope.sender_id == plan.creator else "only the initiator notifies"


def _auction(plan: Plan, wal: Sequence[Envelope], envelope: Envelope) -> str | None:
    rfp = False
    bids: list[str] = []
    winner: str | None = None
    for e in wal:
        if e.event_type == EV_TEXT and e.sender_id == plan.creator:
            rfp = True
        elif e.event_type == EV_TEXT and rfp and winner is None and e.sender_id not in bids:
            bids.append(e.sender_id)
        elif e.event_type == EV_AUCTION_SELECT and e.event_data.get("winner_id") in bids:
            winner = e.event_data["winner_id"]
    sender = envelope.sender_id
    if envelope.event_type == EV_AUCTION_SELECT:
        if not rfp or winner is not None:
            return "no select before the RFP or after the award"
        if sender != plan.creator:
            return "only the initiator selects"
        chosen = envelope.event_data.get("winner_id")
        return None if chosen in bids else f"{chosen!r} did not bid"
    if not rfp:
        return None if sender == plan.creator else "the initiator sends the RFP"
    if winner is None:
        if sender == plan.creator:
            return "the initiator is quiet while bidders bid"
        return f"{sender} already bid" if sender in bids else None
    return None if sender in (plan.creator, winner) else "only the initiator and the winner"


def _discussion(plan: Plan, wal: Sequence[Envelope], envelope: Envelope) -> str | None:
    if envelope.event_type != EV_TEXT:
        return None
    folded = _folded_state(plan, wal)
    if folded is not None:
        speaker = folded.expected_next_speaker
    else:
        order = plan.members
        speaker = order[0]
        for e in _texts(wal):
            if e.sender_id == speaker:
                speaker = order[(order.index(speaker) + 1) % len(order)]
    if speaker is None:
        return "nobody is left to speak"
    return None if envelope.sender_id == speaker else f"{speaker} has the floor"


def _workflow(plan: Plan, wal: Sequence[Envelope], envelope: Envelope) -> str | None:
    kind = envelope.event_type
    if kind == EV_CONTEXT_SET:
        return None if _context_ok(envelope.event_data) else "a malformed context set"
    if kind not in (EV_TEXT, EV_PACKET):
        return None
    speaker, turns, rotation = _workflow_floor(plan, wal)
    if speaker is None or (plan.graph == "sequence" and turns >= len(plan.members)):
        return "the workflow is over"
    if envelope.sender_id != speaker:
        return f"{speaker} has the floor"
    if kind == EV_TEXT:
        return None
    data = envelope.event_data
    if not set(data) <= PACKET_KEYS or not _context_ok(data.get("context_updates", {})):
        return "a malformed packet"
    target = _handoff(data)
    return None if target is None or target in rotation else f"{target} is not in the rotation"


def _workflow_floor(plan: Plan, wal: Sequence[Envelope]) -> tuple[str | None, int, list[str]]:
    """Who speaks next, after how many turns, and who may be handed the floor."""
    folded = _folded_state(plan, wal)
    if folded is not None:
        rotation = [m for m in folded.participant_order if m not in folded.removed]
        return folded.expected_next_speaker, folded.turn_count, rotation
    order = plan.members
    speaker: str | None = order[0]
    turns = 0
    for e in wal:
        if e.event_type not in (EV_TEXT, EV_PACKET) or e.sender_id != speaker:
            continue
        turns += 1
        target = _handoff(e.event_data) if e.event_type == EV_PACKET else None
        at = order.index(speaker)
        if target is not None:
            speaker = target
        elif plan.graph == "round_robin":
            speaker = order[(at + 1) % len(order)]
        else:
            speaker = order[at + 1] if at + 1 < len(order) else None
    return speaker, turns, order


def _handoff(data: Mapping[str, Any]) -> str | None:
    routing = data.get("routing")
    if not isinstance(routing, Mapping) or routing.get("kind") != "handoff":
        return None
    target = routing.get("target")
    return target if isinstance(target, str) else None


def _context_ok(data: object) -> bool:
    if not isinstance(data, Mapping) or not set(data) <= CONTEXT_KEYS:
        return False
    return isinstance(data.get("set", {}), Mapping) and isinstance(data.get("delete", []), list)


def _stalled(wal: Sequence[Envelope]) -> bool:
    return any(
        e.event_type == EV_EXPECTATION_VIOLATED
        and e.event_data.get("on_violation") in ("hide", "remove")
        for e in wal
    )


def _folded_state(plan: Plan, wal: Sequence[Envelope]) -> Any:
    """The type's own fold once a stall notice moved the floor, else ``None``."""
    if not _stalled(wal):
        return None
    return fold_wal(get(plan.metadata.manifest_type), plan.metadata, list(wal))


JUDGES: Final[dict[str, Callable[[Plan, Sequence[Envelope], Envelope], str | None]]] = {
    "consulting": _consulting,
    "conversation": _conversation,
    "discussion": _discussion,
    "workflow": _workflow,
    "broadcast": _broadcast,
    "auction": _auction,
    "notification": _notification,
}
