"""``SQLiteStore``: the embedded default engine, one SQLite file in WAL journal mode.

Writes go through one :class:`GroupCommitWriter` (one transaction per batch of writes from
any number of sessions, each write in its own savepoint); a write returns once committed.
Reads use a second, read-only connection on the trio thread: in WAL mode a reader never
waits for the writer, and it sees every commit that happened before the read began.
Records are stored as the codec's JSON, in TEXT columns, so ``sqlite3`` and its JSON
functions can inspect a store. Each WAL row carries ``zlib.crc32`` of its JSON bytes,
checked on every read: a damaged row raises :class:`StoreError` naming session and seq
instead of being replayed (rows from before schema 2 have no checksum and are not checked).

A store opened for writing holds the file's write lock (``_lock.py``) until it is left: a
second writer, in this process or another, is refused at once. ``read_only=True`` takes no
lock and never writes (``troupe wal`` reads a store while its hub runs).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from .._errors import NameTaken, StoreError
from ..model import Envelope, Resume, SessionMetadata, TaskMetadata, dumps
from ._lock import StoreLock
from ._protocol import AgentRecord, Snapshot, answer_key
from ._rules import DuplicateKey, agent_id_of, check_append, check_audit, check_window
from ._schema import SCHEMA_VERSION, SYNCHRONOUS_LEVELS, connect, connect_reader, open_read_only
from ._sql import (
    KEYED,
    SQLStore,
    agent_records,
    answer_range,
    checked,
    execute,
    first_found,
    first_record,
    first_row_pair,
    idempotency_keys_among,
    json_list,
    json_map,
    json_of,
    json_text,
    oldest_first,
    record_text,
    records_of,
    run_shielded,
    snapshot_of,
)
from ._writer import GroupCommitWriter, SQLiteBatches, Write

_UPSERT_AGENT = """
    INSERT INTO agents (agent_id, passport, resume, rule, skill_md, name, version)
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (agent_id) DO UPDATE SET passport = excluded.passport,
        resume = excluded.resume, rule = excluded.rule, skill_md = excluded.skill_md,
        name = excluded.name, version = excluded.version"""
# The change counter: the highest change stored (it never goes back: a deleted agent's
# tombstone holds a higher one than its row did, and saving it again a higher still).
_LAST_CHANGE = """
    SELECT max(coalesce((SELECT max(version) FROM agents), 0),
               coalesce((SELECT max(version) FROM tasks), 0),
               coalesce((SELECT max(version) FROM removed_agents), 0))"""
_UPSERT_SESSION = """
    INSERT INTO sessions (session_id, metadata) VALUES (?, ?)
    ON CONFLICT (session_id) DO UPDATE SET metadata = excluded.metadata"""
_UPSERT_CURSOR = """
    INSERT INTO cursors (agent_id, session_id, seq) VALUES (?, ?, ?)
    ON CONFLICT (agent_id, session_id) DO UPDATE SET seq = max(seq, excluded.seq)"""


class SQLiteStore(SQLStore[sqlite3.Connection]):
    """A store in one SQLite file; see the module docstring and the README's "Storage".

    Args:
      path: the store file; created (with its schema) when missing or empty.
      synchronous: SQLite's ``synchronous`` level for commits. ``"FULL"`` (the default)
        makes every returned write survive a power cut; ``"NORMAL"`` survives a crash of
        this process but may lose the last commits on power loss, for a cheaper commit.
      threaded: run each commit batch in a worker thread (the default) so the trio loop
        keeps running during the fsync; ``False`` runs it on the trio thread, which
        deterministic virtual-time runs need.
      read_only: only read an existing store: no write lock (a hub may be running on it),
        every write raises :class:`StoreError`. A store of an older schema is migrated
        first, which needs the write lock for a moment.

    Entering raises :class:`~troupe.StoreLocked` (naming the holder) when another open
    store, in any process, has the file for writing: a store has one hub.

    Raises:
      ValueError: an unknown ``synchronous`` level, or ``":memory:"`` (use MemoryStore).
    """

    PARAM = "?"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        threaded: bool = True,
        read_only: bool = False,
    ) -> None:
        if str(path) == ":memory:":
            raise ValueError("SQLiteStore needs a file; use MemoryStore for an in-memory store")
        if synchronous.upper() not in SYNCHRONOUS_LEVELS:
            raise ValueError(
                f"synchronous must be one of {SYNCHRONOUS_LEVELS}, got {synchronous!r}"
            )
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.threaded = threaded
        self.read_only = read_only
        self._name = f"SQLiteStore({str(self.path)!r})"
        self._entered = False
        self._stack: contextlib.AsyncExitStack | None = None
        self._writer: GroupCommitWriter[sqlite3.Connection] | None = None
        self._reader: sqlite3.Connection | None = None
        #: The last change counted (read when opened; taken by the writer's thread alone).
        self._change = 0

    async def _open(self) -> None:
        if self.read_only:
            self._open_read_only()
            await trio.lowlevel.checkpoint()
            return
        opener = functools.partial(connect, self.path, synchronous=self.synchronous)
        async with contextlib.AsyncExitStack() as stack:
            lock = StoreLock(self.path)
            lock.acquire()
            stack.callback(lock.release)
            conn = await trio.to_thread.run_sync(opener) if self.threaded else opener()
            stack.callback(conn.close)
            reader = connect_reader(self.path)
            stack.callback(reader.close)
            # The file's only writer (its lock): the change counter lives here, not in a
            # row every write would rewrite (one page more per commit).
            (self._change,) = reader.execute(_LAST_CHANGE).fetchone()
            batches = SQLiteBatches(conn, name=self._name, threaded=self.threaded)
            writer = GroupCommitWriter(batches, name=self._name)
            # The writer's nursery stays open until __aexit__: the body of 'async with store'
            # runs inside it, and nothing the store starts outlives it.
            nursery = await stack.enter_async_context(trio.open_nursery())
            await nursery.start(run_shielded, writer)
            # Unwound in reverse: stop taking writes, let the writer drain, close both.
            stack.callback(writer.close)
            self._stack = stack.pop_all()
        self._writer, self._reader = writer, reader

    def _open_read_only(self) -> None:
        reader, version = open_read_only(self.path)
        if version < SCHEMA_VERSION:
            reader.close()
            # Migrating writes, so it takes the write lock (refused while an older hub runs).
            lock = StoreLock(self.path)
            lock.acquire()
            try:
                connect(self.path, synchronous=self.synchronous).close()
            finally:
                lock.release()
            reader, _ = open_read_only(self.path)
        stack = contextlib.AsyncExitStack()
        stack.callback(reader.close)
        self._stack, self._reader = stack, reader

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._writer = self._reader = None
        self._entered = False
        if stack is not None:
            await stack.aclose()

    async def _write(self, write: Write) -> None:
        if self._writer is None:
            if self._reader is not None:
                raise StoreError(f"{self._name} is open read-only; it cannot write")
            raise StoreError(f"{self._name} is not open; use it inside 'async with store:'")
        await self._writer.submit(write)

    async def _query(self, sql: str, *params: Any) -> list[Any]:
        await trio.lowlevel.checkpoint()
        if self._reader is None:
            raise StoreError(f"{self._name} is not open; use it inside 'async with store:'")
        try:
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self._name}: {exc}") from exc

    def _next_change(self, conn: sqlite3.Connection) -> int:
        self._change += 1  # a write rolled back leaves a gap: harmless, it only orders
        return self._change

    async def last_change(self) -> int:
        rows = await self._query(_LAST_CHANGE)
        version: int = rows[0][0]
        return version

    # -- registry ----------------------------------------------------------------------------

    async def save_agent(self, record: AgentRecord) -> None:
        agent_id = agent_id_of(record)
        row = (
            agent_id,
            record_text(record.passport),
            record_text(record.resume),
            record_text(record.rule),
            record.skill_md,
            record.passport.name,
        )

        def write(conn: sqlite3.Connection) -> None:
            name = record.passport.name
            try:
                conn.execute(_UPSERT_AGENT, (*row, self._next_change(conn)))
            except sqlite3.IntegrityError:
                # The upsert settles a clash of agent_id, so only the name's index is left.
                (holder,) = conn.execute(
                    "SELECT agent_id FROM agents WHERE name = ?", (name,)
                ).fetchone()
                raise NameTaken(
                    f"{self._name}: agent name {name!r} is already held by agent {holder!r}; "
                    "names are unique",
                    name=name,
                    holder=holder,
                ) from None
            conn.execute(self.SQL["unmark_removed"], (agent_id,))
            self._set_capabilities(conn, agent_id, record.resume)

        await self._write(write)

    @staticmethod
    def _set_capabilities(conn: sqlite3.Connection, agent_id: str, resume: Resume) -> None:
        conn.execute("DELETE FROM capabilities WHERE agent_id = ?", (agent_id,))
        conn.executemany(
            "INSERT INTO capabilities (capability, agent_id) VALUES (?, ?)",
            [(capability, agent_id) for capability in sorted(resume.capabilities())],
        )

    async def load_agents(self) -> list[AgentRecord]:
        rows = await self._query(
            "SELECT passport, resume, rule, skill_md FROM agents ORDER BY rowid"
        )
        return agent_records(rows)

    async def agents_with_capability(self, capability: str) -> list[str]:
        rows = await self._query(
            "SELECT agent_id FROM capabilities WHERE capability = ? ORDER BY agent_id", capability
        )
        return [agent_id for (agent_id,) in rows]

    # -- sessions and the WAL --------------------------------------------------------------

    async def save_session(self, metadata: SessionMetadata) -> None:
        row = (metadata.session_id, record_text(metadata))
        await self._write(execute(_UPSERT_SESSION, row))

    async def load_sessions(self) -> list[SessionMetadata]:
        rows = await self._query("SELECT metadata FROM sessions ORDER BY rowid")
        return records_of(rows, SessionMetadata)

    async def get_session(self, session_id: str) -> SessionMetadata | None:
        rows = await self._query("SELECT metadata FROM sessions WHERE session_id = ?", session_id)
        return first_record(rows, SessionMetadata)

    async def append(
        self,
        session_id: str,
        envelopes: Sequence[Envelope],
        *,
        metadata: SessionMetadata | None = None,
    ) -> None:
        # Encode on the caller's side: a bad envelope fails here, before it joins a batch.
        rows = []
        for e in envelopes:
            data = dumps(e)
            rows.append(
                (
                    session_id,
                    e.seq,
                    e.envelope_id,
                    e.idempotency_key,
                    data.decode(),
                    zlib.crc32(data),
                )
            )
        dedup_rows = [
            (session_id, key, e.envelope_id, e.seq)
            for e in envelopes
            if (key := answer_key(e)) is not None
        ]
        meta_row = None if metadata is None else (metadata.session_id, record_text(metadata))

        def write(conn: sqlite3.Connection) -> None:
            # Read inside the transaction: earlier writes of this batch count.
            (last,) = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM wal WHERE session_id = ?", (session_id,)
            ).fetchone()
            check_append(session_id, last, envelopes, metadata)
            try:
                conn.executemany(
                    "INSERT INTO wal (session_id, seq, envelope_id, idempotency_key, envelope, "
                    "crc) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except sqlite3.IntegrityError:
                # The seqs were checked, so only the idempotency index can object.
                keys = [e.idempotency_key for e in envelopes if e.idempotency_key is not None]
                conn.execute("ROLLBACK TO write")
                taken = conn.execute(
                    "SELECT idempotency_key FROM wal WHERE session_id = ? AND idempotency_key "
                    f"IN ({', '.join('?' * len(keys))}) ORDER BY seq LIMIT 1",
                    (session_id, *keys),
                ).fetchone()
                raise DuplicateKey(session_id, taken[0]) from None
            if dedup_rows:
                # The first envelope under a key is the original; later ones never replace it.
                conn.executemany("INSERT OR IGNORE INTO dedup VALUES (?, ?, ?, ?)", dedup_rows)
            if meta_row is not None:
                conn.execute(_UPSERT_SESSION, meta_row)

        await self._write(write)

    async def read(
        self, session_id: str, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        # As a BLOB: the very bytes the checksum was taken of, with no decode to str.
        if until is None:
            rows = await self._query(
                "SELECT seq, crc, CAST(envelope AS BLOB) FROM wal WHERE session_id = ? "
                "AND seq > ? ORDER BY seq",
                session_id,
                since,
            )
        else:
            rows = await self._query(
                "SELECT seq, crc, CAST(envelope AS BLOB) FROM wal WHERE session_id = ? "
                "AND seq > ? AND seq <= ? ORDER BY seq",
                session_id,
                since,
                until,
            )
        return checked(session_id, rows)

    async def last_seq(self, session_id: str) -> int:
        rows = await self._query(
            "SELECT coalesce(max(seq), 0) FROM wal WHERE session_id = ?", session_id
        )
        last: int = rows[0][0]
        return last

    async def find_idempotent(self, session_id: str, key: str) -> Envelope | None:
        rows = await self._query(
            "SELECT seq, crc, CAST(envelope AS BLOB) FROM wal WHERE session_id = ? "
            "AND idempotency_key = ?",
            session_id,
            key,
        )
        return checked(session_id, rows)[0] if rows else None

    async def find_dedup(self, session_id: str, keys: Sequence[str]) -> tuple[str, int] | None:
        if not keys:
            await trio.lowlevel.checkpoint()
            return None
        # Idempotency keys from the WAL's index of them; answer keys from the dedup table.
        idempotency = idempotency_keys_among(keys)
        rows = await self._query(
            "SELECT key, envelope_id, seq FROM dedup WHERE session_id = ? "
            f"AND key IN ({', '.join('?' * len(keys))}) UNION ALL "
            f"SELECT {KEYED}, envelope_id, seq FROM wal WHERE session_id = ? "
            f"AND idempotency_key IN ({', '.join('?' * len(idempotency))})",
            session_id,
            *keys,
            session_id,
            *idempotency,
        )
        return first_found(rows, keys)

    async def find_answer(
        self, session_id: str, sender_id: str, causation_id: str
    ) -> tuple[str, int] | None:
        # A range of the primary key.
        low, high = answer_range(sender_id, causation_id)
        rows = await self._query(
            "SELECT envelope_id, seq FROM dedup WHERE session_id = ? AND key >= ? AND key < ? "
            "ORDER BY seq LIMIT 1",
            session_id,
            low,
            high,
        )
        return first_row_pair(rows)

    async def recent_dedup(self, session_id: str, limit: int) -> list[tuple[str, str, int]]:
        rows = await self._query(
            "SELECT key, envelope_id, seq FROM dedup WHERE session_id = ? "
            "ORDER BY seq DESC LIMIT ?",
            session_id,
            limit,
        )
        return oldest_first(rows)

    async def save_snapshot(self, session_id: str, seq: int, state: Any) -> None:
        row = (session_id, seq, json_text(state, f"snapshot of {session_id!r}"))
        await self._write(execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", row))

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        rows = await self._query(
            "SELECT seq, state FROM snapshots WHERE session_id = ?", session_id
        )
        return snapshot_of(rows)

    # -- tasks -----------------------------------------------------------------------------

    async def load_tasks(self) -> list[TaskMetadata]:
        rows = await self._query("SELECT metadata FROM tasks ORDER BY rowid")
        return records_of(rows, TaskMetadata)

    async def save_checkpoint(self, task_id: str, data: dict[str, Any]) -> None:
        row = (task_id, json_text(data, f"checkpoint of task {task_id!r}"))
        await self._write(execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", row))

    async def load_checkpoint(self, task_id: str) -> dict[str, Any] | None:
        rows = await self._query("SELECT data FROM checkpoints WHERE task_id = ?", task_id)
        data: dict[str, Any] | None = json_of(rows)
        return data

    # -- delivery cursors ------------------------------------------------------------------

    async def save_cursors(self, cursors: Sequence[tuple[str, str, int]]) -> None:
        rows = list(cursors)
        if not rows:
            await trio.lowlevel.checkpoint()
            return

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(_UPSERT_CURSOR, rows)

        await self._write(write)

    async def load_cursors(self, agent_id: str) -> dict[str, int]:
        rows = await self._query("SELECT session_id, seq FROM cursors WHERE agent_id = ?", agent_id)
        return dict(rows)

    # -- small keyed records ---------------------------------------------------------------

    async def put_kv(self, namespace: str, key: str, value: Any) -> None:
        row = (namespace, key, json_text(value, f"kv value {namespace!r}/{key!r}"))
        await self._write(execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", row))

    async def load_kv(self, namespace: str) -> dict[str, Any]:
        rows = await self._query(
            "SELECT key, value FROM kv WHERE namespace = ? ORDER BY key", namespace
        )
        return json_map(rows)

    async def delete_kv(self, namespace: str, key: str | None = None) -> None:
        if key is None:
            await self._write(execute("DELETE FROM kv WHERE namespace = ?", (namespace,)))
        else:
            sql = "DELETE FROM kv WHERE namespace = ? AND key = ?"
            await self._write(execute(sql, (namespace, key)))

    # -- audit -----------------------------------------------------------------------------

    async def append_audit(self, records: Sequence[dict[str, Any]]) -> None:
        check_audit(records)
        rows = [(json_text(record, "audit record"),) for record in records]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO audit (record) VALUES (?)", rows)

        await self._write(write)

    async def read_audit(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        check_window(since, limit)
        rows = await self._query(
            "SELECT record FROM audit WHERE id > ? ORDER BY id LIMIT ?",
            since,
            -1 if limit is None else limit,
        )
        return json_list(rows)

    # -- offline checks (troupe wal verify) -------------------------------------------------

    async def check_file(self) -> tuple[list[str], list[str]]:
        """What ``troupe wal verify`` checks below the Store protocol: ``(problems, notes)``.

        Problems: SQLite's ``quick_check``, WAL rows whose checksum does not match, agent
        names held by more than one agent. Notes: WAL rows from before checksums (schema 1),
        which cannot be checked.
        """
        problems = [
            f"sqlite quick_check: {message}"
            for (message,) in await self._query("PRAGMA quick_check")
            if message != "ok"
        ]
        unchecked: dict[str, int] = {}
        # One session at a time: a store's whole WAL need not fit in memory.
        for (session_id,) in await self._query("SELECT DISTINCT session_id FROM wal"):
            rows = await self._query(
                "SELECT seq, crc, CAST(envelope AS BLOB) FROM wal WHERE session_id = ? "
                "ORDER BY seq",
                session_id,
            )
            for seq, crc, data in rows:
                if crc is None:
                    unchecked[session_id] = unchecked.get(session_id, 0) + 1
                elif zlib.crc32(data) != crc:
                    problems.append(
                        f"{session_id}: the envelope at seq {seq} is damaged (checksum)"
                    )
        twice = await self._query(
            "SELECT json_extract(passport, '$.name') AS n, group_concat(agent_id, ', ') "
            "FROM agents GROUP BY n HAVING count(*) > 1 ORDER BY n"
        )
        problems += [
            f"agent name {name!r} is held by more than one agent ({ids}); a store has one "
            "hub, and each name one agent: delete all but one with the hub's unregister"
            for name, ids in twice
        ]
        notes = [
            f"{session_id}: {count} envelopes from before checksums (schema 1), not checked"
            for session_id, count in sorted(unchecked.items())
        ]
        return problems, notes
