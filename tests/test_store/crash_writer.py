"""Append to a store until killed: ``python -m tests.test_store.crash_writer PATH`` (SQLite)
or ``... crash_writer postgresql://… SCHEMA`` (PostgreSQL).

Four sessions append batches of three envelopes concurrently (so the kill can land inside
a group commit); after each append returns, a line ``session_id last_seq`` is printed.
"""

from __future__ import annotations

import sys

import trio

from troupe.store import PostgresStore, SQLiteStore, Store

from .factories import envs

SESSIONS = ("a", "b", "c", "d")
BATCH = 3


async def append_forever(store: Store, session_id: str) -> None:
    last = 0
    while True:
        await store.append(session_id, envs(session_id, last + 1, last + BATCH))
        last += BATCH
        print(session_id, last, flush=True)


async def main(*argv: str) -> None:
    """``PATH`` for SQLite, ``DSN SCHEMA`` for PostgreSQL."""
    path, *schema = argv
    store: Store = PostgresStore(path, schema=schema[0]) if schema else SQLiteStore(path)
    async with store, trio.open_nursery() as nursery:
        for session_id in SESSIONS:
            nursery.start_soon(append_forever, store, session_id)


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:3])
