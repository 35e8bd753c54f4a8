"""market: sealed-bid auctions, one lot per session, on the ``auction`` session type.

A seller drawn at random puts up a lot with a reserve price and invites two to five bidders.
Each bidder values the lot (a value drawn per bidder and lot), thinks a moment, and bids a
share of its value (also drawn): bids are sealed, each reaches the seller alone. When every
bid is in, the seller selects the highest one at or above the reserve, the winner confirms,
and the session is closed; with no such bid the lot is withdrawn. The summary counts lots
sold and withdrawn, the turnover, and how often the bidder who valued the lot most won it.
"""

from __future__ import annotations

from ...client import AgentClient, Turn
from ...model import EV_TEXT, Envelope
from ...session_types import select_winner
from .._harness import Scenario, Sim

#: Simulated seconds a bidder may think before bidding.
MAX_THINK = 3.0
#: Simulated seconds a seller waits for the bids.
BIDDING_TIME = 60.0


def value(sim: Sim, bidder: int, lot: int) -> int:
    """What ``bidder`` thinks ``lot`` is worth."""
    return 40 + int(100 * sim.rand("value", bidder, lot))


class Bidder:
    """An agent: bids on the lots it is invited to, and confirms the ones it wins."""

    def __init__(self, sim: Sim, lots: dict[str, int], index: int) -> None:
        self.sim = sim
        self.lots = lots
        self.index = index

    async def respond(self, turn: Turn) -> str | None:
        lot = self.lots.get(turn.session_id)
        if lot is None:
            return None
        if turn.text.startswith("Selected"):
            return "deal"
        await self.sim.sleep(MAX_THINK * self.sim.rand("think", self.index, lot))
        share = 0.6 + 0.35 * self.sim.rand("share", self.index, lot)
        return f"bid {int(value(self.sim, self.index, lot) * share)}"


async def run(sim: Sim) -> None:
    lots: dict[str, int] = {}
    agents: list[AgentClient] = await sim.populate(lambda i: Bidder(sim, lots, i), prefix="trader")
    n = len(agents)
    index_of = {a.agent_id: i for i, a in enumerate(agents)}
    prices: list[int] = []
    withdrawn = 0
    best_bidder_won = 0

    async def auction(i: int) -> None:
        nonlocal withdrawn, best_bidder_won
        seller = agents[sim.randint(0, n - 1, "seller", i)]
        first = sim.randint(1, n - 1, "first", i)
        count = min(n - 1, sim.randint(2, 5, "bidders", i))
        start = index_of[seller.agent_id]
        bidders = sorted({(start + first + k) % n for k in range(count)} - {start})
        reserve = sim.randint(40, 90, "reserve", i)
        await sim.sleep(sim.rand("start", i))
        channel = await seller.open(type="auction", target=[agents[b].agent_id for b in bidders])
        sid = channel.session_id
        lots[sid] = i
        await channel.send(f"lot {i}: sealed bids, reserve {reserve}")

        def is_bid(e: Envelope) -> bool:
            return e.event_type == EV_TEXT and e.sender_id != seller.agent_id

        bids: dict[str, int] = {}
        with sim.move_on_after(BIDDING_TIME):
            while len(bids) < len(bidders):
                bid = await seller.wait_for_channel_event(channel_id=sid, predicate=is_bid)
                bids[bid.sender_id] = int((bid.text or "bid 0").split()[1])
        winner = max(bids, key=lambda b: (bids[b], b), default=None)
        if winner is None or bids[winner] < reserve:
            withdrawn += 1
            del lots[sid]
            await channel.close(reason="withdrawn")
            return
        await seller.post_envelope(select_winner(sid, seller.agent_id, winner))
        await seller.wait_for_channel_event(
            channel_id=sid, predicate=lambda e: e.event_type == EV_TEXT and e.sender_id == winner
        )
        prices.append(bids[winner])
        keenest = max(bidders, key=lambda b: (value(sim, b, i), b))
        best_bidder_won += agents[keenest].agent_id == winner
        del lots[sid]
        await channel.close(reason=f"sold for {bids[winner]}")

    await sim.run_sessions(auction)
    sim.note("lots sold / withdrawn", f"{len(prices)} / {withdrawn}")
    if prices:
        sim.note("turnover (mean price)", f"{sum(prices)} ({sum(prices) / len(prices):.1f})")
        sim.note("won by the bidder who valued it most", f"{best_bidder_won} of {len(prices)}")


SCENARIO = Scenario(
    name="market",
    help="sealed-bid auctions on the auction session type, one lot per session",
    run=run,
    agents=500,
    sessions=1000,
    min_agents=3,
)
