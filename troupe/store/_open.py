"""``open_store``: what the hub accepts as a store, turned into one."""

from __future__ import annotations

import os

from ._memory import MemoryStore
from ._postgres import PostgresStore
from ._protocol import Store
from ._sqlite import SQLiteStore

#: How a PostgreSQL DSN starts (libpq's URL schemes); anything else is a file path.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

#: What a store must have: every method of the :class:`Store` protocol, as it declares them.
STORE_METHODS: tuple[str, ...] = tuple(
    name
    for name, value in vars(Store).items()
    if callable(value) and (not name.startswith("_") or name in ("__aenter__", "__aexit__"))
)


def open_store(spec: Store | str | os.PathLike[str] | None) -> Store:
    """The store a hub should use for ``spec`` (not yet entered).

    Args:
      spec: ``None`` for a fresh :class:`MemoryStore`, a ``postgresql://`` URL for a
        :class:`PostgresStore` (schema ``troupe``), a path for an :class:`SQLiteStore` with
        its defaults, or a store, returned as it is.

    Returns:
      A store; the caller enters it with ``async with``.

    Raises:
      TypeError: ``spec`` is an object without all of the protocol's methods (a store
        written for an older troupe, say): named here, not found missing by an actor
        mid-run.
    """
    if spec is None:
        return MemoryStore()
    if isinstance(spec, str) and spec.startswith(POSTGRES_SCHEMES):
        return PostgresStore(spec)
    if isinstance(spec, str | os.PathLike):
        return SQLiteStore(spec)
    missing = [name for name in STORE_METHODS if not callable(getattr(spec, name, None))]
    if missing:
        raise TypeError(
            f"{type(spec).__name__} is not a troupe Store: it has no {', '.join(missing)} "
            "(see troupe.store.Store for what each does)"
        )
    return spec
