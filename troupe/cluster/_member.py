"""``ClusterMember``: a hub's membership of a cluster, the trio driver of :class:`Ownership`.

Rules:

- ``open_hub(store, cluster=member)`` runs the member in the hub's tree: it joins, then
  ticks every ``tick_s``: renew (heartbeat + leases), claim expired shards up to the fair
  share, let go of a surplus (hysteresis: ``_shards`` rules), read the shard map (for
  ``NotOwner``'s owner) and the nodes (their addresses, and the fewest shards a live node
  holds, so a joiner gets its fair share).
- A watchdog stops serving every shard at the local deadline (``_shards`` rules) when no
  renewal moved it: the hub refuses posts and starts no actor for them, and the fence
  refuses writes, before the lease can run out at the coordinator.
- Losing a shard (deadline, epoch moved, let go) stops its sessions' running actors at
  once; an epoch that moved is handled before the new one is adopted, so an actor of the
  old claim never writes under the new one. Gaining a shard loads the sessions created
  elsewhere into the directory, and each rehydrates from the store on first use (its actor
  reads metadata, snapshot and WAL).
- Leaving the hub's block drains (new posts refused, running sessions passivated with a
  snapshot while the leases still hold), stops serving, then releases every shard
  (``leave``: lease set to now) so other nodes take them at their next tick.
- The registry and the tasks are the shared store's: every tick (a task of its own beside
  the renewals, so a busy hub actor never delays a lease) the member has the hub actor
  apply the store's change feed since its last sync (``SyncRegistry``: agents registered,
  changed or unregistered, tasks saved on other nodes). Between two ticks a miss reads
  through (the hub actor's rules), names are unique by the store's constraint, and a
  task's terminal update is conditional: the first to commit wins.
- With the cluster key (``ClusterConfig.secret``) the member routes (``_routing``): it
  runs a :class:`Router` beside the ticks, which forwards session-scoped requests for
  other nodes' shards to their owner and carries delivery hints to the node holding a
  recipient's connection; each tick's read of the nodes tells it which peers are live.
  Without the key a caller gets :class:`NotOwner` naming the shard and owner, re-reads
  the map and retries there with the same idempotency key.
- What is not here yet (issue 16): a node's lists (``list_agents``, ``list_tasks``) and
  ``agents_with_capability`` learn another node's changes within a tick, not at once; an
  identity bound on two nodes at once is not refused (each node refuses a second binding
  of its own only); a recipient on another node does not count against the owner's inbox
  limits (its holder counts what it delivers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import trio

from .._errors import ActorDead, NotOwner, StoreError
from ._coordinator import Coordinator, NodeInfo
from ._routing import Connector, Router, ws_connector
from ._shards import ClusterConfig, Ownership, shard_of

if TYPE_CHECKING:
    from ..api import Request
    from ..hub import Hub

R = TypeVar("R")

log = logging.getLogger("troupe.cluster")

#: How many session ids ``new_session_id`` draws, at most, to find one in a served shard.
DRAWS_PER_SHARD = 64


class ClusterMember:
    """One node's membership: its config, its coordinator and what it holds (module rules).

    Args:
      config: the node's id, address, shard count and timing.
      coordinator: the judge of ownership shared by every node.
    """

    def __init__(
        self, config: ClusterConfig, coordinator: Coordinator, *, connect: Connector | None = None
    ) -> None:
        self.config = config
        self.coordinator = coordinator
        self.ownership = Ownership(config)
        #: The node's routing (``_routing``): made when the config has the cluster key.
        #: ``connect`` makes its peer links (default: WebSocket to each node's address).
        self.router: Router | None = None
        if config.secret is not None:
            self.router = Router(
                self, config.secret, connect or ws_connector(config.tick_s, config.lease_s)
            )
        #: The nodes whose heartbeat is younger than a lease, as last read.
        self.live: set[str] = set()
        #: shard -> owner as last read (for NotOwner's message); None: nobody or unknown.
        self.owners: dict[int, str | None] = {}
        #: shard -> its epoch as last read (for NotOwner's epoch).
        self.epochs: dict[int, int] = {}
        #: node id -> the address it advertises, as last read (for NotOwner's address).
        self.addresses: dict[str, str] = {}
        #: shard -> until when (trio's clock) its owner's lease runs, as last read.
        self.leases: dict[int, float] = {}
        #: How many shards the live node holding fewest holds, as read this tick (None: not
        #: read yet): a node holding 2 more lets one go per tick (``Ownership.surplus``).
        self.fewest: int | None = None
        self._moved = trio.Event()
        self._hub: Hub | None = None
        #: Set by :meth:`leave`: no new post or session here, the running ones snapshot.
        self.draining = False

    def __repr__(self) -> str:
        return f"ClusterMember({self.config.node_id!r}, held={sorted(self.ownership.held)})"

    @property
    def leave_within_s(self) -> float:
        """How long leaving may take when the hub stops: the drain (:meth:`leave`), then
        one tick to hand the shards over."""
        return self.drain_s + self.config.tick_s

    @property
    def drain_s(self) -> float:
        """How long :meth:`leave` lets running sessions snapshot: ``lease_s - margin_s -
        tick_s``, so the renewals going on meanwhile keep the leases."""
        config = self.config
        return max(config.lease_s - config.margin_s - config.tick_s, 0.0)

    def _serving(self, shard: int, now: float) -> int | None:
        return None if self.draining else self.ownership.serving(shard, now)

    def serves_shard(self, shard: int) -> bool:
        """Whether this node serves ``shard`` now."""
        return self._serving(shard, trio.current_time()) is not None

    def owner_of(self, shard: int) -> str | None:
        """The node holding ``shard`` under a running lease as last read (None: nobody,
        or its lease ran out since: a dead or stalled owner is not waited on)."""
        if self.leases.get(shard, -math.inf) <= trio.current_time():
            return None
        return self.owners.get(shard)

    def serves(self, session_id: str) -> bool:
        """Whether this node serves ``session_id``'s shard now."""
        return self.serves_shard(shard_of(session_id, self.config.shards))

    # -- routing (``_routing``; the hub asks only when ``routes``) ------------------------------

    @property
    def routes(self) -> bool:
        """Whether this node forwards and hints (it has the cluster key)."""
        return self.router is not None

    async def route(
        self,
        request: Request[R],
        session_id: str,
        on_behalf: frozenset[str] | None,
        local: Callable[[], Awaitable[R]],
    ) -> R:
        """Serve ``request`` here or forward it to the session's owner (``Router.route``)."""
        assert self.router is not None, "this node does not route (no cluster key)"
        return await self.router.route(request, session_id, on_behalf, local)

    def hint(self, recipient_id: str, session_id: str) -> None:
        if self.router is not None:
            self.router.hint(recipient_id, session_id)

    def bound(self, agent_id: str, replay: bool) -> None:
        if self.router is not None:
            self.router.bound(agent_id, replay)

    def released(self, agent_id: str) -> None:
        if self.router is not None:
            self.router.released(agent_id)

    # -- what the hub and the fences ask -------------------------------------------------------

    def claimed(self, shard: int) -> int | None:
        """The epoch of this node's claim on ``shard`` (None: not held); for fences, from any
        thread."""
        return self.ownership.held.get(shard)

    def shard(self, session_id: str) -> int:
        return shard_of(session_id, self.config.shards)

    def check(self, session_id: str) -> int:
        """The epoch under which this node serves ``session_id``'s shard now.

        Raises:
          NotOwner: it does not serve it now.
        """
        shard = shard_of(session_id, self.config.shards)
        epoch = self._serving(shard, trio.current_time())
        if epoch is None:
            raise self.not_owner(session_id, shard)
        return epoch

    def not_owner(self, session_id: str, shard: int) -> NotOwner:
        owner = self.owners.get(shard)
        if owner == self.config.node_id:
            owner = None  # ours by the map, but not served: the lease is not confirmed
        where = (
            f"node {owner!r} owns it"
            if owner is not None
            else "the shard map this node read last names no other owner"
        )
        return NotOwner(
            f"node {self.config.node_id!r} does not serve session {session_id!r}: its shard "
            f"{shard} is not held here ({where}); re-read the shard map and retry there "
            "with the same idempotency key"
            + (
                ""
                if self.router is not None
                else " (this node has no cluster key: it does not forward)"
            ),
            shard=shard,
            owner=owner,
            epoch=self.epochs.get(shard, 0) if owner is not None else 0,
            address=self.address_of(owner) if owner is not None else None,
        )

    def address_of(self, node_id: str) -> str | None:
        """The address ``node_id`` advertises, as the last tick read it (None: unknown)."""
        return self.addresses.get(node_id) or None

    def new_session_id(self, new_id: Callable[[], str]) -> str:
        """A fresh session id whose shard this node serves (drawn from ``new_id``).

        Raises:
          NotOwner: this node serves no shard now.
        """
        now = trio.current_time()
        session_id = new_id()
        for _ in range(DRAWS_PER_SHARD * self.config.shards):
            if self._serving(shard_of(session_id, self.config.shards), now) is not None:
                return session_id
            if now >= self.ownership.deadline or not self.ownership.held:
                break
            session_id = new_id()
        raise NotOwner(
            f"node {self.config.node_id!r} serves no shard now: a session cannot be created "
            "here (create it on a node that holds shards)",
            shard=shard_of(session_id, self.config.shards),
        )

    # -- the driver ---------------------------------------------------------------------------

    async def run(self, hub: Hub, *, task_status: trio.TaskStatus[None]) -> None:
        """Join, then tick and watch the deadline until cancelled (module rules)."""
        config = self.config
        self._hub = hub
        await self.coordinator.join(config.node_id, config.address, config.shards)
        async with trio.open_nursery() as nursery:
            if self.router is not None:
                await nursery.start(self.router.run, hub)
            await self.tick()
            task_status.started()
            nursery.start_soon(self._watch)
            nursery.start_soon(self._follow)
            while True:
                await trio.sleep(config.tick_s)
                await self.tick()

    async def tick(self) -> None:
        """One renewal round; a coordinator failure is logged (the watchdog acts on it)."""
        config, ownership, coordinator = self.config, self.ownership, self.coordinator
        node = config.node_id
        sent = trio.current_time()
        gained: set[int] = set()
        lost: set[int] = set()
        try:
            claims = await coordinator.renew(node, config.address, config.lease_s)
            more = 0 if self.draining else ownership.wanted(claims.live)
            if more:
                claims = await coordinator.claim(node, config.lease_s, more)
            if trio.current_time() < sent + config.lease_s - config.margin_s:
                # What moved is stopped before the new epochs are adopted: an actor of the
                # old claim must not write under the new one.
                moved = ownership.moved(claims)
                if moved:
                    ownership.drop(moved)
                # An actor still running in a shard held anew was started under an older
                # claim (it was starting when the shard was lost): stale, like the moved.
                fresh = set(claims.held) - set(ownership.held)
                if moved or fresh:
                    await self._lose(moved | fresh)
                gained, lost = ownership.renewed(sent, claims)
            # The nodes as they are now (not as last tick): a joiner's claims of this tick
            # are seen, so nobody lets go of a shard for a shortage already made up.
            nodes = await coordinator.nodes()
            self._learn_nodes(nodes)
            live = [n.shards for n in nodes if n.heartbeat_age_s < config.lease_s]
            self.fewest = min(live) if live else None
            surplus = ownership.surplus(claims.live, self.fewest)
            if surplus:
                ownership.drop(surplus)  # stop serving before the release lets others in
                lost |= set(surplus)
                await self._lose(lost)
                lost = set()
                await coordinator.release(node, surplus)
            await self._read_shards()
        except StoreError as exc:
            log.warning("cluster node %s: tick failed: %s", node, exc)
        if lost:
            await self._lose(lost)
        if gained:
            await self._gain(gained)
        if ownership.held:
            self._moved.set()

    async def read_map(self) -> None:
        """Read the shard map and the nodes again (a router that was told ``NotOwner``).

        Raises:
          StoreError: the coordinator could not be read.
        """
        await self._read_shards()
        self._learn_nodes(await self.coordinator.nodes())

    async def _read_shards(self) -> None:
        """Read the shard map: each shard's owner, epoch and lease (for ``NotOwner`` and
        routing)."""
        shard_map = await self.coordinator.shard_map()
        read_at = trio.current_time()
        self.owners = {s.shard: s.owner for s in shard_map}
        self.epochs = {s.shard: s.epoch for s in shard_map}
        self.leases = {s.shard: read_at + s.lease_left_s for s in shard_map}

    def _learn_nodes(self, nodes: list[NodeInfo]) -> None:
        """Keep the nodes' addresses and which are live; tell the router who came and went."""
        self.addresses = {n.node_id: n.address for n in nodes}
        live = {n.node_id for n in nodes if n.heartbeat_age_s < self.config.lease_s}
        gone, self.live = self.live - live, live
        if self.router is not None:
            if gone:
                self.router.forget(gone)
            self.router.peers_changed()

    async def _follow(self) -> None:
        """Every tick, have the hub actor apply what other nodes changed in the registry
        and the tasks (:meth:`sync`). A task of its own, beside the renewals: a hub actor
        busy with a long queue delays the sync, never a lease."""
        while True:
            await trio.sleep(self.config.tick_s)
            await self.sync()

    async def sync(self) -> None:
        """Have the hub actor apply the store's change feed (``SyncRegistry``); a store
        failure is logged, and the next tick tries again from the same change."""
        from ..hub._hub_messages import SyncRegistry

        hub = self._hub
        if hub is None or hub.core.hub_ref is None:
            await trio.lowlevel.checkpoint()
            return
        try:
            await hub.core.hub_ref.ask(SyncRegistry())
        except StoreError as exc:
            log.warning("cluster node %s: cannot read the registry's changes: %s", self, exc)
        except ActorDead:
            pass  # the hub actor is restarting (it reloads the tables) or the hub is stopping

    async def _watch(self) -> None:
        ownership = self.ownership
        while True:
            if not ownership.held or math.isinf(ownership.deadline):
                self._moved = trio.Event()
                await self._moved.wait()
                continue
            await trio.sleep_until(ownership.deadline)
            lost = ownership.expire(trio.current_time())
            if lost:
                log.warning(
                    "cluster node %s: lease not renewed in time; stopped serving shards %s",
                    self.config.node_id,
                    sorted(lost),
                )
                await self._lose(lost)

    async def _lose(self, shards: set[int]) -> None:
        """Stop the running actors of the sessions in ``shards``."""
        from ..hub._passivation import evict

        hub = self._hub
        if hub is None or not shards:
            await trio.lowlevel.checkpoint()
            return
        n = self.config.shards
        entries = [
            e
            for e in list(hub.core.directory.sessions.values())
            if e.ref is not None and shard_of(e.session_id, n) in shards
        ]
        async with trio.open_nursery() as nursery:
            for entry in entries:
                nursery.start_soon(evict, hub, entry)

    async def _gain(self, shards: set[int]) -> None:
        """Know the sessions of ``shards`` that other nodes created (they start on use).

        The hub actor adds them to the directory (it owns the entries: ``GainSessions``).
        """
        from ..hub._hub_messages import GainSessions

        hub = self._hub
        if hub is None:
            await trio.lowlevel.checkpoint()
            return
        core = hub.core
        n = self.config.shards
        try:
            stored = await core.store.load_sessions()
        except StoreError as exc:
            log.warning("cluster node %s: cannot load the gained sessions: %s", self, exc)
            return
        gained = tuple(
            md
            for md in stored
            if md.session_id not in core.directory.sessions and shard_of(md.session_id, n) in shards
        )
        if not gained or core.hub_ref is None:
            return
        try:
            await core.hub_ref.ask(GainSessions(gained))
        except ActorDead:
            # The hub is stopping (its actor is gone): nothing will serve these sessions.
            log.warning("cluster node %s: the hub stopped before it knew the gained sessions", self)

    async def leave(self) -> None:
        """Drain, then hand every shard over at once (``Coordinator.leave``).

        Draining refuses new posts and sessions (``NotOwner``) and passivates the running
        sessions within :attr:`drain_s`, each saving a snapshot if it is behind, while the
        leases (and so the fence) still hold: the next owner recovers from a snapshot
        instead of folding the whole WAL. What does not passivate in time (a session with
        work queued) is stopped without one.
        """
        from ..hub._passivation import passivate

        self.draining = True
        hub = self._hub
        if hub is not None:
            n = self.config.shards
            running = [
                e
                for e in list(hub.core.directory.sessions.values())
                if e.ref is not None and shard_of(e.session_id, n) in self.ownership.held
            ]
            with trio.move_on_after(self.drain_s):
                async with trio.open_nursery() as nursery:
                    for entry in running:
                        nursery.start_soon(passivate, hub, entry)
        held = set(self.ownership.held)
        self.ownership.drop(held)
        self.ownership.deadline = -math.inf
        await self._lose(held)
        try:
            await self.coordinator.leave(self.config.node_id)
        except StoreError as exc:
            log.warning("cluster node %s: could not hand its shards over: %s", self, exc)
