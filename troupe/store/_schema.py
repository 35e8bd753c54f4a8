"""The SQLite store's file: recognising it, creating it, and migrating it on open.

Rules:

- A troupe store is an SQLite database with a ``troupe_meta`` table whose ``magic`` row is
  :data:`MAGIC`; its schema version is ``PRAGMA user_version``.
- Nothing is written to a file until it is known to be a troupe store of this or an older
  schema: a text file, an empty file (a store truncated to nothing is not a new store),
  someone else's database, or a store from a newer troupe raises :class:`IncompatibleStore`
  naming the file, and the file is left as it was.
- A missing file is created whole: built under a temporary name, then renamed into place,
  so a crash while creating never leaves an empty or half-made store at ``path``.
- Migration step ``n`` takes version ``n`` to ``n + 1``; all pending steps run in one
  transaction with the new ``user_version``: a crash mid-migration leaves the old version.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Final

from .._errors import IncompatibleStore, StoreError

MAGIC: Final = "troupe-store"
SQLITE_HEADER: Final = b"SQLite format 3\x00"

#: ``MIGRATIONS[n]`` upgrades schema version ``n`` to ``n + 1``.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE troupe_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
        f"INSERT INTO troupe_meta VALUES ('magic', '{MAGIC}')",
        # rowid order is registration / creation order; upserts keep the rowid.
        """CREATE TABLE agents (
            agent_id TEXT NOT NULL UNIQUE, passport TEXT NOT NULL, resume TEXT NOT NULL,
            rule TEXT NOT NULL, skill_md TEXT)""",
        """CREATE TABLE capabilities (
            capability TEXT NOT NULL, agent_id TEXT NOT NULL,
            PRIMARY KEY (capability, agent_id)) WITHOUT ROWID""",
        "CREATE INDEX capabilities_by_agent ON capabilities (agent_id)",
        "CREATE TABLE sessions (session_id TEXT NOT NULL UNIQUE, metadata TEXT NOT NULL)",
        """CREATE TABLE wal (
            session_id TEXT NOT NULL, seq INTEGER NOT NULL, envelope_id TEXT NOT NULL,
            idempotency_key TEXT, envelope TEXT NOT NULL,
            PRIMARY KEY (session_id, seq)) WITHOUT ROWID""",
        """CREATE UNIQUE INDEX wal_idempotency ON wal (session_id, idempotency_key)
            WHERE idempotency_key IS NOT NULL""",
        # Every answer_key() of every accepted envelope: what a session refuses to repeat
        # besides its idempotency keys (which the WAL's unique index keeps; before, they
        # were written here too, and are still read from here in such a store).
        """CREATE TABLE dedup (
            session_id TEXT NOT NULL, key TEXT NOT NULL, envelope_id TEXT NOT NULL,
            seq INTEGER NOT NULL, PRIMARY KEY (session_id, key)) WITHOUT ROWID""",
        """CREATE TABLE snapshots (
            session_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, state TEXT NOT NULL)""",
        "CREATE TABLE tasks (task_id TEXT NOT NULL UNIQUE, metadata TEXT NOT NULL)",
        "CREATE TABLE checkpoints (task_id TEXT PRIMARY KEY, data TEXT NOT NULL)",
        """CREATE TABLE cursors (
            agent_id TEXT NOT NULL, session_id TEXT NOT NULL, seq INTEGER NOT NULL,
            PRIMARY KEY (agent_id, session_id)) WITHOUT ROWID""",
        """CREATE TABLE kv (
            namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            PRIMARY KEY (namespace, key)) WITHOUT ROWID""",
        # No AUTOINCREMENT: ids stay 1, 2, 3, … (rows are never deleted), so ``id > since``
        # pages the log.
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, record TEXT NOT NULL)",
    ),
    (
        # zlib.crc32 of the envelope's stored JSON bytes; NULL for rows written before v2.
        "ALTER TABLE wal ADD COLUMN crc INTEGER",
        # An agent's name, unique: two hubs on one file once registered one name twice.
        # A store that already holds a name twice keeps every row (nothing is lost); only
        # the first row per name gets the column, and ``troupe wal verify`` reports the rest.
        "ALTER TABLE agents ADD COLUMN name TEXT",
        """UPDATE agents SET name = json_extract(passport, '$.name') WHERE rowid IN (
            SELECT min(rowid) FROM agents GROUP BY json_extract(passport, '$.name'))""",
        "CREATE UNIQUE INDEX agents_by_name ON agents (name)",
        # A session's most recent dedup keys without reading them all (its in-memory window).
        "CREATE INDEX dedup_by_seq ON dedup (session_id, seq)",
    ),
    (
        # The change feed (Store rules): the change that last wrote each agent and task, and
        # a tombstone per deleted agent; rows from before v3 have change 0. The counter is
        # the highest of them (a file has one writer: ``SQLiteStore`` counts on from it).
        "ALTER TABLE agents ADD COLUMN version INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX agents_by_version ON agents (version)",
        """CREATE TABLE removed_agents (
            agent_id TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID""",
        "CREATE INDEX removed_agents_by_version ON removed_agents (version)",
        "ALTER TABLE tasks ADD COLUMN version INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX tasks_by_version ON tasks (version)",
        # Whether the task is terminal: a conditional update (save_open_task) checks it.
        "ALTER TABLE tasks ADD COLUMN done INTEGER NOT NULL DEFAULT 0",
        """UPDATE tasks SET done = json_extract(metadata, '$.state')
            IN ('completed', 'failed', 'cancelled', 'expired')""",
    ),
)

#: The version this troupe writes; it opens this and every older one.
SCHEMA_VERSION: Final = len(MIGRATIONS)

SYNCHRONOUS_LEVELS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")


def connect(path: Path, *, synchronous: str, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """Open the store at ``path`` for writing, creating or migrating it first.

    Args:
      path: the store file (created when missing).
      synchronous: the ``PRAGMA synchronous`` level of this connection.
      busy_timeout_ms: how long to wait for another process's write lock.

    Returns:
      A connection in autocommit mode (transactions are explicit), WAL journal mode.

    Raises:
      IncompatibleStore: the file is not a troupe store, or is from a newer schema.
      StoreError: the file cannot be opened at all (a directory, no permission).
    """
    if not _check_header(path):
        _create(path)
    with contextlib.ExitStack() as on_failure:
        try:
            conn = sqlite3.connect(
                path,
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {str(path)!r}: {exc}") from exc
        on_failure.callback(conn.close)
        version = _version_of(conn, path)
        try:
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"store {str(path)!r} cannot use WAL journal mode (got {mode})")
            if version < SCHEMA_VERSION:
                _migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {str(path)!r}: {exc}") from exc
        on_failure.pop_all()
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """A second connection for reads; ``query_only`` makes sure it never writes.

    Raises:
      StoreError: the file cannot be opened.
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {str(path)!r}: {exc}") from exc
    return conn


def open_read_only(path: Path) -> tuple[sqlite3.Connection, int]:
    """A read-only connection to an existing store, and its schema version.

    Takes no lock and never writes, so it works while a hub has the store open.

    Raises:
      IncompatibleStore: the file is not a troupe store, or is from a newer schema.
      StoreError: there is no file at ``path``, or it cannot be opened.
    """
    if not _check_header(path):
        raise StoreError(f"no store at {str(path)!r}")
    conn = connect_reader(path)
    try:
        version = _version_of(conn, path)
    except StoreError:
        conn.close()
        raise
    return conn, version


def _check_header(path: Path) -> bool:
    """Whether ``path`` exists; raise when it exists and is not an SQLite database.

    Refuses a file that is not SQLite before SQLite sees it: nothing may touch it.
    """
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StoreError(f"cannot open store {str(path)!r}: {exc}") from exc
    if not header:
        raise IncompatibleStore(
            f"{str(path)!r} is not a troupe store (an empty file; a new store is created "
            "only where no file exists)"
        )
    if header != SQLITE_HEADER:
        raise IncompatibleStore(f"{str(path)!r} is not a troupe store (not an SQLite database)")
    return True


def _create(path: Path) -> None:
    """Create a store at ``path`` (which does not exist) with the whole current schema."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        conn = sqlite3.connect(temporary, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            _migrate(conn)
        finally:
            conn.close()  # the last connection: checkpoints and removes its -wal file
        with temporary.open("rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except (OSError, sqlite3.Error) as exc:
        for leftover in (temporary, temporary.with_name(temporary.name + "-wal")):
            leftover.unlink(missing_ok=True)
        raise StoreError(f"cannot create store {str(path)!r}: {exc}") from exc


def _version_of(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version, 0 for an empty database; only reads."""
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if not tables and version == 0:
            return 0
        magic = None
        if "troupe_meta" in tables:
            row = conn.execute("SELECT value FROM troupe_meta WHERE key = 'magic'").fetchone()
            magic = row and row[0]
    except sqlite3.OperationalError as exc:
        # Busy or locked by another process: the file may be fine, it is just not ours now.
        raise StoreError(f"cannot open store {str(path)!r}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise IncompatibleStore(f"{str(path)!r} is not a troupe store ({exc})") from exc
    if magic != MAGIC:
        raise IncompatibleStore(
            f"{str(path)!r} is not a troupe store (an SQLite database without the troupe "
            f"marker; tables: {', '.join(sorted(tables))})"
        )
    if version > SCHEMA_VERSION:
        raise IncompatibleStore(
            f"{str(path)!r} was written by a newer troupe (schema {version}; this troupe "
            f"reads schemas up to {SCHEMA_VERSION}); upgrade troupe to open it"
        )
    return version


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated meanwhile.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for step in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.Error:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
