"""The smallest troupe program: a hub, an echo agent, and a person who asks it something.

Run it with ``python examples/quickstart.py`` (or ``./dev shell python ...``).
"""

from __future__ import annotations

import trio

from troupe import EV_TEXT, HubClient, LocalLink, Passport, Resume, Turn, open_hub


class Echo:
    async def respond(self, turn: Turn) -> str | None:  # turn.text, .envelope, .session, .history
        return f"echo: {turn.text}"  # str -> an EV_TEXT reply; None -> stay silent


async def main() -> None:
    async with open_hub() as hub:  # a path -> SQLiteStore; None -> MemoryStore; or a Store
        hc = HubClient(LocalLink(hub))
        resume = Resume(claimed_capabilities=["echo"])
        # exist_ok: a rerun on the same store attaches to the identities a failed run left
        await hc.register(Echo(), Passport(name="echo"), resume, exist_ok=True)
        me = await hc.register_human(Passport(name="me", kind="human"), exist_ok=True)
        ch = await me.open(type="consulting", target="echo")
        await me.send(ch.session_id, "hello")
        reply = await me.wait_for_channel_event(
            channel_id=ch.session_id,
            predicate=lambda e: e.event_type == EV_TEXT and e.sender_id != me.agent_id,
            timeout=5,
        )
        print(reply.event_data["text"])
        await hc.shutdown()


if __name__ == "__main__":
    trio.run(main)
