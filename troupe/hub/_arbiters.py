"""Auction arbiters: who wins an auction, picked by the hub once every bidder has bid.

Rules:

- An arbiter is a pure function of the bids (the bidders' first texts after the RFP, in
  WAL order) that returns the winner's id, or ``None`` to leave the choice to the initiator.
- An auction names its arbiter in the knob ``arbiter``; the hub refuses to create one whose
  arbiter is not registered. Built in: ``first_bid`` (the earliest bid wins).
- The session actor asks the arbiter right after the last bid is folded (and again when it
  recovers, if a crash came in between), and posts the select as the initiator, with an
  idempotency key of the hub's, so a repeat appends nothing.
- An arbiter that raises, answers a non-bidder, or has been unregistered leaves the auction
  BIDDING for the initiator to select; the failure is logged and audited
  (``arbiter_failed``). It never crashes the session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, TypeAlias, cast

import attrs

from .._errors import NetworkError
from ..model import EV_TEXT, Envelope
from ..session_types import AuctionPhase, AuctionState, select_winner

if TYPE_CHECKING:
    from ._session import SessionActor

log = logging.getLogger("troupe.hub")

#: Picks the winner from the bids (``None``: the initiator will).
Arbiter: TypeAlias = Callable[[Sequence[Envelope]], "str | None"]


def _first_bid(bids: Sequence[Envelope]) -> str | None:
    return bids[0].sender_id if bids else None


#: The arbiters every hub has.
ARBITERS: Final[dict[str, Arbiter]] = {"first_bid": _first_bid}

#: The idempotency key of the select the hub posts for an arbiter (one per auction).
AWARD_KEY: Final = "troupe:award"


def bids_of(wal: Sequence[Envelope], state: AuctionState) -> list[Envelope]:
    """Each bidder's bid: its first text after the RFP, in WAL order."""
    bids: list[Envelope] = []
    seen: set[str] = set()
    after_rfp = False
    for env in wal:
        if env.envelope_id == state.rfp_envelope_id:
            after_rfp = True
        elif after_rfp and env.event_type == EV_TEXT and env.sender_id in state.bidders:
            if env.sender_id not in seen:
                seen.add(env.sender_id)
                bids.append(env)
    return bids


async def award_if_due(actor: SessionActor) -> None:
    """Ask the auction's arbiter for the winner once every bidder has bid (see above)."""
    state = actor.state
    name = actor.metadata.knobs.get("arbiter")
    if (
        not isinstance(name, str)
        or not isinstance(state, AuctionState)
        or state.phase is not AuctionPhase.BIDDING
        or len(state.bids) < len(state.bidders)
    ):
        return
    core = actor.core
    sid = actor.sid

    def failed(why: str) -> None:
        log.warning("auction %s: arbiter %r: %s; the initiator selects", sid, name, why)
        core.audit("arbiter_failed", session_id=sid, arbiter=name, reason=why)

    arbiter = core.arbiters.get(name)
    if arbiter is None:
        failed("not registered")
        return
    bids = bids_of(await core.store.read(sid), state)
    try:
        winner = cast(object, arbiter(tuple(bids)))  # a registered function's answer
    except Exception as exc:
        failed(f"raised {exc!r}")
        return
    if winner is None:
        return
    if not isinstance(winner, str):
        failed(f"returned {winner!r}, not a bidder's id")
        return
    from ._core import Failed  # (the core imports this module for ARBITERS)

    select = attrs.evolve(select_winner(sid, state.initiator_id, winner), idempotency_key=AWARD_KEY)
    try:
        result = await actor._post(select, 1, internal=True)
    except NetworkError as exc:
        failed(str(exc))
        return
    if isinstance(result, Failed):
        failed(str(result.error))
