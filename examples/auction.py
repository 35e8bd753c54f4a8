"""An auction: a request for proposals, one bid per bidder, a winner, then the two talk.

Bidders are scripted agents: their turn handler answers the RFP with a bid and, for the
winner only, the selection with a thank-you. The initiator (a person) reads the bids and
selects with ``select_winner`` (an ``EV_AUCTION_SELECT`` envelope). Run:
``python examples/auction.py``.
"""

from __future__ import annotations

import trio

from troupe import EV_TEXT, HubClient, LocalLink, Passport, Turn, open_hub
from troupe.session_types import select_winner


class Painter:
    def __init__(self, price: int) -> None:
        self.price = price

    async def respond(self, turn: Turn) -> str:
        if turn.text.startswith("Selected"):
            return "Thanks! I can start on Monday."
        return f"{self.price} EUR"


async def main() -> None:
    async with open_hub() as hub:
        hc = HubClient(LocalLink(hub))
        me = await hc.register_human(Passport(name="owner", kind="human"))
        painters = {}
        for name, price in (("ann", 900), ("bo", 700), ("cat", 850)):
            painters[name] = await hc.register(Painter(price), Passport(name=name))
        ids = [p.agent_id for p in painters.values()]
        auction = await me.open(type="auction", target=ids)
        sid = auction.session_id
        await auction.send("Who paints my fence?")
        bids: dict[str, int] = {}
        while len(bids) < len(ids):
            bid = await me.wait_for_channel_event(
                channel_id=sid, predicate=lambda e: e.event_type == EV_TEXT, timeout=5
            )
            bids[bid.sender_id] = int((bid.text or "0").split()[0])
            print(f"bid from {hc.name_for(bid.sender_id)}: {bid.text}")
        winner = min(bids, key=bids.__getitem__)
        await me.post_envelope(select_winner(sid, me.agent_id, winner))
        print(f"selected: {hc.name_for(winner)}")
        reply = await me.wait_for_channel_event(
            channel_id=sid, predicate=lambda e: e.event_type == EV_TEXT, timeout=5
        )
        print(f"{hc.name_for(reply.sender_id)}: {reply.text}")
        await auction.send("Great, see you Monday.")
        print(f"phase: {hub.session_state(sid).phase.value}")
        await auction.close("deal")
        await hc.shutdown()


if __name__ == "__main__":
    trio.run(main)
