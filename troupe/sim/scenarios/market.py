"""market: English auctions, one lot per session, with bidders taking turns.

Each session is a round-robin discussion: an auctioneer drawn at random puts up a lot with a
reserve price, and two to five bidders take turns. On its turn a bidder who values the lot
(a value drawn per bidder and lot) above the current price raises it by a step, or passes.
When the floor comes back to the auctioneer after a round without a bid, the lot is sold to
the highest bidder (or withdrawn below the reserve) and the session is closed.

(troupe's own ``auction`` session type arrives with issue 6; this market only needs turns,
which the discussion type gives.)
"""

from __future__ import annotations

import trio

from ...client import AgentClient, Turn
from .._harness import Sim
from .._scenario import Scenario

STEP = 5
#: Simulated seconds a trader may think before speaking.
MAX_THINK = 3.0


class Lot:
    """One auction under way."""

    def __init__(self, index: int, reserve: int) -> None:
        self.index = index
        self.reserve = reserve
        self.price = 0
        self.leader: int | None = None
        self.bids_this_round = 0
        self.result: str | None = None
        self.over = trio.Event()


class Trader:
    """An agent: the auctioneer of the lots it opens, a bidder in the others."""

    def __init__(self, sim: Sim, lots: dict[str, Lot], index: int) -> None:
        self.sim = sim
        self.lots = lots
        self.index = index

    def value(self, lot: Lot) -> int:
        return 40 + int(100 * self.sim.rand("value", self.index, lot.index))

    async def respond(self, turn: Turn) -> str | None:
        lot = self.lots.get(turn.session_id)
        if lot is None:
            return None
        if lot.result is not None:
            lot.over.set()  # the hammer fell, and its line is in the WAL: the lot is done
            return None
        await self.sim.sleep(MAX_THINK * self.sim.rand("think", self.index, turn.envelope.seq))
        if turn.session.creator_id == turn.agent_id:
            return self.call(lot)
        return self.bid(lot)

    def call(self, lot: Lot) -> str:
        if lot.bids_this_round:
            lot.bids_this_round = 0
            return f"{lot.price} from bidder {lot.leader}; any more?"
        if lot.leader is not None and lot.price >= lot.reserve:
            lot.result = f"sold to bidder {lot.leader} for {lot.price}"
        else:
            lot.result = "withdrawn"
        return lot.result

    def bid(self, lot: Lot) -> str:
        offer = max(lot.price + STEP, lot.reserve)
        if lot.leader == self.index or offer > self.value(lot):
            return "pass"
        lot.price, lot.leader = offer, self.index
        lot.bids_this_round += 1
        return f"bid {offer}"


async def run(sim: Sim) -> None:
    lots: dict[str, Lot] = {}
    agents: list[AgentClient] = await sim.populate(lambda i: Trader(sim, lots, i), prefix="trader")
    n = len(agents)
    sold: list[int] = []
    withdrawn = 0

    async def auction(i: int) -> None:
        nonlocal withdrawn
        auctioneer = sim.randint(0, n - 1, "auctioneer", i)
        count = min(n - 1, sim.randint(2, 5, "bidders", i))
        first = sim.randint(1, n - 1, "first", i)
        bidders = sorted({(auctioneer + first + k) % n for k in range(count)} - {auctioneer})
        lot = Lot(i, reserve=sim.randint(40, 90, "reserve", i))
        await sim.sleep(sim.rand("start", i))
        channel = await agents[auctioneer].open(
            type="discussion", target=[agents[b].agent_id for b in bidders]
        )
        lots[channel.session_id] = lot
        await channel.send(f"lot {i}: reserve {lot.reserve}, steps of {STEP}")
        await lot.over.wait()
        del lots[channel.session_id]
        if lot.result == "withdrawn":
            withdrawn += 1
        else:
            sold.append(lot.price)
        await channel.close(reason=lot.result or "over")

    await sim.run_sessions(auction)
    sim.note("lots sold / withdrawn", f"{len(sold)} / {withdrawn}")
    if sold:
        sim.note("turnover (mean price)", f"{sum(sold)} ({sum(sold) / len(sold):.1f})")


SCENARIO = Scenario(
    name="market",
    help="English auctions, one lot per session, bidders taking turns",
    run=run,
    agents=500,
    sessions=1000,
    min_agents=3,
)
