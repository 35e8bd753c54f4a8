"""A hub with its sweepers off (tests tick them), and people who never answer on their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from troupe import EV_EXPECTATION_VIOLATED, HubClient, HumanClient, LocalLink, Passport
from troupe.hub import Hub, open_hub
from troupe.model import Envelope
from troupe.store import MemoryStore, Store


@attrs.define
class Net:
    """A running hub and one client connection to it."""

    hub: Hub
    client: HubClient

    async def people(self, *names: str) -> list[HumanClient]:
        """Register one human per name (they ack invites, and say only what tests send)."""
        return [await self.client.register_human(Passport(name=n)) for n in names]

    async def session(
        self, kind: str, *names: str, kickoff: str | None = None
    ) -> tuple[list[HumanClient], str]:
        """People called ``names``; the first opens a ``kind`` session with the others.

        Args:
            kind: The session type.
            names: The participants, the creator first.
            kickoff: A first text the creator sends, if any.

        Returns:
            The people, and the session id.
        """
        people = await self.people(*names)
        others = [p.agent_id for p in people[1:]]
        sid = (await people[0].open(type=kind, target=others)).session_id
        if kickoff is not None:
            await people[0].send(sid, kickoff)
        return people, sid

    async def notices(self, session_id: str) -> list[Envelope]:
        """The expectation notices in a session's WAL."""
        wal = await self.hub.read_wal(session_id)
        return [e for e in wal if e.event_type == EV_EXPECTATION_VIOLATED]


#: The hub clock of every test hub: trio's (mock) clock from a fixed epoch, so time runs on
#: across a hub restart within one test (the default clock re-anchors at the wall clock).
EPOCH = 1_700_000_000.0


def clock() -> float:
    return EPOCH + trio.current_time()


@asynccontextmanager
async def running(store: Store | None = None, **options: Any) -> AsyncIterator[Net]:
    """A hub on ``store`` (a fresh MemoryStore by default) with both sweepers off."""
    options.setdefault("ttl_sweep_interval", 0)
    options.setdefault("expectation_sweep_interval", 0)
    options.setdefault("clock", clock)
    async with open_hub(store if store is not None else MemoryStore(), **options) as hub:
        client = HubClient(LocalLink(hub))
        yield Net(hub, client)
        await client.close()
