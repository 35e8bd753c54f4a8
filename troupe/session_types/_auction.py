"""auction@1 — a request for proposals, one bid each, a winner, then a two-way talk (§4.7).

Rules:

- The creator as the one initiator, and at least one bidder. One knob: ``arbiter``, the
  name of an arbiter registered with the hub (``hub.register_auction_arbiter``): once
  every bidder has bid, the hub asks it for the winner and posts the select for the
  initiator.
- Phases, in order; ``_MOVES`` below is the whole machine: for each phase and kind of move,
  who may make it and the phase it leads to (a pair missing from the table is refused):
  ``AWAITING_RFP`` — the initiator's first ``EV_TEXT`` is the request for proposals;
  ``BIDDING`` — every bidder may send exactly one ``EV_TEXT`` bid, the initiator stays quiet
  until it selects a winner with ``EV_AUCTION_SELECT`` (``{"winner_id": <a bidder who
  bid>}``), once; ``AWARDED`` — only the initiator and the winner speak, until someone
  closes the session.
- Event types other than texts and the select are refused, except the hub's expectation
  notices.
- Turn: the initiator until the RFP is out; then nobody in particular (each bidder's handler
  answers the RFP on its own; the winner's answers the select).
- Views show texts and the select (``"Selected <id> as the winner."``).
- Replies from the default turn handler (``build_reply``) go to the trigger's sender only:
  bids are sealed, and bidders never answer each other.
"""

from __future__ import annotations

import enum
from typing import Any, Final, Literal

import attrs

from .._errors import ProtocolError
from ..model import EV_EXPECTATION_VIOLATED, EV_TEXT, Envelope, SessionMetadata
from ..model._convert import to_tuple
from ._base import ExpectedTurn
from ._common import BaseSessionType

#: The initiator picks the winner: ``{"winner_id": str}``.
EV_AUCTION_SELECT: Final = "troupe.auction.select"


class AuctionPhase(enum.Enum):
    """Where an auction is: waiting for the RFP, collecting bids, or awarded."""

    AWAITING_RFP = "awaiting_rfp"
    BIDDING = "bidding"
    AWARDED = "awarded"


Mover = Literal["initiator", "bidder", "pair"]

#: (phase, move) -> (who may make it, the phase after it).
_MOVES: Final[dict[tuple[AuctionPhase, str], tuple[Mover, AuctionPhase]]] = {
    (AuctionPhase.AWAITING_RFP, EV_TEXT): ("initiator", AuctionPhase.BIDDING),
    (AuctionPhase.BIDDING, EV_TEXT): ("bidder", AuctionPhase.BIDDING),
    (AuctionPhase.BIDDING, EV_AUCTION_SELECT): ("initiator", AuctionPhase.AWARDED),
    (AuctionPhase.AWARDED, EV_TEXT): ("pair", AuctionPhase.AWARDED),
}


@attrs.frozen(kw_only=True)
class AuctionState:
    """An auction's folded state: the phase, who bid (in order) and who won."""

    initiator_id: str
    bidders: tuple[str, ...] = attrs.field(converter=to_tuple)
    phase: AuctionPhase = attrs.field(default=AuctionPhase.AWAITING_RFP, converter=AuctionPhase)
    bids: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    winner_id: str | None = None
    rfp_envelope_id: str | None = None
    last_envelope_id: str | None = None

    def may_move(self, mover: Mover, sender: str) -> bool:
        """Whether ``sender`` is who ``mover`` names (a bidder only before their bid).

        Args:
            mover: The table's "who may".
            sender: The sender's id.

        Returns:
            True when the sender may make the move.
        """
        if mover == "initiator":
            return sender == self.initiator_id
        if mover == "bidder":
            return sender in self.bidders and sender not in self.bids
        return sender in (self.initiator_id, self.winner_id)


def select_winner(session_id: str, initiator_id: str, winner_id: str) -> Envelope:
    """The envelope with which an auction's initiator selects ``winner_id``.

    Args:
        session_id: The auction.
        initiator_id: Its initiator (the sender).
        winner_id: A bidder who bid.

    Returns:
        An unstamped ``EV_AUCTION_SELECT`` envelope, for ``post_envelope``.
    """
    return Envelope(
        session_id=session_id,
        sender_id=initiator_id,
        event_type=EV_AUCTION_SELECT,
        event_data={"winner_id": winner_id},
    )


def _winner(envelope: Envelope) -> str | None:
    winner = envelope.event_data.get("winner_id")
    return winner if isinstance(winner, str) else None


class AuctionType(BaseSessionType[AuctionState]):
    """The auction session type: RFP, bids, a winner, then initiator and winner talk."""

    name = "auction"
    state_type = AuctionState
    turn_events = frozenset({EV_TEXT, EV_AUCTION_SELECT})
    other_events = frozenset({EV_EXPECTATION_VIOLATED})
    known_knobs = frozenset({"arbiter"})

    def validate_create(self, metadata: SessionMetadata) -> None:
        """The participants and knobs; ``arbiter``, if given, is a name.

        Args:
            metadata: The session about to be created.

        Raises:
            ProtocolError: Naming the rule broken (the hub checks the arbiter is registered).
        """
        super().validate_create(metadata)
        arbiter = metadata.knobs.get("arbiter")
        if arbiter is not None and (not isinstance(arbiter, str) or not arbiter):
            raise ProtocolError(
                f"auction {metadata.session_id}: knob arbiter must be an arbiter's name, "
                f"got {arbiter!r}"
            )

    def initial_state(self, metadata: SessionMetadata) -> AuctionState:
        """Note the initiator and the bidders, waiting for the RFP.

        Args:
            metadata: A session that passed ``validate_create``.

        Returns:
            The state before the RFP.
        """
        bidders = [p for p in metadata.participant_ids() if p != metadata.creator_id]
        return AuctionState(initiator_id=metadata.creator_id, bidders=bidders)

    def check_turn(
        self, metadata: SessionMetadata, envelope: Envelope, state: AuctionState
    ) -> None:
        """Refuse any move the table does not allow now, and a select of a non-bidder.

        Args:
            metadata: The session's metadata.
            envelope: A text or a select.
            state: The state before it.

        Raises:
            ProtocolError: Naming the phase, the rule and the ids.
        """
        where = f"auction {metadata.session_id}"
        sender = envelope.sender_id
        kind = "select" if envelope.event_type == EV_AUCTION_SELECT else "text"
        move = _MOVES.get((state.phase, envelope.event_type))
        if move is None:
            if state.phase is AuctionPhase.AWAITING_RFP:
                raise ProtocolError(f"{where} has no RFP yet; refused select from {sender}")
            raise ProtocolError(
                f"{where} already selected {state.winner_id}; refused select from {sender}"
            )
        mover, _ = move
        if mover == "bidder" and sender in state.bids:
            raise ProtocolError(f"{where}: {sender} already bid")
        if not state.may_move(mover, sender):
            raise ProtocolError(f"{where} ({state.phase.value}): {_WHO[mover, kind]}, got {sender}")
        if kind == "select":
            winner = _winner(envelope)
            if winner is None or winner not in state.bids:
                bids = ", ".join(state.bids) or "none yet"
                raise ProtocolError(
                    f"{where}: winner_id must name a bidder who bid ({bids}),"
                    f" got {envelope.event_data.get('winner_id')!r}"
                )

    def fold_turn(self, envelope: Envelope, state: AuctionState) -> AuctionState:
        """Move along the table: the RFP, a bid, the select, or a text of the pair.

        Args:
            envelope: An accepted text or select.
            state: The state before it.

        Returns:
            The state after it (unchanged for a move the table does not allow).
        """
        move = _MOVES.get((state.phase, envelope.event_type))
        sender = envelope.sender_id
        if move is None or not state.may_move(move[0], sender):
            return state
        mover, phase = move
        after = attrs.evolve(state, phase=phase, last_envelope_id=envelope.envelope_id)
        if state.phase is AuctionPhase.AWAITING_RFP:
            return attrs.evolve(after, rfp_envelope_id=envelope.envelope_id)
        if mover == "bidder":
            return attrs.evolve(after, bids=(*state.bids, sender))
        if phase is AuctionPhase.AWARDED and state.winner_id is None:
            winner = _winner(envelope)
            return attrs.evolve(after, winner_id=winner) if winner in state.bids else state
        return after

    def next_turn(self, metadata: SessionMetadata, state: AuctionState) -> ExpectedTurn | None:
        """The initiator until the RFP is out; then nobody in particular.

        Args:
            metadata: The session's metadata.
            state: The current state.

        Returns:
            The initiator's turn, or ``None``.
        """
        if state.phase is AuctionPhase.AWAITING_RFP:
            return ExpectedTurn(agent_id=state.initiator_id)
        return None

    def render(self, envelope: Envelope) -> str | None:
        """Texts, and the select as ``"Selected <id> as the winner."``.

        Args:
            envelope: Any envelope of the session.

        Returns:
            The text, or ``None`` to leave the envelope out.
        """
        if envelope.event_type == EV_AUCTION_SELECT:
            winner = _winner(envelope)
            return f"Selected {winner} as the winner." if winner is not None else None
        return super().render(envelope)

    def build_reply(
        self, metadata: SessionMetadata, sender_id: str, reply: Any, trigger: Envelope
    ) -> Envelope | None:
        """A text for whoever gave the agent its turn only: bids are sealed.

        A bidder's answer to the RFP reaches the initiator alone, and so does the winner's
        answer to the select; other bidders never see (nor answer) them.

        Args:
            metadata: The session's metadata.
            sender_id: The agent that answered.
            reply: What its ``respond`` returned: a ``str``, or ``None`` for silence.
            trigger: The envelope it answered.

        Returns:
            An ``EV_TEXT`` envelope to ``trigger``'s sender, or ``None``.

        Raises:
            TypeError: For a reply that is not a ``str`` or ``None``.
        """
        if reply is None:
            return None
        if not isinstance(reply, str):
            raise TypeError(
                f"respond() returned {type(reply).__name__}; an auction expects str or None"
            )
        return Envelope(
            session_id=trigger.session_id,
            sender_id=sender_id,
            event_type=EV_TEXT,
            event_data={"text": reply},
            audience=(trigger.sender_id,),
            causation_id=trigger.envelope_id,
            depth=trigger.depth,
        )


#: (who may, kind of move) -> how a refusal says it.
_WHO: Final[dict[tuple[Mover, str], str]] = {
    ("initiator", "text"): "the RFP must come from the initiator",
    ("initiator", "select"): "only the initiator selects",
    ("bidder", "text"): "only bidders speak until the initiator selects a winner",
    ("pair", "text"): "only the initiator and the winner speak",
}
