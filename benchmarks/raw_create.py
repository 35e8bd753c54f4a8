"""The floor under creating a session: a create's hops and rows in bare trio, sqlite3 and orjson.

``bench_sim``'s wake part creates S two-party sessions on a hub (handshake included) and
passivates them in waves. This is the same work with nothing of troupe, as a raw skeleton
written for speed would do it:

- 64 creator tasks; each create is a request/reply to one hub task (ids, three timestamps,
  the metadata and an audit record), then a task started for the session, a request/reply
  to it (the invite), and a wait until the session is ACTIVE;
- the session task appends the invite with the session's row, in a group commit (one
  writer task, the same ``BEGIN IMMEDIATE`` / ``COMMIT`` around the batch, the same seq
  check before each append), then hands it to the invitee's end, which acks it from a
  task of its own (a request/reply to the session task);
- the ack and the OPENED notice are one append, with their dedup row and the session's row
  again; two more audit records; an audit task writes them in batches through the writer;
- after each wave, every session task is told to stop and exits (passivation).

The same store file (a troupe ``SQLiteStore`` creates it, so the same tables and indexes),
the same rows and JSON (orjson, a CRC-32 per envelope), the same pragmas (WAL journal,
``synchronous=NORMAL``), on trio's thread. Nothing is checked that troupe checks (rules,
types, lifecycle), nothing is supervised, and nothing is recovered: the floor, not a hub.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import trio

from troupe.store import SQLiteStore

#: Concurrent creators, as in the wake part.
CREATORS = 64


def _new_id() -> str:
    return ((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10)).hex()


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


class _Reply:
    """A one-shot answer a task waits for."""

    __slots__ = ("done", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value = value
        self.done.set()

    async def get(self) -> Any:
        await self.done.wait()
        return self.value


class _Writer:
    """One writer task: every write submitted meanwhile shares one transaction.

    It gathers writes as troupe's writer does: woken by the first, it lets the other tasks
    run until 3 steps in a row (8 when the last batch had more than one write) bring no new
    write, at most 64 steps; without that, 64 creators commit a few writes each time.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pending: list[tuple[Any, trio.Event]] = []
        self.wakeup = trio.Event()
        self.batches = 0

    async def submit(self, write: Any) -> None:
        done = trio.Event()
        self.pending.append((write, done))
        self.wakeup.set()
        await done.wait()

    async def run(self) -> None:
        last_batch = 0
        while True:
            if not self.pending:
                self.wakeup = trio.Event()
                await self.wakeup.wait()
                patience, idle = (8 if last_batch > 1 else 3), 0
                for _ in range(64):
                    before = len(self.pending)
                    await trio.lowlevel.checkpoint()
                    idle = 0 if len(self.pending) > before else idle + 1
                    if idle == patience:
                        break
                continue
            batch, self.pending = self.pending, []
            last_batch = len(batch)
            self.batches += 1
            self.conn.execute("BEGIN IMMEDIATE")
            for write, _ in batch:
                write(self.conn)
            self.conn.execute("COMMIT")
            for _, done in batch:
                done.set()


def _append(
    session_id: str, envelopes: list[dict[str, Any]], metadata: dict[str, Any], dedup: Any
) -> Any:
    rows = []
    for env in envelopes:
        data = orjson.dumps(env)
        rows.append(
            (session_id, env["seq"], env["envelope_id"], None, data.decode(), zlib.crc32(data))
        )
    meta = (session_id, orjson.dumps(metadata).decode())

    def write(conn: sqlite3.Connection) -> None:
        (last,) = conn.execute(
            "SELECT coalesce(max(seq), 0) FROM wal WHERE session_id = ?", (session_id,)
        ).fetchone()
        if last + 1 != envelopes[0]["seq"]:
            raise RuntimeError(f"session {session_id}: seq {envelopes[0]['seq']} after {last}")
        conn.executemany(
            "INSERT INTO wal (session_id, seq, envelope_id, idempotency_key, envelope, crc) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        if dedup is not None:
            conn.execute("INSERT OR IGNORE INTO dedup VALUES (?, ?, ?, ?)", dedup)
        conn.execute(
            "INSERT INTO sessions (session_id, metadata) VALUES (?, ?) "
            "ON CONFLICT (session_id) DO UPDATE SET metadata = excluded.metadata",
            meta,
        )

    return write


class _Floor:
    def __init__(self, writer: _Writer, nursery: trio.Nursery) -> None:
        self.writer = writer
        self.nursery = nursery
        self.audit: list[dict[str, Any]] = []
        self.audit_wakeup = trio.Event()
        self.recorded = self.written = 0
        self.flushed = trio.Event()
        self.directory: dict[str, dict[str, Any]] = {}
        self.live: dict[str, trio.MemorySendChannel[Any]] = {}
        self.all_stopped = trio.Event()
        self.hub_send, self.hub_receive = trio.open_memory_channel[Any](1024)

    def record(self, kind: str, **fields: Any) -> None:
        self.audit.append({"at": _stamp(time.time()), "kind": kind, **fields})
        self.recorded += 1
        self.audit_wakeup.set()

    async def audit_task(self) -> None:
        while True:
            if not self.audit:
                self.audit_wakeup = trio.Event()
                await self.audit_wakeup.wait()
            records, self.audit = self.audit, []
            rows = [(orjson.dumps(r).decode(),) for r in records]
            await self.writer.submit(
                lambda conn, rows=rows: conn.executemany(
                    "INSERT INTO audit (record) VALUES (?)", rows
                )
            )
            self.written += len(rows)
            if self.written == self.recorded:
                self.flushed.set()

    async def hub_task(self) -> None:
        async for creator, invitee, reply in self.hub_receive:
            now = time.time()
            stamp = _stamp(now)
            md = {
                "session_id": _new_id(),
                "manifest_type": "conversation",
                "manifest_version": 1,
                "creator_id": creator,
                "participants": [
                    {"agent_id": creator, "role": "initiator", "order": 0, "joined_at": stamp},
                    {"agent_id": invitee, "role": "respondent", "order": 1, "joined_at": stamp},
                ],
                "state": "pending",
                "created_at": stamp,
                "expires_at": _stamp(now + 7200),
                "pending_acks": [invitee],
                "expectations": [{"name": "max_silence", "params": {"seconds": 3600}}],
                "handshake_deadline": _stamp(now + 30),
            }
            self.directory[md["session_id"]] = md
            if len(self.directory) % 250 == 0:
                # The directory's long-lived bulk out of the collector's scans, as a hub keeps
                # its own (open_hub's gc_freeze: every 250 sessions, young ones collected).
                gc.collect(1)
                gc.freeze()
            self.record(
                "session_created",
                session_id=md["session_id"],
                manifest_type="conversation",
                manifest_version=1,
                creator_id=creator,
                participants=[creator, invitee],
            )
            reply.set(md)

    def envelope(
        self,
        md: dict[str, Any],
        sender: str,
        kind: str,
        seq: int,
        *,
        data: dict[str, Any] | None = None,
        audience: list[str] | None = None,
        causation_id: str | None = None,
    ) -> Any:
        """An envelope's JSON data, its fields in the order troupe writes them."""
        env: dict[str, Any] = {"session_id": md["session_id"], "sender_id": sender}
        env["event_type"] = kind
        if data is not None:
            env["event_data"] = data
        if audience is not None:
            env["audience"] = audience
        env["envelope_id"] = _new_id()
        env["seq"] = seq
        env["created_at"] = _stamp(time.time())
        if causation_id is not None:
            env["causation_id"] = causation_id
        return env

    async def session_task(
        self, md: dict[str, Any], receive: trio.MemoryReceiveChannel[Any], active: trio.Event
    ) -> None:
        sid = md["session_id"]
        async for msg in receive:
            if msg[0] == "stop":
                break
            if msg[0] == "invite":
                invitee = md["pending_acks"][0]
                invite = self.envelope(
                    md,
                    md["creator_id"],
                    "troupe.session.invite",
                    1,
                    audience=[invitee],
                    data={
                        "session_id": sid,
                        "manifest_type": "conversation",
                        "manifest_version": 1,
                        "creator_id": md["creator_id"],
                        "knobs": {},
                        "labels": {},
                    },
                )
                await self.writer.submit(_append(sid, [invite], md, None))
                self.nursery.start_soon(self.ack, sid, invitee, invite["envelope_id"])
                msg[1].set(invite["envelope_id"])
            else:
                _, sender, causation, reply = msg
                ack = self.envelope(
                    md, sender, "troupe.session.invite.ack", 2, causation_id=causation
                )
                opened = self.envelope(
                    md,
                    md["creator_id"],
                    "troupe.session.opened",
                    3,
                    data={"session_id": sid},
                    audience=[p["agent_id"] for p in md["participants"]],
                )
                md = {**md, "state": "active"}
                del md["pending_acks"]
                key = f"c:{sender}|{causation}|troupe.session.invite.ack"
                await self.writer.submit(
                    _append(sid, [ack, opened], md, (sid, key, ack["envelope_id"], 2))
                )
                self.record("invite_acked", session_id=sid, agent_id=sender)
                self.directory[sid] = md
                self.record("session_opened", session_id=sid)
                active.set()
                reply.set(ack["envelope_id"])
        del self.live[sid]
        if not self.live:
            self.all_stopped.set()

    async def ack(self, sid: str, sender: str, causation: str) -> None:
        reply = _Reply()
        await self.live[sid].send(("ack", sender, causation, reply))
        await reply.get()

    async def create(self, creator: str, invitee: str) -> str:
        reply = _Reply()
        await self.hub_send.send((creator, invitee, reply))
        md = await reply.get()
        send, receive = trio.open_memory_channel[Any](64)
        active = trio.Event()
        self.live[md["session_id"]] = send
        self.nursery.start_soon(self.session_task, md, receive, active)
        invited = _Reply()
        await send.send(("invite", invited))
        await invited.get()
        await active.wait()
        sid: str = md["session_id"]
        return sid


async def raw_create(n_sessions: int, wave: int, db: Path) -> dict[str, Any]:
    """Create and passivate ``n_sessions`` sessions as the wake part does, in a new store
    file at ``db``; wall and CPU µs per session, and how many commits it took."""
    async with SQLiteStore(db, synchronous="NORMAL", threaded=False):
        pass  # troupe lays the file out: the same tables and indexes
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA journal_mode = WAL")
    people = [_new_id() for _ in range(1000)]
    async with trio.open_nursery() as services, trio.open_nursery() as sessions:
        writer = _Writer(conn)
        floor = _Floor(writer, sessions)
        services.start_soon(writer.run)
        services.start_soon(floor.audit_task)
        services.start_soon(floor.hub_task)
        started = time.perf_counter()
        cpu_started = time.process_time()

        async def creator(k: int, first: int, last: int) -> None:
            for i in range(first + k, last, CREATORS):
                a, b = people[i % 1000], people[(i * 7 + 1 + i // 1000) % 1000]
                if a == b:
                    b = people[(i + 1) % 1000]
                await floor.create(a, b)

        for first in range(0, n_sessions, wave):
            async with trio.open_nursery() as nursery:
                for k in range(CREATORS):
                    nursery.start_soon(creator, k, first, min(n_sessions, first + wave))
            floor.all_stopped = trio.Event()
            for send in list(floor.live.values()):
                send.send_nowait(("stop",))
            await floor.all_stopped.wait()
        if floor.written < floor.recorded:
            floor.flushed = trio.Event()
            await floor.flushed.wait()  # every audit record written, as the hub's are
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        services.cancel_scope.cancel()
    conn.close()
    return {
        "create_us": elapsed / n_sessions * 1e6,
        "create_cpu_us": cpu / n_sessions * 1e6,
        "commits": writer.batches,
    }
