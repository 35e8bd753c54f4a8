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
from typing import Final, TypeAlias

from ..model import EV_TEXT, Envelope
from ..session_types import AuctionState

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
