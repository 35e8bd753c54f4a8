"""auction@1: RFP, one bid per bidder, the initiator selects a winner, the pair continues."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_session_types._helpers import SID, Run, metadata
from troupe import ProtocolError
from troupe.model import Envelope
from troupe.session_types import (
    EV_AUCTION_SELECT,
    AuctionPhase,
    AuctionState,
    AuctionType,
    ExpectedTurn,
    select_winner,
)

AUCTION = AuctionType()


def run() -> Run:
    return Run(AUCTION, metadata("auction", ["a", "b", "c", "d"]))


def select(winner: Any, sender: str = "a") -> Envelope:
    return Envelope(
        session_id=SID,
        sender_id=sender,
        event_type=EV_AUCTION_SELECT,
        event_data={"winner_id": winner},
    )


def test_identity() -> None:
    assert (AUCTION.name, AUCTION.version, AUCTION.expectations) == ("auction", 1, ())


def test_create_needs_a_bidder() -> None:
    with pytest.raises(ProtocolError, match="auction s1 needs at least 2 participants, got 1"):
        AUCTION.validate_create(metadata("auction", ["a"]))


def test_a_whole_auction() -> None:
    r = run()
    assert AUCTION.expected_next(r.meta, r.state) == ExpectedTurn(agent_id="a")
    r.say("a", "who paints my fence?")
    assert r.state.phase is AuctionPhase.BIDDING
    assert AUCTION.expected_next(r.meta, r.state) is None
    r.say("c", "100")
    r.say("b", "80")
    r.post(select_winner(SID, "a", "b"))
    r.say("b", "when do I start?")
    r.say("a", "monday")
    assert r.state == AuctionState(
        initiator_id="a",
        bidders=("b", "c", "d"),
        phase=AuctionPhase.AWARDED,
        bids=("c", "b"),
        winner_id="b",
        rfp_envelope_id="e1",
        last_envelope_id="e6",
    )
    assert r.transitions == []
    assert AUCTION.render(r.wal[3]) == "Selected b as the winner."


def test_the_rfp_comes_first_and_from_the_initiator() -> None:
    r = run()
    with pytest.raises(
        ProtocolError, match=r"^auction s1 \(awaiting_rfp\): the RFP must come from the initiator"
    ):
        r.say("b")
    with pytest.raises(ProtocolError, match=r"^auction s1 has no RFP yet; refused select from a$"):
        r.post(select("b"))


def test_each_bidder_bids_once_and_the_initiator_waits() -> None:
    r = run()
    r.say("a")
    r.say("b")
    with pytest.raises(ProtocolError, match=r"^auction s1: b already bid$"):
        r.say("b")
    with pytest.raises(
        ProtocolError, match=r"^auction s1 \(bidding\): only bidders speak until .* got a$"
    ):
        r.say("a")


@pytest.mark.parametrize("winner", ["c", "a", "zed", 7, None])
def test_the_winner_must_be_a_bidder_who_bid(winner: Any) -> None:
    r = run()
    r.say("a")
    r.say("b")
    with pytest.raises(
        ProtocolError, match=r"^auction s1: winner_id must name a bidder who bid \(b\), got"
    ):
        r.post(select(winner))


def test_only_the_initiator_selects_and_only_once() -> None:
    r = run()
    r.say("a")
    r.say("b")
    with pytest.raises(ProtocolError, match=r"\(bidding\): only the initiator selects, got c$"):
        r.post(select("b", sender="c"))
    r.post(select("b"))
    with pytest.raises(ProtocolError, match=r"^auction s1 already selected b; refused select"):
        r.post(select("b"))


def test_after_the_award_only_the_pair_speaks() -> None:
    r = run()
    r.say("a")
    r.say("b")
    r.say("c")
    r.post(select("c"))
    with pytest.raises(
        ProtocolError, match=r"\(awarded\): only the initiator and the winner speak, got b$"
    ):
        r.say("b")
    with pytest.raises(ProtocolError, match=r"got d$"):
        r.say("d")  # never bid: too late now


def test_fold_ignores_moves_the_table_does_not_allow() -> None:
    state = run().state
    assert AUCTION.fold(select("b"), state) == state
    bidding = AuctionState(initiator_id="a", bidders=("b",), phase="bidding")
    assert AUCTION.fold(select("zed"), bidding) == bidding
    assert AUCTION.render(select(3)) is None


def test_replies_go_to_the_trigger_only() -> None:
    r = run()
    rfp = r.say("a", "who paints my fence?")
    bid = AUCTION.build_reply(r.meta, "b", "80", rfp)
    assert bid == Envelope(
        session_id=SID,
        sender_id="b",
        event_type="troupe.text",
        event_data={"text": "80"},
        audience=("a",),
        causation_id=rfp.envelope_id,
    )
    assert AUCTION.build_reply(r.meta, "b", None, rfp) is None
    with pytest.raises(TypeError, match=r"respond.. returned int; an auction expects str"):
        AUCTION.build_reply(r.meta, "b", 80, rfp)
