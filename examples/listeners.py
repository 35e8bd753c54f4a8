"""Watching a hub: a listener object with ``on_*`` hooks, and the event stream it is built on.

``Log`` is handed to ``open_hub(listeners=...)``: it hears of every registration and of each
session's life (a listener that raised would be logged and skipped, never crash the hub).
``watch`` reads the raw stream, keeping only accepted envelopes. A person consults an echo
agent; an auction then picks its winner with a registered arbiter, with nobody selecting by
hand. Run: ``python examples/listeners.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from troupe import EV_TEXT, HubClient, HubListener, LocalLink, Passport, Turn, open_hub
from troupe.hub import EnvelopeAccepted, EventStream, Missed
from troupe.model import Envelope


class Echo:
    async def respond(self, turn: Turn) -> str:
        return f"echo: {turn.text}"


class Painter:
    def __init__(self, price: int) -> None:
        self.price = price

    async def respond(self, turn: Turn) -> str:
        return "Thanks! Monday, then." if turn.text.startswith("Selected") else f"{self.price} EUR"


class Log(HubListener):
    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    async def on_agent_event(self, agent_id: str, kind: str, payload: dict[str, Any]) -> None:
        self.names[agent_id] = payload["name"]
        print(f"[listener] {payload['name']} {kind}")

    async def on_session_event(self, session_id: str, kind: str, payload: dict[str, Any]) -> None:
        if kind == "created":
            who = ", ".join(self.names.get(p, p) for p in payload["participants"])
            print(f"[listener] {payload['manifest_type']} session created for {who}")
        elif kind in ("closed", "expired"):
            print(f"[listener] session {kind}: {payload['reason']}")


async def watch(events: EventStream, texts: list[str]) -> None:
    async for event in events:
        if isinstance(event, EnvelopeAccepted) and event.event_type == EV_TEXT:
            texts.append(event.envelope.text or "")
        elif isinstance(event, Missed):
            print(f"[stream] too slow: missed {event.count} events")


def cheapest(bids: Sequence[Envelope]) -> str | None:
    """The arbiter: the lowest price wins."""
    return min(bids, key=lambda bid: int((bid.text or "0").split()[0])).sender_id


async def main() -> None:
    log = Log()
    texts: list[str] = []
    async with trio.open_nursery() as nursery:
        async with open_hub(listeners=[log]) as hub:
            nursery.start_soon(watch, hub.events(EnvelopeAccepted), texts)
            hub.register_auction_arbiter("cheapest", cheapest)
            hc = HubClient(LocalLink(hub))
            await hc.register(Echo(), Passport(name="echo"))
            me = await hc.register_human(Passport(name="me", kind="human"))
            ch = await me.open(type="consulting", target="echo")
            await me.send(ch.session_id, "hello")
            reply = await me.wait_for_channel_event(
                channel_id=ch.session_id, predicate=lambda e: e.event_type == EV_TEXT, timeout=5
            )
            print(f"reply: {reply.text}")

            for name, price in (("ann", 900), ("bo", 700)):
                await hc.register(Painter(price), Passport(name=name))
            auction = await me.open(
                type="auction", target=["ann", "bo"], knobs={"arbiter": "cheapest"}
            )
            await auction.send("Who paints my fence?")
            thanks = await me.wait_for_channel_event(  # the winner answers the select
                channel_id=auction.session_id,
                predicate=lambda e: (e.text or "").startswith("Thanks"),
                timeout=5,
            )
            print(f"the arbiter picked: {hc.name_for(thanks.sender_id)}")
            await auction.close("deal")
            await hc.shutdown()
        # The hub closed: the stream ended, and the watcher with it.
    print(f"[stream] texts accepted: {texts}")


if __name__ == "__main__":
    trio.run(main)
