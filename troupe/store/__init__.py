"""Storage: the ``Store`` protocol and its engines (memory and SQLite)."""

from ._memory import MemoryStore as MemoryStore
from ._protocol import AgentRecord as AgentRecord
from ._protocol import Snapshot as Snapshot
from ._protocol import Store as Store
from ._protocol import dedup_keys as dedup_keys

__all__ = ("AgentRecord", "MemoryStore", "Snapshot", "Store", "dedup_keys")
