"""``PostgresCoordinator``: shard ownership in PostgreSQL, judged by the server's ``now()``.

Rules:

- The tables live in the store's schema, next to the store's (the store is created there
  first if it is not yet): ``cluster`` (the shard count, fixed when the first node joins),
  ``nodes`` (id, advertised address, heartbeat by ``now()``) and ``shards`` (shard, owner,
  epoch, ``lease_until``).
- ``claim`` locks expired shards with ``FOR UPDATE SKIP LOCKED`` (two nodes claiming at once
  take disjoint shards, and neither waits for the other) and sets ``epoch = epoch + 1``.
- The fence (:meth:`PostgresCoordinator.fence`, for ``PostgresStore(fence=...)``) reads the
  shard's row ``FOR SHARE`` in the write's own transaction: a claim of that shard waits
  for (or skips) the write, and a write after a committed claim sees the new epoch (READ
  COMMITTED: each statement sees what was committed before it began), so no write lands
  under a stale epoch. The connection's ``idle_in_transaction_session_timeout`` bounds how
  long a paused writer can hold that lock.
- Every call is psycopg's sync API in a trio worker thread, on one connection of the
  store's settings (``PostgresStore.connect``), connected again when it was lost; a failed
  call raises :class:`StoreError` and the node's next tick tries again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from .._errors import NotOwner, StoreError
from ..store import PostgresStore
from ..store._postgres import _driver, _is_lost, _migrate, _Transient
from ._coordinator import NodeInfo, ShardInfo
from ._shards import Claims, shard_of

if TYPE_CHECKING:
    from ..store._postgres import Connection

T = TypeVar("T")

_TABLES = (
    'CREATE TABLE IF NOT EXISTS cluster (key text COLLATE "C" PRIMARY KEY, value text NOT NULL)',
    """CREATE TABLE IF NOT EXISTS nodes (
        node_id text COLLATE "C" PRIMARY KEY, address text NOT NULL,
        heartbeat timestamptz NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS shards (
        shard integer PRIMARY KEY, owner text COLLATE "C", epoch bigint NOT NULL DEFAULT 0,
        lease_until timestamptz NOT NULL DEFAULT '-infinity')""",
)
_HEARTBEAT = """
    INSERT INTO nodes (node_id, address, heartbeat) VALUES (%s, %s, now())
    ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, heartbeat = now()"""
_RENEW = """
    UPDATE shards SET lease_until = now() + make_interval(secs => %s)
    WHERE owner = %s AND lease_until > now()"""
CLAIM = """
    WITH free AS (
        SELECT shard FROM shards WHERE lease_until <= now()
        ORDER BY shard LIMIT %s FOR UPDATE SKIP LOCKED)
    UPDATE shards s SET owner = %s, epoch = s.epoch + 1,
        lease_until = now() + make_interval(secs => %s)
    FROM free WHERE s.shard = free.shard"""
_HELD = "SELECT shard, epoch FROM shards WHERE owner = %s AND lease_until > now() ORDER BY shard"
_LIVE = "SELECT count(*) FROM nodes WHERE heartbeat > now() - make_interval(secs => %s)"
_END_LEASES = "UPDATE shards SET lease_until = least(lease_until, now()) WHERE owner = %s"
_RELEASE = """
    UPDATE shards SET lease_until = least(lease_until, now())
    WHERE owner = %s AND shard = ANY(%s)"""
#: The fence's read (module rules).
FENCE = "SELECT owner, epoch, lease_until > now() FROM shards WHERE shard = %s FOR SHARE"


class PostgresCoordinator:
    """The coordinator on PostgreSQL (module rules); enter it before use.

    Args:
      dsn: the store's connection string.
      schema: the store's schema (default ``troupe``).
      create: create the store and the cluster tables if they are missing (a node); False
        (``troupe cluster status``) only looks, and entering raises :class:`StoreError` when
        no node ever joined a cluster in ``schema``.
    """

    def __init__(self, dsn: str, *, schema: str = "troupe", create: bool = True) -> None:
        self._settings = PostgresStore(dsn, schema=schema, exclusive=False)
        self.schema = schema
        self.create = create
        self._conn: Connection | None = None
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return f"PostgresCoordinator({self._settings!r})"

    async def __aenter__(self) -> PostgresCoordinator:
        if self.create:
            await self._run("cannot open the cluster tables", self._create)
            return self
        found = await self._run(
            "cannot read the cluster tables",
            lambda conn: conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f"{self.schema}.shards",)
            ).fetchone(),
        )
        if not (found and found[0]):
            await self.__aexit__(None, None, None)
            raise StoreError(
                f"{self!r}: no cluster in schema {self.schema!r}: no node has joined one "
                "there (is --schema right?)"
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.to_thread.run_sync(conn.close)

    def _create(self, conn: Connection) -> None:
        _migrate(conn, self.schema)
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"troupe-cluster:{self.schema}",),
            )
            for statement in _TABLES:
                conn.execute(statement)

    async def _run(self, what: str, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on the connection in a worker thread, one call at a time."""
        psycopg = _driver()

        def attempt() -> T:
            if self._conn is None or _is_lost(self._conn):
                self._conn = self._settings.connect()
            return fn(self._conn)

        async with self._lock:
            try:
                return await trio.to_thread.run_sync(attempt)
            except (psycopg.Error, _Transient) as exc:
                raise StoreError(f"{self!r}: {what}: {exc}") from exc

    def _claims(self, conn: Connection, node_id: str, lease_s: float) -> Claims:
        held = {shard: epoch for shard, epoch in conn.execute(_HELD, (node_id,)).fetchall()}
        row = conn.execute(_LIVE, (lease_s,)).fetchone()
        return Claims(held, max(int(row[0]) if row else 1, 1))

    # -- the protocol --------------------------------------------------------------------------

    async def join(self, node_id: str, address: str, shards: int) -> None:
        def join(conn: Connection) -> None:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO cluster VALUES ('shards', %s) ON CONFLICT DO NOTHING",
                    (str(shards),),
                )
                row = conn.execute("SELECT value FROM cluster WHERE key = 'shards'").fetchone()
                have = int(row[0]) if row else shards
                if have != shards:
                    raise StoreError(
                        f"node {node_id!r} has {shards} shards, the cluster in schema "
                        f"{self.schema!r} has {have}: a cluster's shard count is fixed when "
                        "it is created"
                    )
                conn.execute(
                    "INSERT INTO shards (shard) SELECT generate_series(0, %s - 1) "
                    "ON CONFLICT DO NOTHING",
                    (shards,),
                )
                conn.execute(_HEARTBEAT, (node_id, address))
                conn.execute(_END_LEASES, (node_id,))  # a new incarnation inherits nothing

        await self._run("cannot join", join)

    async def renew(self, node_id: str, address: str, lease_s: float) -> Claims:
        def renew(conn: Connection) -> Claims:
            with conn.transaction():
                conn.execute(_HEARTBEAT, (node_id, address))
                conn.execute(_RENEW, (lease_s, node_id))
                return self._claims(conn, node_id, lease_s)

        return await self._run("cannot renew", renew)

    async def claim(self, node_id: str, lease_s: float, limit: int) -> Claims:
        def claim(conn: Connection) -> Claims:
            with conn.transaction():
                if limit > 0:
                    conn.execute(CLAIM, (limit, node_id, lease_s))
                return self._claims(conn, node_id, lease_s)

        return await self._run("cannot claim", claim)

    async def release(self, node_id: str, shards: Sequence[int]) -> None:
        await self._run(
            "cannot release", lambda conn: conn.execute(_RELEASE, (node_id, list(shards)))
        )

    async def leave(self, node_id: str) -> None:
        def leave(conn: Connection) -> None:
            with conn.transaction():
                conn.execute(_END_LEASES, (node_id,))
                conn.execute("DELETE FROM nodes WHERE node_id = %s", (node_id,))

        await self._run("cannot leave", leave)

    async def nodes(self) -> list[NodeInfo]:
        rows = await self._run(
            "cannot read the nodes",
            lambda conn: conn.execute(
                """SELECT n.node_id, n.address, extract(epoch FROM now() - n.heartbeat),
                    (SELECT count(*) FROM shards s
                     WHERE s.owner = n.node_id AND s.lease_until > now())
                FROM nodes n ORDER BY n.node_id"""
            ).fetchall(),
        )
        return [NodeInfo(r[0], r[1], float(r[2]), int(r[3])) for r in rows]

    async def shard_map(self) -> list[ShardInfo]:
        rows = await self._run(
            "cannot read the shards",
            lambda conn: conn.execute(
                "SELECT shard, owner, epoch, CASE WHEN isfinite(lease_until) "
                "THEN extract(epoch FROM lease_until - now()) END FROM shards ORDER BY shard"
            ).fetchall(),
        )
        return [
            ShardInfo(r[0], r[1], r[2], -math.inf if r[3] is None else float(r[3])) for r in rows
        ]

    def fence(
        self, node_id: str, shards: int, claimed: Callable[[int], int | None]
    ) -> Callable[[Connection, str], None]:
        """A :class:`PostgresStore` fence for ``node_id`` (module rules): ``claimed(shard)``
        is the epoch the node holds (None: not held); the write is refused with
        :class:`NotOwner` unless the shard's row says the same and its lease runs."""

        def check(conn: Connection, session_id: str) -> None:
            shard = shard_of(session_id, shards)
            epoch = claimed(shard)
            row: Any = conn.execute(FENCE, (shard,)).fetchone()
            owner, current, running = row if row is not None else (None, 0, False)
            if owner != node_id or current != epoch or not running:
                raise NotOwner(
                    f"node {node_id!r} may not write session {session_id!r}: shard {shard} "
                    f"is {owner!r}'s at epoch {current}"
                    f"{'' if running else ' (lease ran out)'} (this node's claim: {epoch})",
                    shard=shard,
                    owner=owner,
                    epoch=current,
                )

        return check
