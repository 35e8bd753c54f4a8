"""The SQLite store's file: recognising it, creating it, and migrating it on open.

Rules:

- A troupe store is an SQLite database with a ``troupe_meta`` table whose ``magic`` row is
  :data:`MAGIC`; its schema version is ``PRAGMA user_version``.
- Nothing is written to a file until it is known to be a troupe store of this or an older
  schema (or an empty file): a text file, someone else's database, or a store from a newer
  troupe raises :class:`IncompatibleStore` naming the file, and the file is left as it was.
- Migration step ``n`` takes version ``n`` to ``n + 1``; all pending steps run in one
  transaction with the new ``user_version``: a crash mid-migration leaves the old version.
"""

from __future__ import annotations

import contextlib
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
        # Every dedup_keys() key of every accepted envelope: what a session refuses to repeat.
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
)

#: The version this troupe writes; it opens this and every older one.
SCHEMA_VERSION: Final = len(MIGRATIONS)

SYNCHRONOUS_LEVELS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")


def connect(path: Path, *, synchronous: str, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """Open the store at ``path`` for writing, creating or migrating it first.

    Args:
      path: the store file (created when missing or empty).
      synchronous: the ``PRAGMA synchronous`` level of this connection.
      busy_timeout_ms: how long to wait for another process's write lock.

    Returns:
      A connection in autocommit mode (transactions are explicit), WAL journal mode.

    Raises:
      IncompatibleStore: the file is not a troupe store, or is from a newer schema.
      StoreError: the file cannot be opened at all (a directory, no permission).
    """
    _check_header(path)
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


def _check_header(path: Path) -> None:
    # Refuse a file that is not SQLite before SQLite sees it: nothing may touch it.
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot open store {str(path)!r}: {exc}") from exc
    if header and header != SQLITE_HEADER:
        raise IncompatibleStore(f"{str(path)!r} is not a troupe store (not an SQLite database)")


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
