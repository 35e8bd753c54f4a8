"""The coordinator protocol, and its in-memory implementation for one-process simulations.

Rules:

- A coordinator is the judge of who owns which shard, by *its* clock (PostgreSQL's
  ``now()``; here an injected clock, trio's by default, so a ``MockClock`` drives it). Each
  call is one atomic step (one transaction in PostgreSQL; no checkpoint between reading and
  writing here).
- ``claim`` takes only shards whose lease ran out (or that nobody ever held), and bumps
  their epoch: a write under the old epoch is fenced off from then on. ``renew`` extends
  only leases that have not run out: a lease that ran out may already be someone else's.
- The fence (``MemoryCoordinator.fence``) runs in the same step as the write it guards: the
  shard's owner and epoch must be this node's claim and its lease must not have run out.
- ``join`` ends the leases the node id still holds: a new incarnation (a restarted
  process) claims its shards again under new epochs, so a zombie of the old one, which
  still believes in the old epochs, is fenced off.
- ``cut(node_id)`` (tests) makes every call from that node fail with :class:`StoreError`,
  as a node cut off from the database sees; ``pause(node_id)`` makes them hang until
  ``resume(node_id)``, as a stalled process or network does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs
import trio

from .._errors import NotOwner, StoreError
from ._shards import Claims, shard_of


@attrs.frozen
class NodeInfo:
    """One node as the coordinator sees it: its address, heartbeat age and shards held."""

    node_id: str
    address: str
    heartbeat_age_s: float
    shards: int


@attrs.frozen
class ShardInfo:
    """One shard: its owner (None: never claimed), epoch and lease left (≤ 0: ran out)."""

    shard: int
    owner: str | None
    epoch: int
    lease_left_s: float


class Coordinator(Protocol):
    """What a cluster node asks of the judge of shard ownership (module rules)."""

    async def join(self, node_id: str, address: str, shards: int) -> None:
        """Register (or re-register) the node, ending the leases its id still holds (a
        new incarnation); create the cluster with ``shards`` shards if there is none yet.

        Raises:
          StoreError: the cluster has another shard count (the message says both).
        """
        ...

    async def renew(self, node_id: str, address: str, lease_s: float) -> Claims:
        """Heartbeat, and extend every lease the node holds that has not run out."""
        ...

    async def claim(self, node_id: str, lease_s: float, limit: int) -> Claims:
        """Claim up to ``limit`` shards whose lease ran out (epoch + 1); what is held then."""
        ...

    async def release(self, node_id: str, shards: Sequence[int]) -> None:
        """End the node's leases on ``shards`` now, so another node may claim them at once."""
        ...

    async def leave(self, node_id: str) -> None:
        """Release every shard the node holds and remove the node."""
        ...

    async def nodes(self) -> list[NodeInfo]:
        """Every registered node, by id."""
        ...

    async def shard_map(self) -> list[ShardInfo]:
        """Every shard, by number."""
        ...


@attrs.define
class _Shard:
    owner: str | None = None
    epoch: int = 0
    lease_until: float = -math.inf


@attrs.define
class _Node:
    address: str
    heartbeat: float


class MemoryCoordinator:
    """A coordinator in this process, on a shared clock (module rules).

    Args:
      clock: the coordinator's clock (default ``trio.current_time``).
    """

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self.clock = clock
        self.shards: list[_Shard] = []
        self._nodes: dict[str, _Node] = {}
        self._cut: set[str] = set()
        self._paused: dict[str, trio.Event] = {}

    def __repr__(self) -> str:
        return f"MemoryCoordinator(shards={len(self.shards)}, nodes={sorted(self._nodes)})"

    # -- faults (tests) ------------------------------------------------------------------------

    def cut(self, node_id: str) -> None:
        """Make every call from ``node_id`` fail (until :meth:`resume`)."""
        self._cut.add(node_id)

    def pause(self, node_id: str) -> None:
        """Make every call from ``node_id`` hang (until :meth:`resume`)."""
        self._paused.setdefault(node_id, trio.Event())

    def resume(self, node_id: str) -> None:
        """Undo :meth:`cut` and :meth:`pause` for ``node_id``."""
        self._cut.discard(node_id)
        paused = self._paused.pop(node_id, None)
        if paused is not None:
            paused.set()

    async def _enter(self, node_id: str | None) -> None:
        await trio.lowlevel.checkpoint()
        while node_id is not None and node_id in self._paused:
            await self._paused[node_id].wait()
        if node_id in self._cut:
            raise StoreError(f"coordinator: node {node_id!r} is cut off")

    # -- the protocol --------------------------------------------------------------------------

    async def join(self, node_id: str, address: str, shards: int) -> None:
        await self._enter(node_id)
        if not self.shards:
            self.shards = [_Shard() for _ in range(shards)]
        elif len(self.shards) != shards:
            raise StoreError(
                f"node {node_id!r} has {shards} shards, the cluster has {len(self.shards)}: "
                "a cluster's shard count is fixed when it is created"
            )
        now = self.clock()
        for s in self.shards:  # a new incarnation inherits nothing (module rules)
            if s.owner == node_id:
                s.lease_until = min(s.lease_until, now)
        self._nodes[node_id] = _Node(address, now)

    def _held(self, node_id: str, live_within: float) -> Claims:
        now = self.clock()
        held = {
            i: s.epoch
            for i, s in enumerate(self.shards)
            if s.owner == node_id and s.lease_until > now
        }
        live = sum(1 for n in self._nodes.values() if now - n.heartbeat < live_within)
        return Claims(held, max(live, 1))

    async def renew(self, node_id: str, address: str, lease_s: float) -> Claims:
        await self._enter(node_id)
        now = self.clock()
        self._nodes[node_id] = _Node(address, now)
        for s in self.shards:
            if s.owner == node_id and s.lease_until > now:
                s.lease_until = now + lease_s
        return self._held(node_id, lease_s)

    async def claim(self, node_id: str, lease_s: float, limit: int) -> Claims:
        await self._enter(node_id)
        now = self.clock()
        for s in self.shards:
            if limit <= 0:
                break
            if s.lease_until <= now:
                s.owner, s.epoch, s.lease_until = node_id, s.epoch + 1, now + lease_s
                limit -= 1
        return self._held(node_id, lease_s)

    async def release(self, node_id: str, shards: Sequence[int]) -> None:
        await self._enter(node_id)
        now = self.clock()
        for i in shards:
            s = self.shards[i]
            if s.owner == node_id:
                s.lease_until = min(s.lease_until, now)

    async def leave(self, node_id: str) -> None:
        await self._enter(node_id)
        now = self.clock()
        for s in self.shards:
            if s.owner == node_id:
                s.lease_until = min(s.lease_until, now)
        self._nodes.pop(node_id, None)

    async def nodes(self) -> list[NodeInfo]:
        await self._enter(None)
        now = self.clock()
        return [
            NodeInfo(
                node_id,
                n.address,
                now - n.heartbeat,
                sum(1 for s in self.shards if s.owner == node_id and s.lease_until > now),
            )
            for node_id, n in sorted(self._nodes.items())
        ]

    async def shard_map(self) -> list[ShardInfo]:
        await self._enter(None)
        now = self.clock()
        return [
            ShardInfo(i, s.owner, s.epoch, s.lease_until - now) for i, s in enumerate(self.shards)
        ]

    def fence(
        self, node_id: str, shards: int, claimed: Callable[[int], int | None]
    ) -> Callable[[str], None]:
        """A :meth:`MemoryStore.view` fence for ``node_id`` in a cluster of ``shards``
        shards: ``claimed(shard)`` is the epoch it holds, or None.

        The fence raises :class:`NotOwner` unless the shard's owner and epoch are the
        node's claim and the lease has not run out (module rules).
        """

        def check(session_id: str) -> None:
            if node_id in self._cut:
                raise StoreError(f"coordinator: node {node_id!r} is cut off")
            shard = shard_of(session_id, shards)
            row = self.shards[shard]
            epoch = claimed(shard)
            if row.owner != node_id or row.epoch != epoch or row.lease_until <= self.clock():
                raise NotOwner(
                    f"node {node_id!r} may not write session {session_id!r}: shard {shard} "
                    f"is {row.owner!r}'s at epoch {row.epoch} (this node's claim: {epoch})",
                    shard=shard,
                    owner=row.owner,
                    epoch=row.epoch,
                )

        return check
