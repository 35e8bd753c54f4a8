"""``PostgresStore``: the ``Store`` protocol on PostgreSQL, through psycopg 3's sync API.

Rules:

- psycopg's async API is asyncio-only, so every call to the server is psycopg's sync API in a
  trio worker thread (``threaded=True``, the default) or, for deterministic virtual-time runs,
  on the trio thread (``threaded=False``, as :class:`SQLiteStore` offers). psycopg is
  imported when a store is opened, never by ``import troupe``.
- Writes go through one :class:`GroupCommitWriter` on one connection: the writes pending at
  once, from any number of sessions, share one transaction (``BEGIN``, a ``SAVEPOINT`` per
  write, ``COMMIT``). A write returns once committed. Reads use a small pool of other
  connections (``readers``), each statement its own snapshot (autocommit, READ COMMITTED):
  a read sees every commit that returned before it began.
- The tables live in their own PostgreSQL schema (``schema=``, default ``troupe``), created
  with the whole current version on first open; ``troupe_meta`` holds the store's marker and
  schema version, and each open migrates an older one in one transaction under an advisory
  lock. A schema that holds other tables, or a newer version, is refused
  (:class:`IncompatibleStore`) and left as it is. Several stores (tests, tenants) can share
  one database under different schemas.
- The WAL is keyed by ``(session_id, seq)``; agent names are unique by constraint; each
  envelope is stored as its exact JSON bytes (``bytea``) with ``zlib.crc32`` of them, checked
  on every read. Keys and names use the ``"C"`` collation: order is code-point order whatever
  the database's locale (as SQLite and MemoryStore sort).
- Every connection sets ``statement_timeout`` (:data:`STATEMENT_TIMEOUT_MS`),
  ``idle_in_transaction_session_timeout`` (:data:`IDLE_IN_TRANSACTION_MS`: a paused
  process cannot hold row locks for longer) and libpq TCP keepalives
  (:data:`KEEPALIVES`: a dead peer is noticed in ~11 s, not hours). A DSN that sets any of
  these wins.
- A transient failure (connection lost before ``COMMIT`` was sent, connect refused,
  serialization failure, deadlock) is retried: a new connection, the whole batch or read
  again, with tenacity (:data:`RETRY_ATTEMPTS` attempts, exponential backoff with jitter),
  bounded by :data:`RETRY_WITHIN_S` under ``trio.move_on_after``. A connection lost *while*
  committing leaves the outcome unknown: that batch fails with :class:`StoreError` saying so
  (read back to find out), never retried blindly.
- ``exclusive=True`` (the default) makes the store one hub's: the write connection holds a
  session advisory lock on the schema; a second store is refused with :class:`StoreLocked`
  naming the holder, and a writer that lost its connection must win the lock again before
  it writes (ending its own lost connection's backend if the server still has it). The
  lock is released explicitly when the store is left. A cluster (issue 16) passes
  ``exclusive=False`` and a ``fence`` instead: ``fence(conn, session_id)`` runs inside
  every session write's own transaction (``append``, ``save_session``, ``save_snapshot``),
  before anything is written, and raising refuses that write alone (e.g. ``SELECT epoch
  FROM shards ... FOR SHARE`` and compare with the epoch this node claimed).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import zlib
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

import trio
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from .._errors import IncompatibleStore, NameTaken, StoreError, StoreLocked
from ..model import Envelope, Resume, SessionMetadata, TaskMetadata, dumps
from ._protocol import AgentRecord, Snapshot, answer_key
from ._rules import DuplicateKey, agent_id_of, check_append, check_audit, check_window
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
from ._writer import GroupCommitWriter, Pending, run_in_savepoints

if TYPE_CHECKING:
    import psycopg

    Connection = psycopg.Connection[Any]

P = ParamSpec("P")
T = TypeVar("T")

#: A session write's check, run in its own transaction before it writes (module rules).
Fence = Callable[["Connection", str], None]

#: No statement runs longer (ms): a stuck query fails instead of holding up a batch.
STATEMENT_TIMEOUT_MS: Final = 10_000
#: A transaction left open this long (ms) is ended by the server, releasing its locks.
IDLE_IN_TRANSACTION_MS: Final = 5_000
#: libpq keepalives: probe after 5 s idle, every 2 s, give up after 3 misses; connect in 5 s.
KEEPALIVES: Final = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "connect_timeout": "5",
}
#: Attempts at one batch or read before its transient failure is raised.
RETRY_ATTEMPTS: Final = 5
#: Seconds one batch or read may spend on attempts and backoff in all.
RETRY_WITHIN_S: Final = 15.0
#: Writes per transaction at most: each is a subtransaction (its savepoint), and past 64 in
#: one transaction PostgreSQL's subtransaction cache overflows and every snapshot slows.
MAX_BATCH: Final = 64
#: Reader connections at most (opened as reads need them).
READERS: Final = 4

MAGIC: Final = "troupe-store"
_HOST: Final = socket.gethostname()
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: ``MIGRATIONS[n]`` upgrades schema version ``n`` to ``n + 1`` (search_path is the schema).
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        'CREATE TABLE troupe_meta (key text COLLATE "C" PRIMARY KEY, value text NOT NULL)',
        f"INSERT INTO troupe_meta VALUES ('magic', '{MAGIC}'), ('version', '0')",
        # ``ord`` is registration / creation order; an upsert keeps it.
        """CREATE TABLE agents (
            ord bigint GENERATED ALWAYS AS IDENTITY,
            agent_id text COLLATE "C" PRIMARY KEY, name text COLLATE "C" NOT NULL UNIQUE,
            passport text NOT NULL, resume text NOT NULL, rule text NOT NULL, skill_md text)""",
        """CREATE TABLE capabilities (
            capability text COLLATE "C" NOT NULL, agent_id text COLLATE "C" NOT NULL,
            PRIMARY KEY (capability, agent_id))""",
        "CREATE INDEX capabilities_by_agent ON capabilities (agent_id)",
        """CREATE TABLE sessions (
            ord bigint GENERATED ALWAYS AS IDENTITY,
            session_id text COLLATE "C" PRIMARY KEY, metadata text NOT NULL)""",
        # envelope: the codec's exact JSON bytes; crc: zlib.crc32 of them.
        """CREATE TABLE wal (
            session_id text COLLATE "C" NOT NULL, seq bigint NOT NULL,
            envelope_id text NOT NULL, idempotency_key text COLLATE "C",
            envelope bytea NOT NULL, crc bigint NOT NULL,
            PRIMARY KEY (session_id, seq))""",
        """CREATE UNIQUE INDEX wal_idempotency ON wal (session_id, idempotency_key)
            WHERE idempotency_key IS NOT NULL""",
        # Every answer_key() of every accepted envelope: what a session refuses to repeat
        # besides its idempotency keys (which the WAL's unique index keeps; before, they
        # were written here too, and are still read from here in such a store).
        """CREATE TABLE dedup (
            session_id text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL,
            envelope_id text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (session_id, key))""",
        "CREATE INDEX dedup_by_seq ON dedup (session_id, seq)",
        """CREATE TABLE snapshots (
            session_id text COLLATE "C" PRIMARY KEY, seq bigint NOT NULL, state text NOT NULL)""",
        """CREATE TABLE tasks (
            ord bigint GENERATED ALWAYS AS IDENTITY,
            task_id text COLLATE "C" PRIMARY KEY, metadata text NOT NULL)""",
        'CREATE TABLE checkpoints (task_id text COLLATE "C" PRIMARY KEY, data text NOT NULL)',
        """CREATE TABLE cursors (
            agent_id text COLLATE "C" NOT NULL, session_id text COLLATE "C" NOT NULL,
            seq bigint NOT NULL, PRIMARY KEY (agent_id, session_id))""",
        """CREATE TABLE kv (
            namespace text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL,
            value text NOT NULL, PRIMARY KEY (namespace, key))""",
        # Ids 1, 2, 3, … with no gap (the writer numbers them), so ``id > since`` pages.
        "CREATE TABLE audit (id bigint PRIMARY KEY, record text NOT NULL)",
    ),
    (
        # The change feed (Store rules): the counter (its row lock, held to the commit,
        # hands out values in commit order), the change that last wrote each agent and
        # task, and a tombstone per deleted agent. Rows from before v2 have change 0.
        """CREATE TABLE changes (
            id int PRIMARY KEY CHECK (id = 1), version bigint NOT NULL)""",
        "INSERT INTO changes VALUES (1, 0)",
        "ALTER TABLE agents ADD COLUMN version bigint NOT NULL DEFAULT 0",
        "CREATE INDEX agents_by_version ON agents (version)",
        """CREATE TABLE removed_agents (
            agent_id text COLLATE "C" PRIMARY KEY, version bigint NOT NULL)""",
        "CREATE INDEX removed_agents_by_version ON removed_agents (version)",
        "ALTER TABLE tasks ADD COLUMN version bigint NOT NULL DEFAULT 0",
        "CREATE INDEX tasks_by_version ON tasks (version)",
        # Whether the task is terminal: a conditional update (save_open_task) checks it.
        "ALTER TABLE tasks ADD COLUMN done boolean NOT NULL DEFAULT false",
        """UPDATE tasks SET done = (metadata::jsonb ->> 'state')
            IN ('completed', 'failed', 'cancelled', 'expired')""",
    ),
)

#: The version this troupe writes; it opens this and every older one.
SCHEMA_VERSION: Final = len(MIGRATIONS)

_UPSERT_AGENT = """
    INSERT INTO agents (agent_id, name, passport, resume, rule, skill_md, version)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (agent_id) DO UPDATE SET name = excluded.name, passport = excluded.passport,
        resume = excluded.resume, rule = excluded.rule, skill_md = excluded.skill_md,
        version = excluded.version"""
_UPSERT_SESSION = """
    INSERT INTO sessions (session_id, metadata) VALUES (%s, %s)
    ON CONFLICT (session_id) DO UPDATE SET metadata = excluded.metadata"""
_UPSERT_CURSORS = """
    INSERT INTO cursors (agent_id, session_id, seq)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])
    ON CONFLICT (agent_id, session_id) DO UPDATE SET seq = greatest(cursors.seq, excluded.seq)"""
_UPSERT_SNAPSHOT = """
    INSERT INTO snapshots (session_id, seq, state) VALUES (%s, %s, %s)
    ON CONFLICT (session_id) DO UPDATE SET seq = excluded.seq, state = excluded.state"""
_UPSERT_CHECKPOINT = """
    INSERT INTO checkpoints (task_id, data) VALUES (%s, %s)
    ON CONFLICT (task_id) DO UPDATE SET data = excluded.data"""
_UPSERT_KV = """
    INSERT INTO kv (namespace, key, value) VALUES (%s, %s, %s)
    ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value"""
# The WAL's end, and the envelopes and their dedup keys inserted only where they continue it
# (every part of the statement sees the WAL as it was before it). The first envelope under a
# dedup key is the original; later ones never replace it.
_APPEND = """
    WITH last AS (SELECT coalesce(max(seq), 0) AS seq FROM wal WHERE session_id = %s),
    envelopes AS (
        INSERT INTO wal (session_id, seq, envelope_id, idempotency_key, envelope, crc)
        SELECT %s, u.* FROM last, unnest(
            %s::bigint[], %s::text[], %s::text[], %s::bytea[], %s::bigint[]) AS u
        WHERE last.seq = %s),
    keys AS (
        INSERT INTO dedup (session_id, key, envelope_id, seq)
        SELECT %s, u.* FROM last, unnest(%s::text[], %s::text[], %s::bigint[]) AS u
        WHERE last.seq = %s
        ON CONFLICT DO NOTHING)
    SELECT seq FROM last"""
_INSERT_AUDIT = """
    INSERT INTO audit (id, record)
    SELECT (SELECT coalesce(max(id), 0) FROM audit) + n, record
    FROM unnest(%s::text[]) WITH ORDINALITY AS t (record, n)"""
# The holder of a session advisory lock on a bigint key (pg_locks splits it in two halves).
_LOCK_HOLDER = """
    SELECT a.pid, a.application_name, a.client_addr, a.backend_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = ((%(key)s >> 32) & 4294967295)::bigint::oid
      AND l.objid = (%(key)s & 4294967295)::bigint::oid"""


class _Transient(Exception):
    """A failure a new attempt may cure; nothing of the attempt was written."""


def _redact(dsn: str) -> str:
    """``dsn`` without its password, for messages and ``repr``."""
    dsn = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


def _driver() -> Any:
    """psycopg, imported now (``import troupe`` never imports it)."""
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(
            "PostgresStore needs psycopg 3: pip install 'trio-troupe[postgres]'"
        ) from exc
    return psycopg


def _is_lost(conn: Connection) -> bool:
    return bool(conn.broken or conn.closed)


#: SQLSTATEs of a transaction the server rolled back that may well pass when run again.
RETRIED_SQLSTATES: Final = frozenset({"40001", "40P01"})  # serialization failure, deadlock


def _is_transient(exc: BaseException, conn: Connection) -> bool:
    """Whether ``exc`` is a failure of the attempt, not of one write: retry it all."""
    return _is_lost(conn) or getattr(exc, "sqlstate", None) in RETRIED_SQLSTATES


def _lock_key(schema: str) -> str:
    # hashtextextended: a stable 64-bit hash, computed by the server (same on every node).
    return f"hashtextextended('troupe-store:{schema}', 0)"


class PostgresStore(SQLStore["Connection"]):
    """A store in a PostgreSQL schema; see the module rules and the README's "Storage".

    Args:
      dsn: a libpq connection string or URL, ``postgresql://USER@HOST:PORT/DB``.
      schema: the PostgreSQL schema holding the store's tables (created on first open);
        lower-case letters, digits and ``_``, at most 63.
      threaded: run each database call in a worker thread (the default), so the trio loop
        keeps running; ``False`` runs them on the trio thread, which deterministic
        virtual-time runs need.
      readers: connections for reads at most (opened as reads need them).
      exclusive: hold the schema's advisory lock while open, so a second hub is refused
        (:class:`StoreLocked`); a cluster of nodes turns it off and fences instead.
      fence: checked inside every session write's transaction (module rules); raising
        refuses that write and nothing of it is written.

    Raises:
      ValueError: a schema name that is not a plain lower-case identifier, or ``readers``
        below 1.
    """

    PARAM = "%s"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "troupe",
        threaded: bool = True,
        readers: int = READERS,
        exclusive: bool = True,
        fence: Fence | None = None,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema) or schema.startswith("pg_"):
            raise ValueError(
                f"schema must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63, not "
                f"pg_…), got {schema!r}"
            )
        if readers < 1:
            raise ValueError(f"readers must be at least 1, got {readers!r}")
        self.dsn = dsn
        self.schema = schema
        self.threaded = threaded
        self.readers = readers
        self.exclusive = exclusive
        self.fence = fence
        self._name = f"PostgresStore({_redact(dsn)!r}, schema={schema!r})"
        self._entered = False
        self._stack: contextlib.AsyncExitStack | None = None
        self._writer: GroupCommitWriter[Connection] | None = None
        self._batches: _PostgresBatches | None = None
        self._idle: list[Connection] = []
        self._reading: trio.Semaphore | None = None

    # -- connections ---------------------------------------------------------------------------

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking database call in a worker thread, or inline (``threaded=False``)."""
        if self.threaded:
            return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))
        await trio.lowlevel.checkpoint()
        return fn(*args, **kwargs)

    def connect(self) -> Connection:
        """A new autocommit connection with the store's settings (blocking).

        Raises:
          _Transient: the server cannot be reached (now).
          StoreError: ``dsn`` is not a connection string.
        """
        psycopg = _driver()
        try:
            params = psycopg.conninfo.conninfo_to_dict(self.dsn)
        except psycopg.Error as exc:
            raise StoreError(f"{self._name}: not a PostgreSQL connection string: {exc}") from exc
        settings = {key: value for key, value in KEEPALIVES.items() if key not in params}
        # Names this process to whoever looks (pg_stat_activity, a refused second store).
        settings.setdefault("application_name", f"troupe pid {os.getpid()} on {_HOST}"[:63])
        # Ours first: a ``-c`` the DSN's own options repeat comes later and wins.
        ours = (
            f"-c statement_timeout={STATEMENT_TIMEOUT_MS} "
            f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS} "
            f"-c search_path={self.schema}"
        )
        options = f"{ours} {params.get('options', '')}".strip()
        try:
            conninfo = psycopg.conninfo.make_conninfo(self.dsn, options=options, **settings)
            conn: Connection = psycopg.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            raise _Transient(f"cannot connect to PostgreSQL: {exc}") from exc
        return conn

    async def _retrying(self, what: str, attempt: Callable[[], Any]) -> Any:
        """Run ``attempt`` (blocking) until it does not raise :class:`_Transient`, within
        :data:`RETRY_ATTEMPTS` and :data:`RETRY_WITHIN_S`.

        Raises:
          StoreError: every attempt failed transiently, or the time ran out.
        """
        last: _Transient | None = None
        with trio.move_on_after(RETRY_WITHIN_S):
            try:
                async for retry in AsyncRetrying(
                    sleep=trio.sleep,
                    stop=stop_after_attempt(RETRY_ATTEMPTS),
                    wait=wait_random_exponential(multiplier=0.05, max=1.0),
                    retry=retry_if_exception_type(_Transient),
                    reraise=True,
                ):
                    with retry:
                        try:
                            return await self._call(attempt)
                        except _Transient as exc:
                            last = exc
                            raise
            except _Transient as exc:
                raise StoreError(f"{self._name}: {what}: {exc}") from exc.__cause__
        raise StoreError(
            f"{self._name}: {what}: PostgreSQL was not reachable for {RETRY_WITHIN_S} s"
            + (f" ({last})" if last else "")
        )

    # -- opening and closing --------------------------------------------------------------

    async def _open(self) -> None:
        _driver()
        batches = self._batches = _PostgresBatches(self)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._close_connections)
            await self._retrying("cannot open the store", batches.open)
            writer = GroupCommitWriter(batches, name=self._name, max_batch=MAX_BATCH)
            nursery = await stack.enter_async_context(trio.open_nursery())
            await nursery.start(run_shielded, writer)
            stack.callback(writer.close)
            self._stack = stack.pop_all()
        self._reading = trio.Semaphore(self.readers)
        self._writer, self._batches = writer, batches

    async def _close_connections(self) -> None:
        conns, self._idle = self._idle, []
        if self._batches is not None and self._batches.conn is not None:
            conns.append(self._batches.conn)
            # Released now, not when the server gets round to ending the closed
            # connection's backend: a hub restarted at once must not find its own old lock.
            await self._call(self._batches.unlock)
            self._batches.conn = None
        for conn in conns:
            await self._call(conn.close)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._writer = None
        self._entered = False
        if stack is not None:
            await stack.aclose()
        self._batches = self._reading = None

    # -- the two paths: writes and reads ----------------------------------------------------

    async def _write(self, write: Callable[[Connection], None]) -> None:
        if self._writer is None:
            raise StoreError(f"{self._name} is not open; use it inside 'async with store:'")
        await self._writer.submit(write)

    async def _query(self, sql: str, *params: Any, binary: bool = False) -> list[Any]:
        """The rows of one read, on a reader connection (retried when transient)."""
        if self._reading is None:
            await trio.lowlevel.checkpoint()
            raise StoreError(f"{self._name} is not open; use it inside 'async with store:'")
        async with self._reading:
            conn = self._idle.pop() if self._idle else None

            def attempt() -> list[Any]:
                nonlocal conn
                psycopg = _driver()
                if conn is None or _is_lost(conn):
                    conn = self.connect()
                try:
                    with conn.cursor(binary=binary) as cursor:
                        return cursor.execute(sql, params).fetchall()
                except psycopg.Error as exc:
                    if _is_transient(exc, conn):
                        raise _Transient(str(exc)) from exc
                    raise StoreError(f"{self._name}: {exc}") from exc

            try:
                rows: list[Any] = await self._retrying("read failed", attempt)
            finally:
                if conn is not None and not _is_lost(conn):
                    if self._stack is None:  # closed meanwhile
                        await self._call(conn.close)
                    else:
                        self._idle.append(conn)
            return rows

    def _fenced(self, conn: Connection, session_id: str) -> None:
        if self.fence is not None:
            self.fence(conn, session_id)

    # -- registry ----------------------------------------------------------------------------

    async def save_agent(self, record: AgentRecord) -> None:
        agent_id = agent_id_of(record)
        name = record.passport.name
        row = (
            agent_id,
            name,
            record_text(record.passport),
            record_text(record.resume),
            record_text(record.rule),
            record.skill_md,
        )

        def write(conn: Connection) -> None:
            psycopg = _driver()
            # The counter first: its row lock orders this write among the others'.
            version = self._next_change(conn)
            try:
                conn.execute(_UPSERT_AGENT, (*row, version))
            except psycopg.errors.UniqueViolation:
                # The upsert settles a clash of agent_id, so only the name's is left: a
                # holder committed before (or raced this one and won).
                conn.execute("ROLLBACK TO write")
                holder = conn.execute(
                    "SELECT agent_id FROM agents WHERE name = %s", (name,)
                ).fetchone()
                raise NameTaken(
                    f"{self._name}: agent name {name!r} is already held by agent "
                    f"{holder[0] if holder else '(unknown)'!r}; names are unique",
                    name=name,
                    holder=holder[0] if holder else "",
                ) from None
            conn.execute(self.SQL["unmark_removed"], (agent_id,))
            self._set_capabilities(conn, agent_id, record.resume)

        await self._write(write)

    @staticmethod
    def _set_capabilities(conn: Connection, agent_id: str, resume: Resume) -> None:
        conn.execute("DELETE FROM capabilities WHERE agent_id = %s", (agent_id,))
        capabilities = sorted(resume.capabilities())
        if capabilities:
            conn.execute(
                "INSERT INTO capabilities (capability, agent_id) SELECT unnest(%s::text[]), %s",
                (capabilities, agent_id),
            )

    async def load_agents(self) -> list[AgentRecord]:
        rows = await self._query("SELECT passport, resume, rule, skill_md FROM agents ORDER BY ord")
        return agent_records(rows)

    async def agents_with_capability(self, capability: str) -> list[str]:
        rows = await self._query(
            "SELECT agent_id FROM capabilities WHERE capability = %s ORDER BY agent_id",
            capability,
        )
        return [agent_id for (agent_id,) in rows]

    # -- sessions and the WAL --------------------------------------------------------------

    async def save_session(self, metadata: SessionMetadata) -> None:
        session_id, row = metadata.session_id, (metadata.session_id, record_text(metadata))

        def write(conn: Connection) -> None:
            self._fenced(conn, session_id)
            conn.execute(_UPSERT_SESSION, row)

        await self._write(write)

    async def load_sessions(self) -> list[SessionMetadata]:
        rows = await self._query("SELECT metadata FROM sessions ORDER BY ord")
        return records_of(rows, SessionMetadata)

    async def get_session(self, session_id: str) -> SessionMetadata | None:
        rows = await self._query("SELECT metadata FROM sessions WHERE session_id = %s", session_id)
        return first_record(rows, SessionMetadata)

    async def append(
        self,
        session_id: str,
        envelopes: Sequence[Envelope],
        *,
        metadata: SessionMetadata | None = None,
    ) -> None:
        # Check and encode on the caller's side: a bad batch fails here, before it joins a
        # batch of writes. Whether it continues the WAL is the server's to say (below).
        after = envelopes[0].seq - 1 if envelopes else 0
        check_append(session_id, after, envelopes, metadata)
        columns: tuple[list[Any], ...] = ([], [], [], [], [])
        for e in envelopes:
            data = dumps(e)
            row = (e.seq, e.envelope_id, e.idempotency_key, data, zlib.crc32(data))
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        dedup: tuple[list[Any], ...] = ([], [], [])
        for e in envelopes:
            key = answer_key(e)
            if key is not None:
                dedup[0].append(key)
                dedup[1].append(e.envelope_id)
                dedup[2].append(e.seq)
        params = (session_id, session_id, *columns, after, session_id, *dedup, after)
        meta_row = None if metadata is None else (metadata.session_id, record_text(metadata))

        def write(conn: Connection) -> None:
            psycopg = _driver()
            self._fenced(conn, session_id)
            if envelopes:
                try:
                    # One round trip: reads the WAL's end (earlier writes of this batch
                    # count) and inserts only where the envelopes continue it.
                    row = conn.execute(_APPEND, params).fetchone()
                except psycopg.errors.UniqueViolation as exc:
                    conn.execute("ROLLBACK TO write")
                    raise self._clash(conn, session_id, envelopes, exc) from None
                last = row[0] if row is not None else 0
                if last != after:
                    check_append(session_id, last, envelopes, metadata)
            if meta_row is not None:
                conn.execute(_UPSERT_SESSION, meta_row)

        await self._write(write)

    def _clash(
        self, conn: Connection, session_id: str, envelopes: Sequence[Envelope], exc: Any
    ) -> StoreError:
        """What a unique violation of an append means: a key taken, or a seq another writer
        (a second node, not fenced off) appended first."""
        keys = [e.idempotency_key for e in envelopes if e.idempotency_key is not None]
        taken = conn.execute(
            "SELECT idempotency_key FROM wal WHERE session_id = %s "
            "AND idempotency_key = ANY(%s) ORDER BY seq LIMIT 1",
            (session_id, keys),
        ).fetchone()
        if taken is not None:
            return DuplicateKey(session_id, taken[0])
        return StoreError(
            f"{self._name}: session {session_id!r}: seq {envelopes[0].seq} was appended by "
            f"another writer meanwhile; nothing of this append was written ({exc})"
        )

    async def read(
        self, session_id: str, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        # Binary: the envelope arrives as the very bytes its checksum was taken of.
        if until is None:
            rows = await self._query(
                "SELECT seq, crc, envelope FROM wal WHERE session_id = %s AND seq > %s "
                "ORDER BY seq",
                session_id,
                since,
                binary=True,
            )
        else:
            rows = await self._query(
                "SELECT seq, crc, envelope FROM wal WHERE session_id = %s AND seq > %s "
                "AND seq <= %s ORDER BY seq",
                session_id,
                since,
                until,
                binary=True,
            )
        return checked(session_id, rows)

    async def last_seq(self, session_id: str) -> int:
        rows = await self._query(
            "SELECT coalesce(max(seq), 0) FROM wal WHERE session_id = %s", session_id
        )
        last: int = rows[0][0]
        return last

    async def find_idempotent(self, session_id: str, key: str) -> Envelope | None:
        rows = await self._query(
            "SELECT seq, crc, envelope FROM wal WHERE session_id = %s AND idempotency_key = %s",
            session_id,
            key,
            binary=True,
        )
        return checked(session_id, rows)[0] if rows else None

    async def find_dedup(self, session_id: str, keys: Sequence[str]) -> tuple[str, int] | None:
        if not keys:
            await trio.lowlevel.checkpoint()
            return None
        # Idempotency keys from the WAL's index of them; answer keys from the dedup table.
        idempotency = idempotency_keys_among(keys)
        rows = await self._query(
            "SELECT key, envelope_id, seq FROM dedup WHERE session_id = %s AND key = ANY(%s) "
            f"UNION ALL SELECT {KEYED}, envelope_id, seq FROM wal "
            "WHERE session_id = %s AND idempotency_key = ANY(%s)",
            session_id,
            list(keys),
            session_id,
            idempotency,
        )
        return first_found(rows, keys)

    async def find_answer(
        self, session_id: str, sender_id: str, causation_id: str
    ) -> tuple[str, int] | None:
        # A range of the primary key ("C" collation: code-point order).
        low, high = answer_range(sender_id, causation_id)
        rows = await self._query(
            "SELECT envelope_id, seq FROM dedup WHERE session_id = %s AND key >= %s "
            "AND key < %s ORDER BY seq LIMIT 1",
            session_id,
            low,
            high,
        )
        return first_row_pair(rows)

    async def recent_dedup(self, session_id: str, limit: int) -> list[tuple[str, str, int]]:
        rows = await self._query(
            "SELECT key, envelope_id, seq FROM dedup WHERE session_id = %s "
            "ORDER BY seq DESC LIMIT %s",
            session_id,
            max(limit, 0),
        )
        return oldest_first(rows)

    async def save_snapshot(self, session_id: str, seq: int, state: Any) -> None:
        row = (session_id, seq, json_text(state, f"snapshot of {session_id!r}"))

        def write(conn: Connection) -> None:
            self._fenced(conn, session_id)
            conn.execute(_UPSERT_SNAPSHOT, row)

        await self._write(write)

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        rows = await self._query(
            "SELECT seq, state FROM snapshots WHERE session_id = %s", session_id
        )
        return snapshot_of(rows)

    # -- tasks -----------------------------------------------------------------------------

    async def load_tasks(self) -> list[TaskMetadata]:
        rows = await self._query("SELECT metadata FROM tasks ORDER BY ord")
        return records_of(rows, TaskMetadata)

    async def save_checkpoint(self, task_id: str, data: dict[str, Any]) -> None:
        row = (task_id, json_text(data, f"checkpoint of task {task_id!r}"))
        await self._write(execute(_UPSERT_CHECKPOINT, row))

    async def load_checkpoint(self, task_id: str) -> dict[str, Any] | None:
        rows = await self._query("SELECT data FROM checkpoints WHERE task_id = %s", task_id)
        data: dict[str, Any] | None = json_of(rows)
        return data

    # -- delivery cursors ------------------------------------------------------------------

    async def save_cursors(self, cursors: Sequence[tuple[str, str, int]]) -> None:
        # One row per cursor (an upsert may not touch a row twice), at its highest seq.
        highest: dict[tuple[str, str], int] = {}
        for agent_id, session_id, seq in cursors:
            key = (agent_id, session_id)
            highest[key] = max(seq, highest.get(key, seq))
        if not highest:
            await trio.lowlevel.checkpoint()
            return
        agents = [agent_id for agent_id, _ in highest]
        sessions = [session_id for _, session_id in highest]
        await self._write(execute(_UPSERT_CURSORS, (agents, sessions, list(highest.values()))))

    async def load_cursors(self, agent_id: str) -> dict[str, int]:
        rows = await self._query(
            "SELECT session_id, seq FROM cursors WHERE agent_id = %s", agent_id
        )
        return dict(rows)

    # -- small keyed records ---------------------------------------------------------------

    async def put_kv(self, namespace: str, key: str, value: Any) -> None:
        row = (namespace, key, json_text(value, f"kv value {namespace!r}/{key!r}"))
        await self._write(execute(_UPSERT_KV, row))

    async def load_kv(self, namespace: str) -> dict[str, Any]:
        rows = await self._query(
            "SELECT key, value FROM kv WHERE namespace = %s ORDER BY key", namespace
        )
        return json_map(rows)

    async def delete_kv(self, namespace: str, key: str | None = None) -> None:
        if key is None:
            await self._write(execute("DELETE FROM kv WHERE namespace = %s", (namespace,)))
        else:
            sql = "DELETE FROM kv WHERE namespace = %s AND key = %s"
            await self._write(execute(sql, (namespace, key)))

    # -- audit -----------------------------------------------------------------------------

    async def append_audit(self, records: Sequence[dict[str, Any]]) -> None:
        check_audit(records)
        texts = [json_text(record, "audit record") for record in records]
        if texts:
            await self._write(execute(_INSERT_AUDIT, (texts,)))
        else:
            await trio.lowlevel.checkpoint()

    async def read_audit(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        check_window(since, limit)
        rows = await self._query(
            "SELECT record FROM audit WHERE id > %s ORDER BY id LIMIT %s", since, limit
        )
        return json_list(rows)


class _PostgresBatches:
    """PostgreSQL's :class:`~troupe.store._writer.BatchEngine`, on the store's write
    connection: retries a batch that failed transiently, on a new connection."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.conn: Connection | None = None
        # Backends of write connections this store lost: the server may not have noticed
        # yet (it can take its TCP keepalive time, hours by default), and one may still hold
        # the store's lock. Ours to end.
        self._stale: set[int] = set()
        self._backend = 0  # the write connection's backend pid (0: none yet)

    def open(self) -> None:
        """Connect, create or migrate the schema, take the lock (blocking)."""
        conn = self._connection()
        migrated = False
        try:
            _migrate(conn, self.store.schema)
            migrated = True
        finally:
            if not migrated:  # whatever stopped it: give the lock and the connection back
                self.unlock()
                self.conn = None
                conn.close()

    def _connection(self) -> Connection:
        """The write connection, connected again (and the lock won again) when lost."""
        if self.conn is not None and not _is_lost(self.conn):
            return self.conn
        if self.conn is not None:
            self._drop(self.conn)
        conn = self.store.connect()
        locked = False
        try:
            if self.store.exclusive:
                self._lock(conn)
            locked = True
        finally:
            if not locked:  # whatever stopped it: the connection is not kept
                conn.close()
        self.conn, self._backend = conn, conn.info.backend_pid
        return conn

    def _drop(self, conn: Connection) -> None:
        """Forget a lost write connection, remembering its backend (see ``_stale``)."""
        psycopg = _driver()
        if self._backend:
            self._stale.add(self._backend)
        self.conn, self._backend = None, 0
        with contextlib.suppress(psycopg.Error):
            conn.close()

    def unlock(self) -> None:
        """Release the store's lock on the write connection, if it holds it (blocking)."""
        psycopg = _driver()
        if self.store.exclusive and self.conn is not None and not _is_lost(self.conn):
            with contextlib.suppress(psycopg.Error):  # a lost connection released it anyway
                self.conn.execute(f"SELECT pg_advisory_unlock({_lock_key(self.store.schema)})")

    def _lock(self, conn: Connection) -> None:
        psycopg = _driver()
        key = _lock_key(self.store.schema)
        try:
            row = conn.execute(f"SELECT pg_try_advisory_lock({key}), {key}").fetchone()
            assert row is not None
            if row[0]:
                self._stale.clear()
                return
            holder = conn.execute(_LOCK_HOLDER, {"key": row[1]}).fetchone()
            if holder is not None and holder[0] in self._stale:
                # Our own lost connection, still alive on the server: end it, try again.
                conn.execute("SELECT pg_terminate_backend(%s)", (holder[0],))
        except psycopg.Error as exc:
            raise _Transient(f"cannot lock the store: {exc}") from exc
        if holder is None:
            raise _Transient("the store's lock was released while we looked")
        pid, application, address, since = holder
        if pid in self._stale:
            raise _Transient(
                f"the store's lock is still held by this store's lost connection (backend "
                f"pid {pid}); ended it"
            )
        who = (
            f"PostgreSQL backend pid {pid} ({application or 'no application name'}, from "
            f"{address or 'a local socket'}, connected since {since:%Y-%m-%dT%H:%M:%S%z})"
        )
        raise StoreLocked(
            f"{self.store!r} is already open for writing by {who}; a store has one hub"
        )

    async def commit(self, batch: Sequence[Pending[Connection]]) -> None:
        await self.store._retrying("commit failed, nothing written", lambda: self._attempt(batch))

    def _attempt(self, batch: Sequence[Pending[Connection]]) -> None:
        """One try at the batch (blocking): committed, or raises.

        Raises:
          _Transient: nothing was written and a new attempt may do better.
          StoreError: the batch failed for good, or its outcome is unknown.
        """
        psycopg = _driver()
        name = repr(self.store)
        conn = self._connection()
        committing = False
        try:
            conn.execute("BEGIN")
            run_in_savepoints(
                conn,
                batch,
                name,
                psycopg.Error,
                passes_through=lambda exc: _is_transient(exc, conn),
                joined=True,
            )
            committing = True
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            if _is_lost(conn):
                self._drop(conn)
                if committing:
                    raise StoreError(
                        f"{name}: the connection was lost while committing; whether this "
                        f"batch was written is unknown (read it back to find out): {exc}"
                    ) from exc
                raise _Transient(f"connection lost: {exc}") from exc
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            if exc.sqlstate in RETRIED_SQLSTATES:
                raise _Transient(str(exc)) from exc
            raise StoreError(f"{name}: commit failed, nothing written: {exc}") from exc


def _migrate(conn: Connection, schema: str) -> None:
    """Create the store in ``schema``, or migrate it to :data:`SCHEMA_VERSION` (blocking).

    Raises:
      IncompatibleStore: the schema holds other tables, or a store of a newer version.
      _Transient: the connection failed meanwhile.
    """
    psycopg = _driver()
    try:
        with conn.transaction():
            # Two nodes opening a new database at once: one creates, the other waits and sees.
            conn.execute(
                f"SELECT pg_advisory_xact_lock(hashtextextended('troupe-schema:{schema}', 0))"
            )
            # Only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database
            # even when the schema exists, and a hub's role need not have it.
            exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            if exists.fetchone() is None:
                conn.execute(f"CREATE SCHEMA {schema}")
            tables = [
                name
                for (name,) in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
                )
            ]
            version = 0
            if tables:
                version = _version_of(conn, schema, tables)
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(
                    "UPDATE troupe_meta SET value = %s WHERE key = 'version'",
                    (str(SCHEMA_VERSION),),
                )
    except psycopg.Error as exc:
        if _is_lost(conn):
            raise _Transient(f"connection lost while opening the store: {exc}") from exc
        raise StoreError(f"cannot open the store in schema {schema!r}: {exc}") from exc


def _version_of(conn: Connection, schema: str, tables: list[str]) -> int:
    marker = None
    if "troupe_meta" in tables:
        rows = dict(conn.execute("SELECT key, value FROM troupe_meta").fetchall())
        marker = rows.get("magic")
    if marker != MAGIC:
        raise IncompatibleStore(
            f"PostgreSQL schema {schema!r} is not a troupe store (it holds tables without the "
            f"troupe marker: {', '.join(tables)})"
        )
    version = int(rows.get("version", "0"))
    if version > SCHEMA_VERSION:
        raise IncompatibleStore(
            f"PostgreSQL schema {schema!r} was written by a newer troupe (schema {version}; "
            f"this troupe reads schemas up to {SCHEMA_VERSION}); upgrade troupe to open it"
        )
    return version
