"""Wire benchmark: envelopes/s over loopback WebSocket against the same work through LocalLink.

``python -m benchmarks wire``. One process, one hub on a MemoryStore (this measures the
transport, not fsync), two HubClients; each scenario runs once through ``LocalLink`` and
once through ``WsLink`` to the hub served on 127.0.0.1, alternately, and prints medians of
``REPEATS`` runs and the ratio WebSocket / LocalLink:

- **stream**: 16 posters on one connection, each in its own conversation with one sink on
  another connection, post 125 texts each, one after the other; the time runs until the
  sink's client has received (and acked) all 2000. Envelopes/s.
- **echo**: a person asks, an echo agent (the default turn handler) answers, 200 times in
  a row, one conversation. Round trips/s (each is two envelopes plus the turn handler's
  control calls, which are RPCs over a WebSocket).

Everything runs on one core here: over WebSocket the hub and both clients encode, frame
and decode JSON on the same trio thread that a real deployment would spread over processes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import trio

from troupe import EV_TEXT, Envelope, Hub, HubClient, LocalLink, Passport, Rule, Turn, open_hub
from troupe.model import InboxBlock, LimitsBlock
from troupe.transport import WsLink, serve_ws

REPEATS = 5
POSTERS = 16
POSTS = 125  # per poster
ROUND_TRIPS = 200

Transport = Literal["local", "ws"]


class Echo:
    async def respond(self, turn: Turn) -> str | None:
        return f"echo: {turn.text}"


async def with_clients(
    transport: Transport, scenario: Callable[[HubClient, HubClient], Awaitable[float]]
) -> float:
    """Run ``scenario`` with two clients of a fresh hub over ``transport``; its rate."""
    async with open_hub() as hub, trio.open_nursery() as nursery:

        def link() -> LocalLink | WsLink:
            if transport == "local":
                return LocalLink(hub)
            return WsLink(url, ping_interval=60.0)

        url = ""
        if transport == "ws":
            server = await nursery.start(_serve, hub)
            url = f"ws://127.0.0.1:{server.port}"
        async with HubClient(link()) as one, HubClient(link()) as two:
            rate = await scenario(one, two)
        nursery.cancel_scope.cancel()
        return rate


async def _serve(hub: Hub, *, task_status: trio.TaskStatus[object]) -> None:
    await serve_ws(hub, "127.0.0.1", 0, ping_interval=60.0, task_status=task_status)


async def stream(posting: HubClient, receiving: HubClient) -> float:
    """Envelopes/s from POSTERS posters to one sink, delivered and acked."""
    # No inbox cap: the posters outrun the sink's acks by more than the default 1000.
    unbounded = Rule(limits=LimitsBlock(inbox=InboxBlock(max_pending=0)))
    sink = await receiving.register_human(Passport(name="sink"), rule=unbounded)
    total = POSTERS * POSTS
    received = 0
    all_in = trio.Event()

    async def count(envelope: Envelope) -> None:
        nonlocal received
        if envelope.event_type == EV_TEXT:
            received += 1
            if received == total:
                all_in.set()
        await trio.lowlevel.checkpoint()

    sink.on_envelope(count)
    posters: list[tuple[str, str]] = []  # (agent id, session id)
    for i in range(POSTERS):
        poster = await posting.register_human(Passport(name=f"poster-{i}"))
        md = await posting.create_session(
            creator_id=poster.agent_id,
            manifest_type="conversation",
            participants=[sink.agent_id],
            knobs={"max_turns": None},  # a benchmark posts past the default cap
        )
        posters.append((poster.agent_id, md.session_id))

    async def post_all(agent_id: str, session_id: str) -> None:
        for n in range(POSTS):
            text = Envelope(
                session_id=session_id,
                sender_id=agent_id,
                event_type=EV_TEXT,
                event_data={"text": f"message {n}"},
            )
            await posting.post_envelope(text)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for agent_id, session_id in posters:
            nursery.start_soon(post_all, agent_id, session_id)
    await all_in.wait()
    return total / (time.perf_counter() - start)


def text_is(text: str) -> Callable[[Envelope], bool]:
    return lambda envelope: envelope.text == text


async def echo(asking: HubClient, answering: HubClient) -> float:
    """Round trips/s between a person and an echo agent."""
    await answering.register(Echo(), Passport(name="echo"))
    me = await asking.register_human(Passport(name="me"))
    chat = await me.open(type="conversation", target="echo", knobs={"max_turns": None})
    start = time.perf_counter()
    for n in range(ROUND_TRIPS):
        await me.send(chat.session_id, f"ping {n}")
        await me.wait_for_channel_event(
            channel_id=chat.session_id, predicate=text_is(f"echo: ping {n}"), timeout=10
        )
    return ROUND_TRIPS / (time.perf_counter() - start)


def measure(
    scenario: Callable[[HubClient, HubClient], Awaitable[float]],
) -> dict[Transport, float]:
    """Median rate per transport; the runs alternate so a slow spell hits both alike."""
    runs: dict[Transport, list[float]] = {"local": [], "ws": []}
    for _ in range(REPEATS):
        for transport in ("local", "ws"):
            runs[transport].append(trio.run(with_clients, transport, scenario))
    return {transport: statistics.median(rates) for transport, rates in runs.items()}


def main() -> None:
    print(f"medians of {REPEATS} runs; one process, MemoryStore, loopback")
    rows = [
        (f"stream: {POSTERS} posters -> 1 sink, {POSTERS * POSTS} texts", "envelopes/s", stream),
        (f"echo: {ROUND_TRIPS} ask/answer round trips", "round trips/s", echo),
    ]
    for title, unit, scenario in rows:
        rates = measure(scenario)
        print(
            f"{title:<44} LocalLink {rates['local']:>8,.0f}  WebSocket {rates['ws']:>8,.0f} "
            f"{unit}  ratio ws/local {rates['ws'] / rates['local']:.2f}"
        )


if __name__ == "__main__":
    main()
