"""Append to a store until killed: ``python -m tests.test_store.crash_writer PATH`` (SQLite)
or ``... crash_writer postgresql://… SCHEMA`` (PostgreSQL).

Four sessions append batches of three envelopes concurrently (so the kill can land inside
a group commit); after each append returns, a line ``session_id last_seq`` is printed.
:func:`kill_mid_write` and :func:`check_nothing_returned_was_lost` are the test's side.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trio

from troupe.store import PostgresStore, SQLiteStore, Store

from .factories import envs

REPO = Path(__file__).resolve().parents[2]

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


async def kill_mid_write(*argv: str) -> tuple[dict[str, int], int]:
    """Run this writer on ``argv`` until it has printed 120 appends, then ``kill -9`` it.

    Returns:
      The last seq each session's writer saw returned, and the killed process's pid.
    """
    printed: dict[str, int] = dict.fromkeys(SESSIONS, 0)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.test_store.crash_writer", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    buffer = b""
    while sum(printed.values()) < 120:
        chunk = await process.stdout.receive_some()
        assert chunk, "the writer exited before it was killed"
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            session_id, last = line.decode().split()
            printed[session_id] = int(last)
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL
    return printed, process.pid


async def check_nothing_returned_was_lost(store: Store, printed: dict[str, int]) -> None:
    """Every append that returned (``printed``) is in the store, whole and without gaps."""
    for session_id in SESSIONS:
        wal = await store.read(session_id)
        seqs = [e.seq for e in wal]
        assert seqs == list(range(1, len(seqs) + 1)), "the WAL has a gap"
        assert len(seqs) >= printed[session_id], "an append that returned was lost"
        assert len(seqs) % BATCH == 0, "half an append is visible"
        assert wal == envs(session_id, 1, len(seqs))


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:3])
