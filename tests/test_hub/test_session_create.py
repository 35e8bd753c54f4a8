"""Creating a session reads nothing back from the store (issue 15, item 6)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from trio.testing import MockClock

from troupe.model import SessionMetadata
from troupe.store import MemoryStore, Snapshot

from ..harness import open_hub_pair


class ReadCounting(MemoryStore):
    """A MemoryStore that counts, per session, the reads a session actor's recovery makes."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    async def get_session(self, session_id: str) -> SessionMetadata | None:
        self.reads[session_id] += 1
        return await super().get_session(session_id)

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        self.reads[session_id] += 1
        return await super().load_snapshot(session_id)

    async def read(self, session_id: str, *args: Any, **kwargs: Any) -> Any:
        self.reads[session_id] += 1
        return await super().read(session_id, *args, **kwargs)

    async def recent_dedup(self, session_id: str, limit: int) -> list[tuple[str, str, int]]:
        self.reads[session_id] += 1
        return await super().recent_dedup(session_id, limit)


async def test_a_new_session_starts_without_reading_the_store(autojump_clock: MockClock) -> None:
    store = ReadCounting()
    async with open_hub_pair(store) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        assert store.reads[md.session_id] == 0
        await h.say(md, alice, "one")
        await h.settle()
    async with open_hub_pair(store) as h:  # a restart recovers it from the store, as ever
        alice, bob = await h.agent("alice"), await h.agent("bob")
        assert store.reads[md.session_id] > 0
        await h.say(md, bob, "two")
        wal = await store.read(md.session_id)
        assert [e.event_data.get("text") for e in wal[-2:]] == ["one", "two"]
        assert [e.seq for e in wal] == list(range(1, len(wal) + 1))
