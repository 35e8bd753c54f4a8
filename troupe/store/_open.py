"""``open_store``: what the hub accepts as a store, turned into one."""

from __future__ import annotations

import os

from ._memory import MemoryStore
from ._postgres import PostgresStore
from ._protocol import Store
from ._sqlite import SQLiteStore

#: How a PostgreSQL DSN starts (libpq's URL schemes); anything else is a file path.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(spec: Store | str | os.PathLike[str] | None) -> Store:
    """The store a hub should use for ``spec`` (not yet entered).

    Args:
      spec: ``None`` for a fresh :class:`MemoryStore`, a ``postgresql://`` URL for a
        :class:`PostgresStore` (schema ``troupe``), a path for an :class:`SQLiteStore` with
        its defaults, or a store, returned as it is.

    Returns:
      A store; the caller enters it with ``async with``.
    """
    if spec is None:
        return MemoryStore()
    if isinstance(spec, str) and spec.startswith(POSTGRES_SCHEMES):
        return PostgresStore(spec)
    if isinstance(spec, str | os.PathLike):
        return SQLiteStore(spec)
    return spec
