"""One agent process: it connects to a hub over WebSocket and talks with an agent elsewhere.

Run one process per agent (the hub in a third one, see ``server.py`` or ``troupe serve``)::

    python examples/two_processes/agents.py ws://127.0.0.1:8765 bob --key k-bob
    python examples/two_processes/agents.py ws://127.0.0.1:8765 ann --key k-ann

Both register a scripted agent. Ann waits until Bob is registered, opens a conversation
with him and speaks first; each answers the other's line with its next one. When Ann has
nothing left to say she closes the conversation; both processes then exit. The HubClient
is the same as in process: only the link differs (``WsLink`` instead of ``LocalLink``).
"""

from __future__ import annotations

import argparse
import logging

import trio

from troupe import (
    EV_SESSION_CLOSED,
    AgentClient,
    Envelope,
    HubClient,
    NotFoundError,
    Passport,
    Resume,
    Turn,
)
from troupe.transport import WsLink

SCRIPTS = {
    "ann": ["Hello Bob, are you in another process?", "So am I. Shall we stop here?"],
    "bob": ["Hello Ann. I am, over a WebSocket.", "Yes, goodbye."],
}
OPENER, PARTNER = "ann", "bob"


class Scripted:
    """Answers each turn with its next line; ``done`` is set when it hears something and
    has nothing left to answer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines = list(SCRIPTS[name][1:] if name == OPENER else SCRIPTS[name])
        self.done = trio.Event()

    async def respond(self, turn: Turn) -> str | None:
        print(f"{self.name} hears: {turn.text}", flush=True)
        if not self.lines:
            self.done.set()
            return None  # nothing to add: a silent turn
        line = self.lines.pop(0)
        print(f"{self.name}: {line}", flush=True)
        return line


async def wait_for(hc: HubClient, name: str) -> None:
    """Wait until ``name`` is registered (the other process may start later)."""
    while True:
        try:
            await hc.get_agent(name)
            return
        except NotFoundError:
            await trio.sleep(0.05)


async def main(url: str, name: str, key: str | None) -> None:
    agent = Scripted(name)
    closed = trio.Event()

    async def watch(envelope: Envelope) -> None:
        if envelope.event_type == EV_SESSION_CLOSED:
            closed.set()
        await trio.lowlevel.checkpoint()

    link = WsLink(url, auth={name: key} if key is not None else None)
    with trio.fail_after(30):
        async with HubClient(link) as hc:
            me: AgentClient = await hc.register(
                agent, Passport(name=name), Resume(claimed_capabilities=["small talk"])
            )
            me.on_envelope(watch)
            print(f"{name} registered as {me.agent_id}", flush=True)
            if name == OPENER:
                await wait_for(hc, PARTNER)
                chat = await me.open(type="conversation", target=PARTNER)
                print(f"{name}: {SCRIPTS[name][0]}", flush=True)
                await chat.send(SCRIPTS[name][0])
                await agent.done.wait()
                await chat.close(reason="said all we had to say")
                wal = await hc.read_wal(chat.session_id)
                print(f"{len(wal)} envelopes in the session's WAL", flush=True)
            await closed.wait()
            print(f"{name}: the conversation is closed; leaving", flush=True)
            await hc.shutdown()  # unregister: the example can run again on the same file


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the hub, e.g. ws://127.0.0.1:8765")
    parser.add_argument("name", choices=sorted(SCRIPTS))
    parser.add_argument("--key", default=None, help="this agent's API key, if the hub wants one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    trio.run(main, args.url, args.name, args.key)
