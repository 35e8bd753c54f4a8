"""``open_store``: what the hub accepts as a store, turned into one."""

from __future__ import annotations

import os

from ._memory import MemoryStore
from ._protocol import Store
from ._sqlite import SQLiteStore


def open_store(spec: Store | str | os.PathLike[str] | None) -> Store:
    """The store a hub should use for ``spec`` (not yet entered).

    Args:
      spec: ``None`` for a fresh :class:`MemoryStore`, a path for an :class:`SQLiteStore`
        with its defaults, or a store, returned as it is.

    Returns:
      A store; the caller enters it with ``async with``.
    """
    if spec is None:
        return MemoryStore()
    if isinstance(spec, str | os.PathLike):
        return SQLiteStore(spec)
    return spec
