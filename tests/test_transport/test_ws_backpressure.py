"""Backpressure over the wire, with the poster and its recipient on one HubClient (one
connection): posts waiting for room leave that connection read, so the recipient's acks
reach the hub and the posts go in (see ``tests/test_hub/test_waiting_posts.py``)."""

from __future__ import annotations

import trio

from troupe import EV_TEXT, HubClient, InboxBlock, LimitsBlock, Passport, Rule, Turn
from troupe.hub._serve import MAX_IN_FLIGHT

from ._wire import serving, wait_until


class Quiet:
    """Answers nothing (each delivery is acked as its turn ends), once its gate opened."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.heard: list[str] = []

    async def respond(self, turn: Turn) -> None:
        await self.gate.wait()
        self.heard.append(turn.text)


async def test_one_client_posting_to_its_own_agent_with_a_full_inbox_is_not_stuck() -> None:
    count = 2 * MAX_IN_FLIGHT
    # Stuck posts are refused after block_timeout; the cap fails the test well before a
    # second round of them.
    rule = Rule(limits=LimitsBlock(inbox=InboxBlock(max_pending=2, block_timeout=10.0)))
    with trio.fail_after(15):
        async with serving() as served, HubClient(served.link()) as hc:
            quiet = Quiet()
            bob = await hc.register(quiet, Passport(name="bob"), rule=rule)
            al = await hc.register_human(Passport(name="al"))
            ch = await al.open(type="conversation", target="bob", knobs={"max_turns": None})
            core = served.hub.core
            for n in range(2):
                await al.send(ch.session_id, f"first {n}")
            await wait_until(lambda: core.ledger.pending(bob.agent_id) == 2)  # bob's is full
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for n in range(count):
                    nursery.start_soon(al.send, ch.session_id, f"m{n}")
                # bob acks nothing until as many posts wait for room as a connection serves
                # requests at once: his receipts come after them.
                await wait_until(lambda: core.room.waiting() >= MAX_IN_FLIGHT)
                quiet.gate.set()
            # None of them waited out its block_timeout (they would have been refused).
            assert trio.current_time() - start < 10.0
            wal = await hc.read_wal(ch.session_id)
            posted = sorted(e.text or "" for e in wal if e.event_type == EV_TEXT)
            assert posted == sorted(
                [f"first {n}" for n in range(2)] + [f"m{n}" for n in range(count)]
            )
            await wait_until(lambda: len(quiet.heard) == count + 2)
            assert sorted(quiet.heard) == posted
