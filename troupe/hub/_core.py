"""What every actor of one hub shares: configuration, services and read-only table views.

Each mutable table has one owner (docs/ARCHITECTURE.md lists them): the hub actor its
registry and tasks, each session actor its directory entry's published fields, the session
supervisor the entries' live fields. ``HubCore`` holds read-only views of them (typed so
that mypy refuses a write), read synchronously between two awaits (trio runs one task at
a time, so a read never sees a torn write); writes go through the owner.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import attrs
import trio

from ..actors import ActorRef
from ..mailbox import DeadLetterBuffer
from ..model import MAX_ENVELOPE_BYTES, TaskMetadata
from ..model._convert import iso_stamp
from ..session_types import AnySessionType
from ..store import Store
from ._arbiters import ARBITERS, Arbiter
from ._directory import DirectoryView
from ._events import EventBus
from ._lanes import Streams
from ._registry import Registry, RegistryView
from ._room import InboxRoom
from ._routes import CatchUps, Routes
from ._rules import InboxLedger, RateLimiter

#: The steps of a post at which a fault injector may crash a session actor.
CRASH_POINTS = ("before_append", "after_append", "after_fold", "after_dispatch")


class Faults(Protocol):
    """Crashes a session actor on purpose (``troupe.testing`` provides one)."""

    def check(self, point: str, session_id: str) -> None:
        """Raise to crash the session actor of ``session_id`` at ``point``."""
        ...


class Membership(Protocol):
    """A hub's membership of a cluster (``troupe.cluster.ClusterMember``), as the hub sees it.

    The hub asks it four things: the address another node advertises (``address_of``,
    for a ``not_owner`` answer), whether this node serves a session now (``check``, also
    after an actor started: a shard that moved meanwhile leaves that actor behind), a
    new session id this node serves (``new_session_id``), and to run beside the hub
    (``run``, in the hub's tree) and hand its shards over when the hub stops (``leave``,
    given ``leave_within_s``). A member that routes (``routes``) also forwards requests
    for other nodes' sessions (``route``) and carries delivery hints between nodes
    (``hint``, ``bound``, ``released``); the hub calls none of these without a cluster.
    """

    @property
    def leave_within_s(self) -> float:
        """How long ``leave`` may take when the hub stops (s)."""
        ...

    def check(self, session_id: str) -> int:
        """The epoch under which this node serves ``session_id``'s shard now; raise
        ``NotOwner`` if it does not."""
        ...

    def new_session_id(self, new_id: Callable[[], str]) -> str:
        """A fresh session id (drawn from ``new_id``) whose shard this node serves."""
        ...

    def address_of(self, node_id: str) -> str | None:
        """The address node ``node_id`` advertises, as last read (None: unknown); a
        ``not_owner`` answer carries the owner's."""
        ...

    async def run(self, hub: Any, *, task_status: trio.TaskStatus[None]) -> None:
        """Join the cluster, then keep the leases until cancelled."""
        ...

    # -- routing (issue 16 item 3): all no-ops for a member that does not route --------------

    @property
    def routes(self) -> bool:
        """Whether session-scoped requests for other nodes' shards are forwarded (``route``)
        and deliveries to recipients bound on other nodes hinted (``hint``)."""
        ...

    def serves(self, session_id: str) -> bool:
        """Whether this node serves ``session_id``'s shard now."""
        ...

    async def route(
        self,
        request: Any,
        session_id: str,
        on_behalf: frozenset[str] | None,
        local: Callable[[], Awaitable[Any]],
    ) -> Any:
        """Run ``request`` here (``local()``) while this node serves ``session_id``, else
        forward it to the shard's owner on behalf of ``on_behalf`` (None: trusted)."""
        ...

    def hint(self, recipient_id: str, session_id: str) -> None:
        """``recipient_id``, not bound here, missed a delivery of ``session_id``: tell the
        node it is bound on, if any, to catch it up from the store."""
        ...

    def bound(self, agent_id: str, replay: bool) -> None:
        """``agent_id`` was bound to a connection of this node (``replay``: it asked to be
        replayed what it missed)."""
        ...

    def released(self, agent_id: str) -> None:
        """``agent_id`` is no longer bound to a connection of this node."""
        ...

    async def leave(self) -> None:
        """Stop serving, then hand every shard over."""
        ...


class InjectedCrash(Exception):
    """Raised when a fault injector crashes a session actor on purpose; a crash like any other."""


@attrs.frozen(kw_only=True)
class HubConfig:
    """Tunables of one hub (documented with ``open_hub``)."""

    invite_ack_timeout: float = 30.0
    ttl_sweep_interval: float = 30.0
    expectation_sweep_interval: float = 10.0
    snapshot_every: int = 1000
    session_max_restarts: int = 3
    session_within_s: float = 5.0
    session_backoff: tuple[float, float] | None = None
    client_mailbox: int = 4096
    passivate_after: float | None = 600.0
    cursor_flush_interval: float = 0.05
    dedup_window: int = 1024
    max_envelope_bytes: int = MAX_ENVELOPE_BYTES


def trio_anchored_clock() -> Callable[[], float]:
    """Wall-clock seconds that advance with trio's clock (and so with a MockClock)."""
    epoch = time.time()
    start = trio.current_time()
    return lambda: epoch + (trio.current_time() - start)


def new_uuid() -> str:
    """A time-ordered id: 32 hex digits, the first 12 the Unix time in milliseconds, the
    other 20 random (80 bits from os.urandom), as a UUIDv7 lays them out.

    Ids made later sort later (to the millisecond), so a store keyed by them appends at the
    end of its indexes instead of at a random page of each: creating sessions on SQLite
    costs ~80 us less CPU per session at 50k sessions, and more as the store grows (issue
    15, item 6). Random ids of 128 bits cost 0.34 us; these 0.47 us, built without a UUID
    object (2-5 us). The time is the wall clock's, not the hub's (a MockClock does not
    stop it), and an id tells when it was made.
    """
    return ((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10)).hex()


@attrs.define(eq=False)
class Counters:
    """Monotonic counters for ``hub.statistics()``.

    ``accepted``, ``rejected``, ``duplicates``: session actors (and the session supervisor
    for posts it refuses before any actor, ``Hub.call`` for malformed ones); ``poison``,
    ``sessions_crashed``, ``passivations``, ``rehydrations``: the session supervisor;
    ``session_high_water``: session actors as they stop, and the supervisor for a crashed one.
    """

    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    poison: int = 0
    sessions_crashed: int = 0
    passivations: int = 0
    rehydrations: int = 0
    #: The highest session mailbox high-water mark among session actors no longer running.
    session_high_water: int = 0

    def keep_session_high_water(self, ref: ActorRef[Any, Any] | None) -> None:
        """Keep the high-water mark of a session actor's mailbox the hub lets go of."""
        if ref is not None:
            mark = ref.mailbox.statistics().high_water
            self.session_high_water = max(self.session_high_water, mark)


class HubCore:
    """The shared part of one hub."""

    def __init__(
        self,
        store: Store,
        config: HubConfig,
        *,
        clock: Callable[[], float],
        new_id: Callable[[], str],
        faults: Faults | None,
        directory: DirectoryView,
        routes: Routes,
    ) -> None:
        # -- configuration (set by open_hub; the plug-in tables by the handle's register_*)
        self.config = config
        self.clock = clock
        self.new_id = new_id
        self.faults = faults
        #: (name, version) -> session type: open_hub, ``Hub.register_session_type``.
        self.session_types: dict[tuple[str, int], AnySessionType] = {}
        #: Auction arbiters by name (``_arbiters``): ``Hub.register_auction_arbiter``.
        self.arbiters: dict[str, Arbiter] = dict(ARBITERS)
        #: The hub's own actors (set by open_hub).
        self.hub_ref: ActorRef[Any, Any] | None = None
        self.audit_ref: ActorRef[Any, Any] | None = None
        #: Set when ``open_hub``'s block has ended: the hub takes no new posts.
        self.stopping = False

        # -- services: objects with their own API, used by whoever needs them -------------
        self.store = store
        #: The event stream: every audit record, and each envelope appended (``_events``).
        self.events = EventBus(clock)
        self.dead_letters = DeadLetterBuffer()
        #: Statistics counters; each field's writer is named on ``Counters``.
        self.counters = Counters()
        #: Per-recipient inbox counts: +1 by session actors on dispatch, -1 by connections
        #: on receipt; reset when a binding changes or the agent is unregistered.
        self.ledger = InboxLedger()
        #: Posts waiting for room in inboxes (overflow "block"): written by those posts,
        #: woken by the ledger's acks (``_room``).
        self.room = InboxRoom(self.ledger)
        #: Per-sender rate buckets: a token per substantive post (session actors); forgotten
        #: when the agent is unregistered (the hub actor).
        self.limiter = RateLimiter()
        #: Streamed chunks' lanes and counters: ``fan_out`` and the connections.
        self.streams = Streams()

        # -- read-only views of tables an actor owns -------------------------------------
        #: The hub actor's registry (``HubActor.registry``; replaced when it restarts).
        self.registry: RegistryView = Registry()
        #: The hub actor's tasks (``HubActor.tasks``).
        self.tasks: Mapping[str, TaskMetadata] = MappingProxyType({})
        #: The sessions (a read-only view): entries added by the hub actor (also those of
        #: the shards a cluster member gains: ``GainSessions``); their published fields
        #: written by each session's actor, their live fields (ref, gate, in use) by the
        #: session supervisor, each through the ``Directory`` open_hub gave it.
        self.directory = directory

        # -- the connections' tables (``_serve``, ``_connection``) -------------------------
        #: agent id -> the connection actor it is bound to, and endpoint id -> its
        #: connection actor (a ``ConnectionActor``): read-only views of the connections'
        #: tables, which each connection writes for itself through the ``Routes`` open_hub
        #: gave them (the hub actor tells a connection to drop an unregistered agent's
        #: binding: ``Unbind``).
        self.bindings = routes.bindings
        self.connections = routes.connections
        #: A connection actor's ref -> the actor, for those a dispatch may notify directly
        #: (in process: ``ConnectionActor.notify_now``); a view of ``Routes.direct``.
        self.direct = routes.direct
        #: The catch-ups queued to connections (a service: dispatch queues, and a routing
        #: cluster member for the hints it gets; each connection marks its own handled):
        #: one per (connection, recipient, session).
        self.catch_ups = CatchUps()
        #: This node's membership of a cluster (``open_hub(cluster=...)``); None: no cluster,
        #: and no cluster code on any path. Set by open_hub.
        self.cluster: Membership | None = None

    def new_session_id(self) -> str:
        """A new session's id: in a cluster, one whose shard this node serves."""
        if self.cluster is None:
            return self.new_id()
        return self.cluster.new_session_id(self.new_id)

    def now(self) -> float:
        return self.clock()

    def now_iso(self) -> str:
        return iso_stamp(self.clock())[0]

    def now_stamp(self) -> tuple[str, float]:
        """The time now as an envelope's ``created_at``, and that text read back as a float."""
        return iso_stamp(self.clock())

    def audit(self, kind: str, **fields: Any) -> None:
        """Queue an audit record; the audit writer persists it in batches.

        Never blocks: if the writer falls 64k records behind, the oldest queued records are
        dropped and counted as dead letters.
        """
        if self.audit_ref is not None:
            self.audit_ref.tell_nowait({"at": self.now_iso(), "kind": kind, **fields})
        if self.events.subscribers:
            self.events.audited(kind, fields)

    def session_type(self, name: str, version: int) -> AnySessionType | None:
        return self.session_types.get((name, version))
