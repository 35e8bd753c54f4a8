"""What every actor of one hub shares: configuration, clock, store and the ETS-style tables.

Each table has one writer, named in its docstring; everyone else only reads, synchronously,
between two awaits (trio runs one task at a time, so a read never sees a torn write).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from ..actors import ActorRef
from ..mailbox import DeadLetterBuffer
from ..model import MAX_ENVELOPE_BYTES, TaskMetadata, iso
from ..session_types import AnySessionType
from ..store import Store
from ._arbiters import ARBITERS, Arbiter
from ._directory import Directory
from ._events import EventBus
from ._lanes import Streams
from ._registry import Registry
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
    given ``leave_within_s``).
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
    cursor_flush_interval: float = 0.0
    dedup_window: int = 1024
    max_envelope_bytes: int = MAX_ENVELOPE_BYTES


def trio_anchored_clock() -> Callable[[], float]:
    """Wall-clock seconds that advance with trio's clock (and so with a MockClock)."""
    epoch = time.time()
    start = trio.current_time()
    return lambda: epoch + (trio.current_time() - start)


def new_uuid() -> str:
    return uuid.uuid4().hex


@attrs.define(eq=False)
class Counters:
    """Monotonic counters for ``hub.statistics()``; written by the actors they name."""

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
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.new_id = new_id
        self.faults = faults
        #: Written by the hub actor (replaced wholesale when it restarts).
        self.registry = Registry()
        #: Entries added by the hub actor; each entry published by its session actor.
        self.directory = Directory()
        #: agent id -> the client connection actor it is bound to; written by connections.
        self.bindings: dict[str, ActorRef[Any, Any]] = {}
        #: endpoint id -> its connection actor (a ConnectionActor); written by serve_endpoint.
        self.connections: dict[str, Any] = {}
        #: +1 by session actors on dispatch, -1 by connections on receipt.
        self.ledger = InboxLedger()
        #: Written by session actors (one token per substantive post).
        self.limiter = RateLimiter()
        #: (name, version) -> session type; written by the Hub handle.
        self.session_types: dict[tuple[str, int], AnySessionType] = {}
        #: task id -> task; written by the hub actor.
        self.tasks: dict[str, TaskMetadata] = {}
        self.dead_letters = DeadLetterBuffer()
        self.counters = Counters()
        #: Streamed chunks' lanes and counters; written by whoever streams, and connections.
        self.streams = Streams()
        self.hub_ref: ActorRef[Any, Any] | None = None
        self.audit_ref: ActorRef[Any, Any] | None = None
        #: Set when ``open_hub``'s block has ended: the hub takes no new posts.
        self.stopping = False
        #: The event stream: every audit record, and each envelope appended (``_events``).
        self.events = EventBus(clock)
        #: Auction arbiters by name (``_arbiters``); written by the Hub handle.
        self.arbiters: dict[str, Arbiter] = dict(ARBITERS)
        #: This node's membership of a cluster (``open_hub(cluster=...)``); None: no cluster,
        #: and no cluster code on any path.
        self.cluster: Membership | None = None

    def new_session_id(self) -> str:
        """A new session's id: in a cluster, one whose shard this node serves."""
        if self.cluster is None:
            return self.new_id()
        return self.cluster.new_session_id(self.new_id)

    def now(self) -> float:
        return self.clock()

    def now_iso(self) -> str:
        return iso(self.clock())

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
