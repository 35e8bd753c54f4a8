"""What the two SQL stores (``SQLiteStore``, ``PostgresStore``) share: all but their SQL.

Each store keeps its own statements (placeholders, column types, upserts and ordering
differ between the dialects); what is the same logic is written once here: encoding a
record for a row, decoding a query's rows, checking WAL checksums, the agent-registry
writes whose statements only differ in placeholders, entering a store once, and the
writer that a caller's cancel cannot reach.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import trio

from .._errors import StoreError
from ..model import Envelope, Passport, Resume, Rule, TaskMetadata, dumps, loads
from ..model._codec import envelope_from_json
from ._protocol import KEY_PREFIX, AgentRecord, Changes, Snapshot, answer_prefix
from ._rules import json_bytes, json_value, unknown_agent
from ._writer import GroupCommitWriter, WriterStatistics


class Executes(Protocol):
    """A DB-API connection, as far as the shared writes use one."""

    def execute(self, sql: str, params: Sequence[Any], /) -> Any: ...


C = TypeVar("C", bound=Executes)
T = TypeVar("T")


def record_text(obj: Any) -> str:
    """A record as the codec's JSON text (how both stores keep records)."""
    return dumps(obj).decode()


def json_text(value: Any, what: str) -> str:
    """A caller's JSON value as text; ``what`` names it when it is not JSON."""
    return json_bytes(value, what).decode()


def damaged(session_id: str, seq: int) -> StoreError:
    return StoreError(
        f"session {session_id!r}: the stored envelope at seq {seq} is damaged (its checksum "
        "does not match); run 'troupe wal verify' and restore the store from a backup"
    )


def checked(session_id: str, rows: list[Any]) -> list[Envelope]:
    """Decode ``(seq, crc, json bytes)`` rows; a row whose checksum does not match raises.

    A row without a checksum (SQLite, before schema 2) is not checked.
    """
    out = []
    for seq, crc, data in rows:
        if crc is not None and zlib.crc32(data) != crc:
            raise damaged(session_id, seq)
        out.append(envelope_from_json(data))
    return out


def execute(sql: str, params: Sequence[Any]) -> Callable[[Executes], None]:
    """A write of one statement."""

    def write(conn: Executes) -> None:
        conn.execute(sql, params)

    return write


def answer_range(sender_id: str, causation_id: str) -> tuple[str, str]:
    """The keys of ``sender_id``'s answers to a trigger, as a range of the dedup key.

    Every key that starts with the prefix, which ends with ``'|'``, sorts at or after it and
    before the prefix with ``'}'`` (the next code point); both dialects compare code points.
    """
    prefix = answer_prefix(sender_id, causation_id)
    return prefix, prefix[:-1] + "}"


def agent_records(rows: list[Any]) -> list[AgentRecord]:
    """``(passport, resume, rule, skill_md)`` rows as records."""
    return [
        AgentRecord(
            passport=loads(passport, Passport),
            resume=loads(resume, Resume),
            rule=loads(rule, Rule),
            skill_md=skill_md,
        )
        for passport, resume, rule, skill_md in rows
    ]


def dedup_map(rows: list[Any]) -> dict[str, tuple[str, int]]:
    """``(key, envelope_id, seq)`` rows as ``{key: (envelope_id, seq)}``."""
    return {key: (envelope_id, seq) for key, envelope_id, seq in rows}


def idempotency_keys_among(keys: Sequence[str]) -> list[str]:
    """The idempotency keys among dedup ``keys``, as the WAL's index keeps them (without
    their prefix): ``find_dedup`` asks that index for these, the dedup table for all."""
    return [key.removeprefix(KEY_PREFIX) for key in keys if key.startswith(KEY_PREFIX)]


def first_found(rows: list[Any], keys: Sequence[str]) -> tuple[str, int] | None:
    """Of ``(key, envelope_id, seq)`` rows, the one of the first of ``keys`` found."""
    found = dedup_map(rows)
    return next((found[key] for key in keys if key in found), None)


def first_row_pair(rows: list[Any]) -> tuple[str, int] | None:
    """The first ``(envelope_id, seq)`` row, if any."""
    return (rows[0][0], rows[0][1]) if rows else None


def oldest_first(rows: list[Any]) -> list[tuple[str, str, int]]:
    """``(key, envelope_id, seq)`` rows read newest first, returned oldest first."""
    return [(key, envelope_id, seq) for key, envelope_id, seq in reversed(rows)]


def records_of(rows: list[Any], cls: type[T]) -> list[T]:
    """One-column rows of the codec's JSON as ``cls`` records."""
    return [loads(data, cls) for (data,) in rows]


def first_record(rows: list[Any], cls: type[T]) -> T | None:
    """The first one-column row of the codec's JSON as a ``cls`` record, if any."""
    return loads(rows[0][0], cls) if rows else None


def snapshot_of(rows: list[Any]) -> Snapshot | None:
    """The first ``(seq, state)`` row as a snapshot, if any."""
    return Snapshot(seq=rows[0][0], state=json_value(rows[0][1])) if rows else None


def json_of(rows: list[Any]) -> Any:
    """The first row's one JSON text column, decoded, if any."""
    return json_value(rows[0][0]) if rows else None


def json_list(rows: list[Any]) -> list[Any]:
    """One-column rows of JSON text, decoded."""
    return [json_value(data) for (data,) in rows]


def json_map(rows: list[Any]) -> dict[str, Any]:
    """``(key, json text)`` rows as ``{key: value}``."""
    return {key: json_value(value) for key, value in rows}


async def run_shielded(
    writer: GroupCommitWriter[Any], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the writer out of reach of an outside cancel: it stops only through ``close()``.

    Whoever uses the store may write while it unwinds after a cancel (a hub's shielded
    shutdown saves cursors, snapshots, audit records); a writer cancelled with its caller
    would refuse all of that. ``close()`` (when the store is left) drains it and ends it.
    """
    with trio.CancelScope(shield=True):
        await writer.run(task_status=task_status)


#: A WAL row's idempotency key as its dedup key (:func:`~._protocol.dedup_keys`), in SQL.
KEYED = f"'{KEY_PREFIX}' || idempotency_key"

#: Statements both dialects share but for their placeholder (written ``?`` here; a store
#: class gets them with its own ``PARAM`` as ``SQL``).
SHARED_SQL: dict[str, str] = {
    "update_agent": "UPDATE agents SET {column} = ?, version = ? WHERE agent_id = ?",
    "delete_agent_rows": "DELETE FROM {table} WHERE agent_id = ?",
    # PostgreSQL's change counter is one row: its row lock, held to the commit, hands out
    # values in commit order (Store module rules: a reader's ``since`` misses nothing).
    # SQLite, one writer per file, counts in the store instead (``SQLiteStore``).
    "next_change": "UPDATE changes SET version = version + 1 RETURNING version",
    "last_change": "SELECT version FROM changes",
    "mark_removed": """
        INSERT INTO removed_agents (agent_id, version) VALUES (?, ?)
        ON CONFLICT (agent_id) DO UPDATE SET version = excluded.version""",
    "unmark_removed": "DELETE FROM removed_agents WHERE agent_id = ?",
    # Every dedup key: the answers' from the dedup table, the idempotency keys from the WAL
    # (a store written by an earlier troupe also has some of those in its dedup table).
    "load_dedup": f"""
        SELECT key, envelope_id, seq FROM dedup WHERE session_id = ? UNION ALL
        SELECT {KEYED}, envelope_id, seq FROM wal
        WHERE session_id = ? AND idempotency_key IS NOT NULL""",
    "keys_after": f"""
        SELECT {KEYED}, envelope_id, seq FROM wal
        WHERE session_id = ? AND seq > ? AND idempotency_key IS NOT NULL ORDER BY seq""",
    # In the order of the index of keys, so that it is the index both engines read: a
    # session without keys answers at once however long it is, one with keys at the first
    # old one (the index holds at most the keys after ``seq`` to skip).
    "key_before": """
        SELECT 1 FROM wal WHERE session_id = ? AND idempotency_key IS NOT NULL AND seq <= ?
        ORDER BY idempotency_key LIMIT 1""",
    "get_agent": "SELECT passport, resume, rule, skill_md FROM agents WHERE agent_id = ?",
    "get_agent_named": "SELECT passport, resume, rule, skill_md FROM agents WHERE name = ?",
    "agents_since": """
        SELECT passport, resume, rule, skill_md FROM agents WHERE version > ?
        ORDER BY version""",
    "removed_since": "SELECT agent_id FROM removed_agents WHERE version > ? ORDER BY version",
    "tasks_since": "SELECT metadata FROM tasks WHERE version > ? ORDER BY version",
    "get_task": "SELECT metadata FROM tasks WHERE task_id = ?",
    "save_task": """
        INSERT INTO tasks (task_id, metadata, version, done) VALUES (?, ?, ?, ?)
        ON CONFLICT (task_id) DO UPDATE SET metadata = excluded.metadata,
            version = excluded.version, done = excluded.done""",
    # Only over a task that is not terminal: the first terminal update to commit wins.
    "save_open_task": """
        INSERT INTO tasks (task_id, metadata, version, done) VALUES (?, ?, ?, ?)
        ON CONFLICT (task_id) DO UPDATE SET metadata = excluded.metadata,
            version = excluded.version, done = excluded.done
        WHERE NOT tasks.done""",
}


class SQLStore(Generic[C]):
    """What both SQL stores do alike: entered once at a time, a group-commit writer,
    the agent-registry and task writes and the change feed, whose statements differ only
    in their placeholders.

    A subclass sets ``PARAM`` (its placeholder), ``_name``, ``_entered``, ``_stack`` and
    ``_writer`` in ``__init__``, and gives :meth:`_query` and :meth:`_set_capabilities`.
    """

    #: The dialect's placeholder.
    PARAM: ClassVar[str]
    #: :data:`SHARED_SQL` with the dialect's placeholder.
    SQL: ClassVar[dict[str, str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.SQL = {key: sql.replace("?", cls.PARAM) for key, sql in SHARED_SQL.items()}

    _name: str
    _entered: bool
    _stack: contextlib.AsyncExitStack | None
    _writer: GroupCommitWriter[C] | None

    def __repr__(self) -> str:
        return self._name

    async def __aenter__(self) -> Self:
        if self._entered:
            raise StoreError(f"{self._name} is already open; leave it before entering it again")
        # Claimed before the first await, so a concurrent second entry is refused too.
        self._entered = True
        try:
            await self._open()
        finally:
            self._entered = self._stack is not None
        return self

    async def _open(self) -> None:
        """Open the connections and start the writer; sets ``_stack`` when open."""
        raise NotImplementedError

    async def _write(self, write: Callable[[C], None]) -> None:
        raise NotImplementedError

    async def _query(self, sql: str, *params: Any) -> list[Any]:
        """The rows of one read."""
        raise NotImplementedError

    async def load_dedup(self, session_id: str) -> dict[str, tuple[str, int]]:
        return dedup_map(await self._query(self.SQL["load_dedup"], session_id, session_id))

    async def idempotency_keys(
        self, session_id: str, since: int
    ) -> tuple[list[tuple[str, str, int]], bool]:
        rows = await self._query(self.SQL["keys_after"], session_id, since)
        older = await self._query(self.SQL["key_before"], session_id, since)
        return [(key, envelope_id, seq) for key, envelope_id, seq in rows], bool(older)

    def _next_change(self, conn: C) -> int:
        """Take the next value of the change counter (in the write's transaction; a store
        with one writer may count in memory instead)."""
        version: int = conn.execute(self.SQL["next_change"], ()).fetchall()[0][0]
        return version

    @staticmethod
    def _set_capabilities(conn: C, agent_id: str, resume: Resume) -> None:
        """Replace the agent's rows in the capability index (in the dialect)."""
        raise NotImplementedError

    def statistics(self) -> WriterStatistics:
        """The group-commit writer's counters (batches, writes, failed commits, pending)."""
        if self._writer is None:
            raise StoreError(f"{self._name} is not open")
        return self._writer.statistics()

    def _update_agent(self, column: str, agent_id: str, value: str | None) -> Callable[[C], None]:
        sql = self.SQL["update_agent"].format(column=column)

        def write(conn: C) -> None:
            version = self._next_change(conn)
            if conn.execute(sql, (value, version, agent_id)).rowcount == 0:
                raise unknown_agent(agent_id)

        return write

    async def save_resume(self, agent_id: str, resume: Resume) -> None:
        update = self._update_agent("resume", agent_id, record_text(resume))

        def write(conn: C) -> None:
            update(conn)
            self._set_capabilities(conn, agent_id, resume)

        await self._write(write)

    async def save_rule(self, agent_id: str, rule: Rule) -> None:
        await self._write(self._update_agent("rule", agent_id, record_text(rule)))

    async def save_skill(self, agent_id: str, skill_md: str | None) -> None:
        await self._write(self._update_agent("skill_md", agent_id, skill_md))

    async def delete_agent(self, agent_id: str) -> None:
        delete = self.SQL["delete_agent_rows"]
        statements = [delete.format(table=table) for table in ("capabilities", "cursors")]

        def write(conn: C) -> None:
            version = self._next_change(conn)
            if conn.execute(delete.format(table="agents"), (agent_id,)).rowcount:
                conn.execute(self.SQL["mark_removed"], (agent_id, version))
            for sql in statements:
                conn.execute(sql, (agent_id,))

        await self._write(write)

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        found = agent_records(await self._query(self.SQL["get_agent"], agent_id))
        return found[0] if found else None

    async def get_agent_named(self, name: str) -> AgentRecord | None:
        found = agent_records(await self._query(self.SQL["get_agent_named"], name))
        return found[0] if found else None

    # -- the change feed -------------------------------------------------------------------

    async def last_change(self) -> int:
        rows = await self._query(self.SQL["last_change"])
        version: int = rows[0][0]
        return version

    async def changes(self, since: int) -> Changes:
        # The counter first: every write that took a value up to it has committed, so
        # the reads below (each a later snapshot) see it.
        version = await self.last_change()
        sql = self.SQL
        agents = agent_records(await self._query(sql["agents_since"], since))
        removed = [agent_id for (agent_id,) in await self._query(sql["removed_since"], since)]
        tasks = records_of(await self._query(sql["tasks_since"], since), TaskMetadata)
        return Changes(
            version=version, agents=tuple(agents), removed=tuple(removed), tasks=tuple(tasks)
        )

    # -- tasks -----------------------------------------------------------------------------

    async def save_task(self, task: TaskMetadata) -> None:
        sql, row = self.SQL["save_task"], (task.task_id, record_text(task))
        terminal = task.state.terminal

        def write(conn: C) -> None:
            conn.execute(sql, (*row, self._next_change(conn), terminal))

        await self._write(write)

    async def save_open_task(self, task: TaskMetadata) -> TaskMetadata | None:
        sql, row = self.SQL["save_open_task"], (task.task_id, record_text(task))
        terminal = task.state.terminal
        stored: TaskMetadata | None = None

        def write(conn: C) -> None:
            nonlocal stored
            stored = None  # a batch retried runs this again
            if conn.execute(sql, (*row, self._next_change(conn), terminal)).rowcount == 0:
                rows = conn.execute(self.SQL["get_task"], (task.task_id,)).fetchall()
                stored = loads(rows[0][0], TaskMetadata)

        await self._write(write)
        return stored

    async def get_task(self, task_id: str) -> TaskMetadata | None:
        return first_record(await self._query(self.SQL["get_task"], task_id), TaskMetadata)
