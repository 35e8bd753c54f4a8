"""Storage: the ``Store`` protocol and its engines (memory, SQLite and PostgreSQL)."""

from ._memory import MemoryStore as MemoryStore
from ._open import open_store as open_store
from ._postgres import PostgresStore as PostgresStore
from ._protocol import AgentRecord as AgentRecord
from ._protocol import Changes as Changes
from ._protocol import Snapshot as Snapshot
from ._protocol import Store as Store
from ._protocol import answer_prefix as answer_prefix
from ._protocol import dedup_keys as dedup_keys
from ._rules import DuplicateKey as DuplicateKey
from ._sqlite import SQLiteStore as SQLiteStore
from ._writer import WriterStatistics as WriterStatistics

__all__ = (
    "AgentRecord",
    "Changes",
    "DuplicateKey",
    "MemoryStore",
    "PostgresStore",
    "SQLiteStore",
    "Snapshot",
    "Store",
    "WriterStatistics",
    "answer_prefix",
    "dedup_keys",
    "open_store",
)
