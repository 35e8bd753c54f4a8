"""The raw skeleton of creating sessions: a create's hops and rows in bare trio, sqlite3, orjson.

``bench_sim``'s wake part creates S two-party sessions on a hub (handshake included) and
passivates them in waves. This is the same work with nothing of troupe, written as the
other raw skeletons of these benchmarks are (``bench_hub.raw_path_run``):

- 64 creator tasks; each create is a request/reply to one hub task (an id, three
  timestamps, the metadata and an audit record), then a task started for the session, a
  request/reply to it (the invite), and a wait until the session is ACTIVE;
- the session task appends the invite with the session's row in a group commit (one
  writer task, ``BEGIN IMMEDIATE`` / ``COMMIT`` around each batch, the same seq check before
  each append, writes gathered as troupe's writer gathers them), then hands it to the
  invitee's end, which acks it from a task of its own (a request/reply to the session);
- the ack and the OPENED notice are one append, with their dedup row and the session's row
  again; the notice is handed to both participants' ends; two more audit records; an audit
  task writes them in batches through the writer;
- the long-lived bulk (the directory of sessions) is frozen every 250 sessions, as a hub
  freezes its own (``open_hub(gc_freeze=True)``);
- after each wave, every session task is told to stop and exits (passivation).

The store file is laid out by a troupe ``SQLiteStore`` (the same tables and indexes), with
the same rows and JSON (orjson, a CRC-32 per envelope), the same pragmas (WAL journal,
``synchronous=NORMAL``), on trio's thread. Ids, timestamps, the writer's gathering and the
freezing interval are troupe's own functions and constants, so that the two stay alike.
Nothing is checked that troupe checks (types, rules, the lifecycle, rates), nothing is
supervised or recovered, and nothing is delivered beyond the handshake: a floor, not a hub.
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, assert_never

import attrs
import orjson
import trio

from troupe.hub._core import new_uuid
from troupe.hub._gc import FREEZE_EVERY
from troupe.model._convert import iso_stamp
from troupe.store import SQLiteStore
from troupe.store._writer import GATHER_BUSY_STEPS, GATHER_MAX_STEPS, GATHER_STEPS

#: Concurrent creators, as in the wake part.
CREATORS = 64

JSON = dict[str, Any]
Write = Callable[[sqlite3.Connection], object]


def pair(people: Sequence[str], i: int) -> tuple[str, str]:
    """The creator of the ``i``-th session and the one it invites (both benchmarks' pairs)."""
    n = len(people)
    a, b = people[i % n], people[(i * 7 + 1 + i // n) % n]
    return (a, people[(i + 1) % n]) if a == b else (a, b)


def _stamp(ts: float) -> str:
    """``ts`` as a hub stamps it."""
    return iso_stamp(ts)[0]


def _envelope(
    session_id: str,
    sender: str,
    kind: str,
    seq: int,
    *,
    data: JSON | None = None,
    audience: list[str] | None = None,
    causation_id: str | None = None,
) -> JSON:
    """An envelope's JSON data, its fields in the order a hub writes them."""
    env: JSON = {"session_id": session_id, "sender_id": sender, "event_type": kind}
    if data is not None:
        env["event_data"] = data
    if audience is not None:
        env["audience"] = audience
    env["envelope_id"] = new_uuid()
    env["seq"] = seq
    env["created_at"] = _stamp(time.time())
    if causation_id is not None:
        env["causation_id"] = causation_id
    return env


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


@attrs.frozen
class _Invite:
    """To a session task: append and deliver the invite (the creator waits for ``reply``)."""

    reply: _Reply


@attrs.frozen
class _Ack:
    """To a session task: the invitee's ack of the invite ``causation_id``."""

    sender: str
    causation_id: str
    reply: _Reply


@attrs.frozen
class _Stop:
    """To a session task: stop (passivate)."""


_SessionMsg = _Invite | _Ack | _Stop


class _Writer:
    """One writer task: every write submitted meanwhile shares one transaction.

    It gathers writes by troupe's writer's policy, with its constants: woken by the first,
    it lets the other tasks run until ``GATHER_STEPS`` steps in a row (``GATHER_BUSY_STEPS``
    when its last batch had more than one write) bring no new write, at most
    ``GATHER_MAX_STEPS`` steps.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pending: list[tuple[Write, trio.Event]] = []
        self.wakeup = trio.Event()
        self.commits = 0
        self.writes = 0

    async def submit(self, write: Write) -> None:
        """Run ``write`` in the next batch; return once that batch has committed."""
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
                patience = GATHER_BUSY_STEPS if last_batch > 1 else GATHER_STEPS
                idle = 0
                for _ in range(GATHER_MAX_STEPS):
                    before = len(self.pending)
                    await trio.lowlevel.checkpoint()
                    idle = 0 if len(self.pending) > before else idle + 1
                    if idle == patience:
                        break
                continue
            batch, self.pending = self.pending, []
            self.conn.execute("BEGIN IMMEDIATE")
            for write, _ in batch:
                write(self.conn)
            self.conn.execute("COMMIT")
            last_batch = len(batch)
            self.commits += 1
            self.writes += last_batch
            for _, done in batch:
                done.set()


def _append(
    session_id: str, envelopes: list[JSON], metadata: JSON, dedup: tuple[Any, ...] | None
) -> Write:
    """An append of ``envelopes`` with the session's row (and a dedup row), as a hub's."""
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


def _audit_rows(records: list[JSON]) -> Write:
    """A write of audit records, one row each, as a hub's."""
    rows = [(orjson.dumps(record).decode(),) for record in records]
    return lambda conn: conn.executemany("INSERT INTO audit (record) VALUES (?)", rows)


class _RawHub:
    """The hub task, the session tasks, the invitee's end and the audit task."""

    def __init__(self, writer: _Writer, nursery: trio.Nursery) -> None:
        self.writer = writer
        self.nursery = nursery
        self.audit: list[JSON] = []
        self.audit_wakeup = trio.Event()
        self.recorded = self.written = 0
        self.flushed = trio.Event()
        self.directory: dict[str, JSON] = {}
        self.live: dict[str, trio.MemorySendChannel[_SessionMsg]] = {}
        self.all_stopped = trio.Event()
        self.hub_send, self.hub_receive = trio.open_memory_channel[tuple[str, str, _Reply]](1024)

    def record(self, kind: str, **fields: Any) -> None:
        """Queue an audit record for the audit task."""
        self.audit.append({"at": _stamp(time.time()), "kind": kind, **fields})
        self.recorded += 1
        self.audit_wakeup.set()

    async def audit_task(self) -> None:
        """Write the queued audit records, all that are queued in one write."""
        while True:
            if not self.audit:
                self.audit_wakeup = trio.Event()
                await self.audit_wakeup.wait()
            records, self.audit = self.audit, []
            await self.writer.submit(_audit_rows(records))
            self.written += len(records)
            if self.written == self.recorded:
                self.flushed.set()

    async def hub_task(self) -> None:
        """Make each session's metadata, add it to the directory, audit it."""
        async for creator, invitee, reply in self.hub_receive:
            now = time.time()
            stamp = _stamp(now)
            sid = new_uuid()
            md: JSON = {
                "session_id": sid,
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
            self.directory[sid] = md
            if len(self.directory) % FREEZE_EVERY == 0:
                gc.collect(1)
                gc.freeze()
            self.record(
                "session_created",
                session_id=sid,
                manifest_type="conversation",
                manifest_version=1,
                creator_id=creator,
                participants=[creator, invitee],
            )
            reply.set(md)

    async def session_task(
        self,
        md: JSON,
        receive: trio.MemoryReceiveChannel[_SessionMsg],
        active: trio.Event,
    ) -> None:
        """One session: the invite, the ack that opens it, then the stop."""
        sid = md["session_id"]
        async for msg in receive:
            match msg:
                case _Stop():
                    break
                case _Invite(reply):
                    invitee = md["pending_acks"][0]
                    data = {
                        "session_id": sid,
                        "manifest_type": "conversation",
                        "manifest_version": 1,
                        "creator_id": md["creator_id"],
                        "knobs": {},
                        "labels": {},
                    }
                    invite = _envelope(
                        sid,
                        md["creator_id"],
                        "troupe.session.invite",
                        1,
                        data=data,
                        audience=[invitee],
                    )
                    await self.writer.submit(_append(sid, [invite], md, None))
                    self.deliver(invitee, invite)
                    reply.set(invite["envelope_id"])
                case _Ack(sender, causation_id, reply):
                    kind = "troupe.session.invite.ack"
                    ack = _envelope(sid, sender, kind, 2, causation_id=causation_id)
                    opened = _envelope(
                        sid,
                        md["creator_id"],
                        "troupe.session.opened",
                        3,
                        data={"session_id": sid},
                        audience=[p["agent_id"] for p in md["participants"]],
                    )
                    md = {key: value for key, value in md.items() if key != "pending_acks"}
                    md["state"] = "active"
                    dedup = (sid, f"c:{sender}|{causation_id}|{kind}", ack["envelope_id"], 2)
                    await self.writer.submit(_append(sid, [ack, opened], md, dedup))
                    self.record("invite_acked", session_id=sid, agent_id=sender)
                    self.directory[sid] = md
                    for participant in opened["audience"]:
                        self.deliver(participant, opened)
                    self.record("session_opened", session_id=sid)
                    active.set()
                    reply.set(ack["envelope_id"])
                case _:
                    assert_never(msg)
        del self.live[sid]
        if not self.live:
            self.all_stopped.set()

    def deliver(self, recipient: str, env: JSON) -> None:
        """A participant's end: it acks an invite from a task of its own."""
        if env["event_type"] == "troupe.session.invite":
            self.nursery.start_soon(self.ack, env["session_id"], recipient, env["envelope_id"])

    async def ack(self, sid: str, sender: str, causation_id: str) -> None:
        reply = _Reply()
        await self.live[sid].send(_Ack(sender, causation_id, reply))
        await reply.get()

    async def create(self, creator: str, invitee: str) -> None:
        """One create, as a hub's caller sees it: it returns once the session is ACTIVE."""
        reply = _Reply()
        await self.hub_send.send((creator, invitee, reply))
        md = await reply.get()
        send, receive = trio.open_memory_channel[_SessionMsg](64)
        active = trio.Event()
        self.live[md["session_id"]] = send
        self.nursery.start_soon(self.session_task, md, receive, active)
        invited = _Reply()
        await send.send(_Invite(invited))
        await invited.get()
        await active.wait()


async def raw_create(n_sessions: int, wave: int, db: Path) -> dict[str, Any]:
    """Create and passivate sessions as the wake part does, in a new store file.

    Args:
      n_sessions: how many, among 1000 people, paired as the wake part pairs them.
      wave: sessions created between two passivations of every live one.
      db: where the store file is made.

    Returns:
      Wall and CPU µs per session, and the writer's commits and writes.
    """
    async with SQLiteStore(db, synchronous="NORMAL", threaded=False):
        pass  # troupe lays the file out: the same tables and indexes
    unfreeze = gc.get_freeze_count() == 0  # (as a hub does: leave a caller's freeze alone)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA journal_mode = WAL")
        people = [new_uuid() for _ in range(1000)]
        gc.collect()  # (what the process held before is not this run's garbage)
        try:
            async with trio.open_nursery() as services, trio.open_nursery() as sessions:
                writer = _Writer(conn)
                hub = _RawHub(writer, sessions)
                services.start_soon(writer.run)
                services.start_soon(hub.audit_task)
                services.start_soon(hub.hub_task)
                started = time.perf_counter()
                cpu_started = time.process_time()

                async def creator(k: int, first: int, last: int) -> None:
                    for i in range(first + k, last, CREATORS):
                        await hub.create(*pair(people, i))

                for first in range(0, n_sessions, wave):
                    async with trio.open_nursery() as nursery:
                        for k in range(CREATORS):
                            nursery.start_soon(creator, k, first, min(n_sessions, first + wave))
                    hub.all_stopped = trio.Event()
                    for send in list(hub.live.values()):
                        send.send_nowait(_Stop())
                    await hub.all_stopped.wait()
                if hub.written < hub.recorded:
                    hub.flushed = trio.Event()
                    await hub.flushed.wait()  # every audit record written, as a hub's are
                elapsed = time.perf_counter() - started
                cpu = time.process_time() - cpu_started
                services.cancel_scope.cancel()
        finally:
            if unfreeze:
                gc.unfreeze()
    return {
        "create_us": elapsed / n_sessions * 1e6,
        "create_cpu_us": cpu / n_sessions * 1e6,
        "commits": writer.commits,
        "writes": writer.writes,
    }
