"""``troupe demo``: a small scripted network on an embedded SQLite store.

A person consults a researcher agent, then three agents hold a round-table discussion until
one stays silent. The hub is then closed and reopened on the same file to show that
everything it accepted is still there, in order.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

from . import (
    EV_SESSION_CLOSED,
    EV_TEXT,
    Envelope,
    HubClient,
    LocalLink,
    Passport,
    Resume,
    Turn,
    open_hub,
)

FACTS = {
    "actor": "An actor is a task that owns its state and a mailbox; nothing else touches it.",
}

LINES = {
    "writer": ["Draft: troupe runs each session as its own supervised actor.", "Final wording?"],
    "critic": ["Say what happens when one crashes.", "Good. Ship it."],
    "researcher": ["It restarts from its write-ahead log and loses nothing accepted."],
}


class Scripted:
    """Says its lines in order when it has the floor, then stays silent (and says so)."""

    def __init__(self, name: str, done: trio.Event) -> None:
        self.lines = list(LINES[name])
        self.done = done

    async def respond(self, turn: Turn) -> str | None:
        if not self.lines:
            self.done.set()
            return None
        return self.lines.pop(0)


class Researcher(Scripted):
    """Answers consulting questions from a small table of facts; scripted in discussions."""

    async def respond(self, turn: Turn) -> str | None:
        if turn.session.manifest_type == "consulting":
            topic = next((k for k in FACTS if k in turn.text.lower()), None)
            return FACTS[topic] if topic else "I do not know that one."
        return await super().respond(turn)


def show(names: dict[str, str], kind: str, envelope: Envelope) -> None:
    print(f"  [{kind}] {names.get(envelope.sender_id, envelope.sender_id)}: {envelope.text}")


async def run(db: Path) -> dict[str, int]:
    """Run the scripted network on the store at ``db``; return what the hub held."""
    async with open_hub(db) as hub, HubClient(LocalLink(hub)) as hc:
        quiet = trio.Event()
        researcher = await hc.register(
            Researcher("researcher", quiet),
            Passport(name="researcher"),
            Resume(claimed_capabilities=["facts"]),
        )
        writer = await hc.register(Scripted("writer", quiet), Passport(name="writer"))
        await hc.register(Scripted("critic", quiet), Passport(name="critic"))
        you = await hc.register_human(Passport(name="you", kind="human"))
        names = {p.agent_id or "": p.name for p in await hc.list_agents()}

        print("1. you consult the researcher")
        ask = await you.open(type="consulting", target="researcher")
        question = "What is an actor?"
        print(f"  [consulting] you: {question}")
        await you.send(ask.session_id, question)
        answer = await you.wait_for_channel_event(
            channel_id=ask.session_id,
            predicate=lambda e: e.event_type == EV_TEXT and e.sender_id == researcher.agent_id,
            timeout=10,
        )
        show(names, "consulting", answer)
        closed = await you.wait_for_channel_event(
            channel_id=ask.session_id,
            predicate=lambda e: e.event_type == EV_SESSION_CLOSED,
            timeout=10,
        )
        print(f"  (session closed: {closed.event_data['reason']})")

        print("2. writer, critic and researcher discuss, round robin, until one is silent")
        table = await writer.open(type="discussion", target=["critic", "researcher"])
        opening = "Let us describe troupe in one sentence."
        print(f"  [discussion] writer: {opening}")
        await table.send(opening)
        with trio.fail_after(10):
            await quiet.wait()
        lines = [e for e in await hc.read_wal(table.session_id) if e.event_type == EV_TEXT]
        for envelope in lines[1:]:  # the opening was printed already
            show(names, "discussion", envelope)
        await table.close(reason="discussion over")
        print("  (someone stayed silent: discussion closed)")

    # Reopen the same file: what was accepted is still there, in order.
    async with open_hub(db) as hub:
        sessions = await hub.list_sessions(include_terminal=True)
        envelopes = 0
        for md in sessions:
            wal = await hub.read_wal(md.session_id)
            assert [e.seq for e in wal] == list(range(1, len(wal) + 1)), "a gap in the WAL"
            envelopes += len(wal)
        stats = hub.statistics()
        return {
            "agents": stats.agents,
            "sessions": len(sessions),
            "envelopes": envelopes,
            "audit records": len(await hub.read_audit()),
        }


async def main(db: Path | None = None) -> None:
    """Run the demo on a new store at ``db`` (kept), or on a temporary one (deleted after)."""
    if db is not None:
        print(f"troupe demo: a hub on {db} (kept: troupe wal inspect --db {db})")
        show_summary(await run(db))
        return
    with tempfile.TemporaryDirectory(prefix="troupe-demo-") as tmp:
        db = Path(tmp) / "hub.db"
        print(f"troupe demo: a hub on {db} (deleted at the end; --db PATH keeps it)")
        show_summary(await run(db))


def show_summary(summary: dict[str, int]) -> None:
    print("3. reopened the store: every accepted envelope is there, seq 1, 2, 3, ...")
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value}")
