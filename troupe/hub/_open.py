"""``open_hub``: a hub's supervision tree, from its store up, torn down in order.

::

    root supervisor (one_for_one)
    ├── audit      AuditWriter                permanent   started first, stopped last
    ├── extensions nursery                    permanent   listeners, registered sweepers
    ├── hub        HubActor                   permanent   registry, session creation, tasks
    ├── sessions   dynamic supervisor         permanent   one transient SessionActor each
    ├── endpoints  dynamic supervisor         permanent   one temporary connection each
    ├── clients    nursery                    permanent   in-process HubClients' loops
    ├── cluster    ClusterMember.run          permanent   (only with ``cluster=``) leases
    ├── sweeper    TTL / handshake sweeper    permanent   (unless ttl_sweep_interval == 0)
    ├── expectations  expectation sweeper     permanent   (unless its interval == 0)
    └── passivator passivation sweeper        permanent   (unless passivate_after is None/0)
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial

import trio

from .. import _tracing
from .._errors import ProtocolError, StoreError
from ..model import MAX_ENVELOPE_BYTES
from ..session_types import AnySessionType, builtin_types
from ..store import Store, open_store
from ..supervisors import ChildSpec, open_dynamic_supervisor, open_supervisor
from . import _gc
from ._audit import AuditWriter, audit_mailbox
from ._auth import AuthAdapter, AuthRegistry
from ._core import Faults, HubConfig, HubCore, Membership, new_uuid, trio_anchored_clock
from ._directory import Directory, SessionEntry
from ._extensions import run_extensions
from ._hub import Hub
from ._hub_actor import HubActor
from ._passivation import passivate
from ._passivation import sweep as sweep_idle
from ._routes import Routes
from ._serve import serve_endpoint

log = logging.getLogger("troupe.hub")


@asynccontextmanager
async def open_hub(
    store: Store | str | os.PathLike[str] | None = None,
    *,
    invite_ack_timeout: float = 30.0,
    ttl_sweep_interval: float = 30.0,
    expectation_sweep_interval: float = 10.0,
    clock: Callable[[], float] | None = None,
    snapshot_every: int = 1000,
    session_max_restarts: int = 3,
    session_within_s: float = 5.0,
    client_mailbox: int = 4096,
    cursor_flush_interval: float = 0.05,
    auth: Iterable[AuthAdapter] | None = None,
    session_types: Iterable[AnySessionType] = (),
    faults: Faults | None = None,
    new_id: Callable[[], str] | None = None,
    passivate_after: float | None = 600.0,
    listeners: Iterable[object] = (),
    dedup_window: int = 1024,
    max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
    cluster: Membership | None = None,
    gc_freeze: bool = True,
) -> AsyncIterator[Hub]:
    """Run a hub for the duration of the block.

    Args:
      store: ``None`` for a fresh :class:`MemoryStore`, a ``postgresql://`` URL for a
        :class:`PostgresStore` (schema ``troupe``), a path for a :class:`SQLiteStore`, or
        any :class:`Store` (entered and left by the hub).
      invite_ack_timeout: seconds ``create_session`` waits for every invitee's ack.
      ttl_sweep_interval: seconds between sweeps that expire sessions and tasks past their
        TTL and time out handshakes (0 disables the sweeper; call ``expire_due()``).
      expectation_sweep_interval: seconds between checks of the sessions' timed
        expectations (0 disables the sweeper; call ``check_expectations()``).
      clock: wall-clock seconds for timestamps and TTLs; by default the wall clock at start
        advanced by trio's clock, so a ``MockClock`` drives it too.
      snapshot_every: save a session-type snapshot every this many envelopes (0: never).
      session_max_restarts / session_within_s: a session actor that crashes more often
        than this is closed with reason ``crashed``; the rest of the hub carries on.
      client_mailbox: deliveries that may queue for one connection; beyond that the
        connection is told to catch up from the WAL instead (nothing is lost).
      cursor_flush_interval: how long an acked delivery cursor may wait before it is saved
        (0.05 s by default; 0: whenever the connection is idle). Acks in between share one
        write: on SQLite ``FULL`` the agent path's commits fell from 0.92 to 0.19 per
        envelope and its CPU per envelope by a third. A hub that dies in between replays
        those envelopes (delivery is at-least-once). Cursors are saved when a client
        disconnects and when the hub closes.
      auth: the accepted auth adapters (default: :class:`NoAuth` only).
      session_types: session types to add to the built-in ones.
      faults: a fault injector that may crash session actors (``troupe.testing``).
      new_id: makes ids (default: 32 hex digits, a millisecond timestamp then 80 random
        bits, so ids sort by creation time as UUIDv7s do); seed one for reproducible runs.
      passivate_after: seconds of trio's clock a session may go unused before its actor is
        stopped and its memory released (default 600; None or 0 never passivates). The
        next use rehydrates it from snapshot + WAL, transparently.
      listeners: objects whose ``on_*`` hooks are called for the hub's events from its
        start (see :class:`HubListener`; ``hub.add_listener`` adds more later).
      dedup_window: idempotency / causation keys a live session keeps in memory (its
        latest; default 1024). A repeat of an older one is answered from the store's index
        (one lookup per post, only in sessions longer than this), so a retry is exactly-once
        however old it is, and a session's memory does not grow with its history.
      max_envelope_bytes: the largest envelope the hub accepts, as JSON (default and most
        :data:`~troupe.model.MAX_ENVELOPE_BYTES`, 1 MiB, which is what a WebSocket frame
        carries); a larger post is refused with ``ProtocolError``, in process as over the
        wire. The same bound applies to each request (a rule, a task, knobs).
      cluster: run this hub as a node of a cluster (``troupe.cluster``): it runs only the
        sessions of the shards it holds and refuses the others with ``NotOwner``. The store
        must be the cluster's shared store with this member's fence (see
        ``troupe.cluster``); leaving the block hands the node's shards over.
      gc_freeze: keep the hub's long-lived bulk out of the garbage collector's scans
        (default True): the hub calls ``gc.freeze()`` once it has loaded the store and
        after every 250 agents registered or sessions created, so a full collection no
        longer walks every agent and session (with 100k agents each one stalled the loop
        ~0.9 s). ``gc.freeze`` is process-wide: it freezes everything alive, the
        application's objects too, and a reference cycle frozen alive that dies later is
        not collected (its memory stays taken) until unfrozen. The last freezing hub to
        close calls ``gc.unfreeze()``, unless something was already frozen when the first
        opened (the application's own freeze is left as it was). ``False``: this hub never
        calls either.

    Leaving the block stops the sweeper, the connections, the sessions, the hub actor and
    the audit writer, in that order; no task outlives it.
    """
    if passivate_after is not None and passivate_after < 0:
        raise ValueError(f"passivate_after must be None or >= 0, got {passivate_after!r}")
    if isinstance(dedup_window, bool) or not isinstance(dedup_window, int) or dedup_window < 0:
        raise ValueError(f"dedup_window must be an int >= 0, got {dedup_window!r}")
    if not 1024 <= max_envelope_bytes <= MAX_ENVELOPE_BYTES:
        raise ValueError(
            f"max_envelope_bytes must be between 1024 and {MAX_ENVELOPE_BYTES}, "
            f"got {max_envelope_bytes!r}"
        )
    if not isinstance(gc_freeze, bool):
        raise TypeError(f"gc_freeze must be a bool, got {gc_freeze!r}")
    config = HubConfig(
        invite_ack_timeout=invite_ack_timeout,
        ttl_sweep_interval=ttl_sweep_interval,
        expectation_sweep_interval=expectation_sweep_interval,
        snapshot_every=snapshot_every,
        session_max_restarts=session_max_restarts,
        session_within_s=session_within_s,
        client_mailbox=client_mailbox,
        cursor_flush_interval=cursor_flush_interval,
        passivate_after=passivate_after or None,
        dedup_window=dedup_window,
        max_envelope_bytes=max_envelope_bytes,
    )
    if gc_freeze:
        _gc.hub_opened()
    try:
        async with open_store(store) as opened:
            # The sessions: written by their owners (given this table), read by everyone
            # else through core.directory, its read-only view.
            directory = Directory()
            # The connections' tables: written by the connections (given them through the
            # handle), read by everyone else through core.bindings and core.connections.
            routes = Routes()
            core = HubCore(
                opened,
                config,
                clock=clock if clock is not None else trio_anchored_clock(),
                new_id=new_id if new_id is not None else new_uuid,
                faults=faults,
                directory=directory.view,
                routes=routes,
            )
            for stype in (*builtin_types(), *session_types):
                core.session_types[(stype.name, stype.version)] = stype
            for md in await opened.load_sessions():  # before any actor runs
                directory.add(
                    SessionEntry(
                        metadata=md, stype=core.session_type(md.manifest_type, md.manifest_version)
                    )
                )
            hub = Hub(
                core,
                AuthRegistry(auth) if auth is not None else AuthRegistry(),
                directory,
                routes,
            )
            hub._serve_endpoint = serve_endpoint
            async with open_supervisor(
                "one_for_one", max_restarts=10, within_s=10.0, name="hub"
            ) as root:
                root.on_crash = partial(_audit_crash, core)
                hub._root = root
                core.audit_ref = await root.start_child(
                    ChildSpec(
                        "audit",
                        partial(AuditWriter, opened),
                        mailbox=partial(audit_mailbox, core.dead_letters),
                    )
                )
                for listener in listeners:
                    hub.add_listener(listener)
                await root.start_child(ChildSpec("extensions", partial(run_extensions, hub._ext)))
                core.hub_ref = await root.start_child(
                    ChildSpec("hub", partial(HubActor, core, hub.auth, directory))
                )
                await root.start_child(ChildSpec("sessions", hub._sessions.run))
                await root.start_child(ChildSpec("endpoints", partial(_run_endpoints, hub)))
                await root.start_child(ChildSpec("clients", partial(_run_clients, hub)))
                if cluster is not None:
                    core.cluster = cluster
                    await root.start_child(ChildSpec("cluster", partial(cluster.run, hub)))
                else:
                    await _hydrate(hub)  # a node starts its sessions as it gains their shards
                if gc_freeze:  # what was loaded and recovered lives long
                    _gc.settle()
                if ttl_sweep_interval > 0:
                    await root.start_child(
                        ChildSpec("sweeper", partial(_sweep, hub.expire_due, ttl_sweep_interval))
                    )
                if expectation_sweep_interval > 0:
                    await root.start_child(
                        ChildSpec(
                            "expectations",
                            partial(_sweep, hub.check_expectations, expectation_sweep_interval),
                        )
                    )
                if config.passivate_after is not None:
                    await root.start_child(
                        ChildSpec("passivator", partial(sweep_idle, hub, config.passivate_after))
                    )
                try:
                    yield hub
                finally:
                    if cluster is not None:
                        with trio.move_on_after(cluster.leave_within_s, shield=True):
                            await cluster.leave()
                    core.stopping = True
                    core.events.close()  # streams end once read; listeners finish theirs
                    if _tracing.ACTIVE is not None:
                        _tracing.ACTIVE.hub_stopped(core.directory.sessions)

    finally:
        if gc_freeze:
            _gc.hub_closed()


def _audit_crash(core: HubCore, child_id: str, error: Exception, restarting: bool) -> None:
    """Audit a crash of one of the hub's own children (the root supervisor's ``on_crash``)."""
    core.audit(
        "hub_child_crashed",
        child=child_id,
        exc_type=type(error).__name__,
        exc_message=str(error),
        restarting=restarting,
    )


async def _run_endpoints(hub: Hub, *, task_status: trio.TaskStatus[None]) -> None:
    async with open_dynamic_supervisor(name="endpoints") as sup:
        hub._connections = sup
        task_status.started()
        await trio.sleep_forever()


async def _run_clients(hub: Hub, *, task_status: trio.TaskStatus[None]) -> None:
    async with trio.open_nursery() as nursery:
        hub._client_nursery = nursery
        task_status.started()
        await trio.sleep_forever()


async def _hydrate(hub: Hub) -> None:
    """Start (and so refold) every open session, a few at a time.

    Recovery finishes what a crash interrupted and publishes each session's state (what
    ``can_send`` and ``pending_turns_for`` read). With passivation on, each session is then
    passivated at once: reopening a store of many open sessions does not hold an actor for
    each of them. A session that cannot be started is left for later (each use retries it,
    and fails with its error until the cause is fixed): one bad session does not stop the hub.
    """
    limiter = trio.CapacityLimiter(32)
    passivating = hub.core.config.passivate_after is not None

    async def start(entry: SessionEntry) -> None:
        async with limiter:
            try:
                await hub._sessions.running(entry)
            except (ProtocolError, StoreError) as exc:
                log.error("hub: session %s left unloaded: %s", entry.session_id, exc)
                return
            if passivating:
                await passivate(hub, entry)

    async with trio.open_nursery() as nursery:
        for entry in list(hub.core.directory.sessions.values()):
            if not entry.metadata.state.terminal:
                nursery.start_soon(start, entry)


async def _sweep(
    tick: Callable[[], Awaitable[object]], interval: float, *, task_status: trio.TaskStatus[None]
) -> None:
    task_status.started()
    while True:
        await trio.sleep(interval)
        await tick()
