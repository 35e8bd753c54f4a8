"""Routing between the nodes of a cluster: forwarding requests, hinting deliveries.

Rules:

- **Forwarding.** A session-scoped request (a post, or a record whose owner is
  ``"session"``) that reaches a node not serving the session's shard is forwarded to the
  shard's owner (as this node last read the shard map, while that owner's lease runs)
  over a peer link, and the owner's answer is returned to the caller. The acting
  identity was checked on this node first (``Hub.call``); the owner checks the rest (a
  session's participants) against the identities bound to the caller, which the forward
  carries. A post without an idempotency key gets one here, so that a retry lands once.
- **Not the owner.** If the owner answers ``NotOwner`` (the shard moved), or cannot be
  reached, the node re-reads the shard map and tries again, the same record (the same
  idempotency key), with backoff (50 ms doubling to 1 s), until it has waited
  ``lease_s + tick_s`` in all between attempts (enough for a dead owner's lease to run
  out and another node to claim the shard); then the caller gets ``NotOwner``. The shard
  may come back to this node meanwhile: then it serves the request itself. An attempt
  under way is not cut short (a post may wait for room in an inbox at the owner, or the
  owner may be stalled on its store); a peer that stops answering is dropped by the
  link's heartbeat (WebSocket pings every ``tick_s``, answered within ``lease_s``).
- **Links.** One cached link per peer node, made on first use to the address the peer
  advertises (``ClusterConfig.address``, ``troupe serve --advertise``) and proved with the
  cluster key (``_peer``); connecting is retried with backoff (tenacity), and a link that
  drops is made again on next use. ``LocalPeers`` makes in-process links (a ``LocalLink``
  to each node's hub) for simulations under a ``MockClock``.
- **Presence.** Each node tells every live peer which identities its connections hold: a
  full list when a link is (re)made, then the changes as binds come and go. An identity
  that binds asking for a replay is ``fresh``: each owner hints its served, open sessions
  of it at once.
- **Hints.** When a session's owner dispatches to a recipient bound on no connection of its
  own but, by presence, on another node's, it queues a hint ``(recipient, session)`` for
  that node; hints are coalesced per (node, recipient, session) and sent in one request per
  node while the previous one is under way. The holder queues one ``CatchUp`` per
  (connection, recipient, session), which reads what the recipient has not been sent from
  the store (its metadata from the store too when this node does not serve the session).
  The WAL and the cursors stay the truth: hints a link could not carry are sent again
  while their node is live, and dropped when it is not (the recipient's next bind
  replays); a hint that comes late only delivers what is there.

Cost: per session-scoped request on a routing node, finding its session and shard and
whether this node serves it (~1.2 µs); per post, for each recipient not bound on the owner,
one dict lookup (~0.1 µs; a set insert more when it is bound elsewhere); per bind or
release, one change queued for the next presence message to each peer; per new link, each
owner hints every open session it serves of every identity the peer holds. A hub without a
cluster makes one ``is None`` test per request and per recipient with no connection.
"""

from __future__ import annotations

import logging
import urllib.parse
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs
import trio
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from .._errors import ConnectionLost, MailboxClosed, NetworkError, NotOwner, StoreError
from ..api import PostEnvelope, ReadWal, Request, WalPage
from ..client._remote import RemoteHub
from ..model import ErrorFrame, Frame, InvalidFrame, ResponseFrame, WelcomeFrame, unstructure
from ..model import structure as structure_record
from ..transport import LocalLink, WsLink
from ._peer import Forward, Hints, PeerChallenge, PeerHello, Presence, install, proof

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..hub import Hub
    from ._shards import ClusterConfig

R = TypeVar("R")

log = logging.getLogger("troupe.cluster.routing")

install()

#: Link failures that make a node drop the link and try again (the next one, or later).
LINK_ERRORS = (ConnectionLost, OSError, trio.TooSlowError)  # (HandshakeFailed is a ConnectionLost)
#: Connection attempts per link use (with backoff) before the use fails.
CONNECT_ATTEMPTS = 3
#: How long making a link (connect + peer hello) may take.
CONNECT_TIMEOUT_S = 5.0
#: First and longest pause between two looks for a session's owner.
RETRY_S = 0.05
RETRY_MAX_S = 1.0


class Member(Protocol):
    """What the router asks of its node's membership (``ClusterMember``)."""

    config: ClusterConfig
    #: The live nodes, as last read.
    live: set[str]

    def shard(self, session_id: str) -> int: ...

    def owner_of(self, shard: int) -> str | None: ...

    def serves(self, session_id: str) -> bool: ...

    def serves_shard(self, shard: int) -> bool: ...

    def not_owner(self, session_id: str, shard: int) -> NotOwner: ...

    def address_of(self, node_id: str) -> str | None: ...

    async def read_map(self) -> None: ...


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first leaf of ``group``."""
    leaf: Exception | BaseExceptionGroup[Exception] = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def _keyed(request: Request[R]) -> Request[R]:
    """``request``, with an idempotency key if it is a post without one (a forward that
    is tried again must land once)."""
    if type(request) is PostEnvelope and request.envelope.idempotency_key is None:
        envelope = attrs.evolve(request.envelope, idempotency_key=uuid.uuid4().hex)
        return PostEnvelope(envelope=envelope)  # type: ignore[return-value]
    return request


class PeerConnection(Protocol):
    """What a link runs on: a client connection to a peer's hub (a ``WsLinkClient``, a
    ``LocalLinkClient``)."""

    async def send_frame(self, frame: Frame | str) -> None: ...

    def frames(self) -> AsyncIterator[Any]: ...

    async def aclose(self) -> None: ...


#: Opens a connection to ``node_id`` at ``address``, its reader tasks in ``nursery``.
Connector = Callable[[str, str, trio.Nursery], Awaitable[PeerConnection]]


def ws_connector(ping_interval: float, ping_timeout: float) -> Connector:
    """Peer links over WebSocket, to the address each node advertises."""

    async def connect(node_id: str, address: str, nursery: trio.Nursery) -> PeerConnection:
        parts = urllib.parse.urlsplit(address)
        if parts.scheme not in ("ws", "wss") or parts.port == 0:
            # (A node started with --port 0 advertises its port from its next tick on.)
            await trio.lowlevel.checkpoint()
            raise OSError(f"node {node_id!r} advertises no WebSocket address yet ({address!r})")
        link = WsLink(address, ping_interval=ping_interval, ping_timeout=ping_timeout)
        return await link.connect(nursery)  # (its heartbeat runs in ``nursery``)

    return connect


class LocalPeers:
    """In-process peer links for simulations: node id -> its running hub (``add``/``remove``
    as nodes start and stop). Connecting to a node not added fails as an unreachable one."""

    def __init__(self) -> None:
        self.hubs: dict[str, Hub] = {}

    def add(self, node_id: str, hub: Hub) -> None:
        self.hubs[node_id] = hub

    def remove(self, node_id: str) -> None:
        self.hubs.pop(node_id, None)

    async def connect(self, node_id: str, address: str, nursery: trio.Nursery) -> PeerConnection:
        hub = self.hubs.get(node_id)
        if hub is None:
            await trio.lowlevel.checkpoint()
            raise OSError(f"node {node_id!r} is not running")
        conn = LocalLink(hub).client()
        await conn.open()
        return conn


@attrs.define(eq=False)
class _Link:
    """One peer's link: its RPC client while connected, and what it was told."""

    node_id: str
    remote: RemoteHub | None = None
    lock: trio.Lock = attrs.field(factory=trio.Lock)
    #: The peer has this node's full presence on the current connection.
    synced: bool = False
    #: Set to end the current connection (its reader ended, or the link is dropped).
    ended: trio.Event = attrs.field(factory=trio.Event)


class Router:
    """One node's routing (module rules); made by :class:`ClusterMember` with a key."""

    def __init__(self, member: Member, secret: str, connect: Connector) -> None:
        self.member = member
        self.secret = secret
        self.connect = connect
        self.hub: Hub | None = None
        self._nursery: trio.Nursery | None = None
        self._links: dict[str, _Link] = {}
        # -- as a server: what each connection proved (weak: they go with the connection)
        self.nonces: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self.peers: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        # -- presence: where other nodes hold identities, and what to tell them of ours
        #: agent id -> the node whose connection holds it (as that node last said).
        self.remote: dict[str, str] = {}
        self._held_by: dict[str, set[str]] = {}
        self._changes: dict[str, bool] = {}
        self._fresh: set[str] = set()
        #: node -> (recipient, session) pairs to hint it.
        self._hints: dict[str, set[tuple[str, str]]] = {}
        self._wake = trio.Event()
        self._reread: trio.Event | None = None
        #: Requests forwarded, and hints sent, by this node (for tests and statistics).
        self.forwarded = 0
        self.hints_sent = 0

    def __repr__(self) -> str:
        return f"Router({self.member.config.node_id!r}, links={sorted(self._links)})"

    @property
    def budget_s(self) -> float:
        """How long a request may look for its session's owner: ``lease_s + tick_s``."""
        return self.member.config.lease_s + self.member.config.tick_s

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()

    async def run(self, hub: Hub, *, task_status: trio.TaskStatus[None]) -> None:
        """Hold the links and send presence and hints until cancelled."""
        self.hub = hub
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._send_loop)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self._nursery = None  # closed to new links from now on
        finally:
            self._nursery = None
            for link in self._links.values():
                if link.remote is not None:
                    link.remote.fail("the node stopped")
                    link.remote = None
                link.ended.set()

    # -- forwarding ----------------------------------------------------------------------------

    async def route(
        self,
        request: Request[R],
        session_id: str,
        on_behalf: frozenset[str] | None,
        local: Callable[[], Awaitable[R]],
    ) -> R:
        """Serve ``request`` here or at its session's owner (module rules)."""
        member = self.member
        me = member.config.node_id
        shard = member.shard(session_id)
        budget = self.budget_s
        waited = 0.0
        delay = RETRY_S
        last: Exception | None = None
        while True:
            if self._nursery is None:
                # The node is stopping (or not routing yet): nothing to wait for here.
                raise _refused(
                    member, session_id, shard, f"node {me!r} is not routing now: it is stopping"
                ) from last
            if member.serves_shard(shard):
                try:
                    return await local()
                except NotOwner as exc:  # lost meanwhile: look for the new owner
                    last = exc
            else:
                owner = member.owner_of(shard)
                if owner is not None and owner != me:
                    request = _keyed(request)
                    try:
                        return await self._forward(owner, request, on_behalf)
                    except NotOwner as exc:
                        last = exc
                    except LINK_ERRORS as exc:
                        log.info("node %s: forwarding to %s failed: %s", me, owner, exc)
                        last = exc
            if waited >= budget:
                why = f"no owner took the request within {budget:g} s: {last}"
                raise _refused(member, session_id, shard, why) from last
            pause = min(delay, budget - waited)
            await trio.sleep(pause)
            waited += pause
            delay = min(delay * 2, RETRY_MAX_S)
            await self.reread()

    async def reread(self) -> None:
        """Read the shard map again (one read at a time: concurrent callers share it)."""
        if self._reread is not None:
            await self._reread.wait()
            return
        done = self._reread = trio.Event()
        try:
            await self.member.read_map()
        except StoreError as exc:
            log.warning(
                "node %s: cannot re-read the shard map: %s", self.member.config.node_id, exc
            )
        finally:
            self._reread = None
            done.set()

    async def _forward(
        self, owner: str, request: Request[R], on_behalf: frozenset[str] | None
    ) -> R:
        remote = await self._connected(owner)
        behalf = None if on_behalf is None else tuple(sorted(on_behalf))
        self.forwarded += 1
        if isinstance(request, ReadWal) and on_behalf is None:
            # A trusted in-process caller reads the whole range; the owner answers pages.
            found: list[Any] = []
            page_request: ReadWal = request
            while True:
                data = await remote.call(
                    Forward(request_op=request.op, params=unstructure(page_request), on_behalf=None)
                )
                page = structure_record(data, WalPage)
                found.extend(page.envelopes)
                if not page.more or not page.envelopes:
                    return WalPage(envelopes=found, more=False)  # type: ignore[return-value]
                page_request = attrs.evolve(page_request, since=page.envelopes[-1].seq)
        data = await remote.call(
            Forward(request_op=request.op, params=unstructure(request), on_behalf=behalf)
        )
        kind = request.result_type
        result: R = None if kind is type(None) else structure_record(data, kind)  # type: ignore[assignment]
        return result

    # -- links ---------------------------------------------------------------------------------

    async def _connected(self, node_id: str) -> RemoteHub:
        """The link to ``node_id``, made (and proved) if there is none.

        Raises:
          OSError, ConnectionLost (HandshakeFailed too), trio.TooSlowError: it cannot be made.
        """
        link = self._links.get(node_id)
        if link is None:
            link = self._links[node_id] = _Link(node_id)
        async with link.lock:
            remote = link.remote
            if remote is not None and remote.closed_because is None:
                return remote
            link.synced = False
            async for attempt in AsyncRetrying(
                sleep=trio.sleep,
                wait=wait_random_exponential(multiplier=0.05, max=1.0),
                stop=stop_after_attempt(CONNECT_ATTEMPTS),
                retry=retry_if_exception_type(LINK_ERRORS),
                reraise=True,
            ):
                with attempt:
                    address = self.member.address_of(node_id) or ""
                    nursery = self._nursery
                    if nursery is None:
                        raise ConnectionLost("the node is not routing (it stopped)")
                    link.remote = await nursery.start(self._hold, link, address)
            assert link.remote is not None
            return link.remote

    async def _hold(
        self, link: _Link, address: str, *, task_status: trio.TaskStatus[RemoteHub]
    ) -> None:
        """Make one connection to the peer and prove the key, then read its answers until it
        ends (or the link is dropped); the calls under way then fail with
        ``ConnectionLost``.

        Raises:
          ConnectionLost: the peer could not be reached, or refused the hello (one
            exception, not a group: the callers retry on it).
        """
        started: list[bool] = []
        failure: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                await self._connection(link, address, nursery, task_status, started)
        except* (*LINK_ERRORS, NetworkError) as group:
            failure = _first(group)
        if failure is None:
            return
        if started:  # the link was up: it ended, and the next use makes another
            log.info("node %s: link to %s ended: %s", self.member.config.node_id, link, failure)
            return
        raise ConnectionLost(
            f"no link to node {link.node_id!r} ({address}): {failure}"
        ) from failure

    async def _connection(
        self,
        link: _Link,
        address: str,
        nursery: trio.Nursery,
        task_status: trio.TaskStatus[RemoteHub],
        started: list[bool],
    ) -> None:
        me = self.member.config.node_id
        remote = RemoteHub()
        ended = link.ended = trio.Event()
        with trio.fail_after(CONNECT_TIMEOUT_S):
            conn = await self.connect(link.node_id, address, nursery)
        proved = False
        try:
            remote.attach(conn)  # type: ignore[arg-type]
            remote.ready(conn)  # type: ignore[arg-type]
            nursery.start_soon(self._read, conn, remote, ended)
            with trio.fail_after(CONNECT_TIMEOUT_S):
                nonce = await remote.call(PeerChallenge())
                await remote.call(PeerHello(node_id=me, proof=proof(self.secret, nonce, me)))
            proved = True
        finally:
            if not proved:  # (whatever stopped it: no connection is left behind)
                remote.fail("the peer hello failed")
                with trio.CancelScope(shield=True):
                    await conn.aclose()
                nursery.cancel_scope.cancel()
        task_status.started(remote)
        started.append(True)
        try:
            await ended.wait()
        finally:
            if link.remote is remote:
                link.remote = None
                link.synced = False
            remote.fail("the link to the peer closed")
            with trio.CancelScope(shield=True):
                await conn.aclose()
            nursery.cancel_scope.cancel()

    async def _read(self, conn: PeerConnection, remote: RemoteHub, ended: trio.Event) -> None:
        try:
            async for item in conn.frames():
                for frame in item if isinstance(item, list) else (item,):
                    if isinstance(frame, ResponseFrame | WelcomeFrame | ErrorFrame | InvalidFrame):
                        remote.answer(frame)
        finally:
            remote.fail("the link to the peer closed")
            ended.set()

    def forget(self, node_ids: Iterable[str]) -> None:
        """Drop what is known of nodes no longer live (their presence); their links close."""
        for node_id in node_ids:
            for agent_id in self._held_by.pop(node_id, set()):
                if self.remote.get(agent_id) == node_id:
                    del self.remote[agent_id]
            link = self._links.pop(node_id, None)
            if link is not None and link.remote is not None:
                link.remote.fail(f"node {node_id!r} is no longer live")
                link.ended.set()

    def peers_changed(self) -> None:
        """The member read the nodes again: a live peer not yet told this node's presence
        is told at once."""
        me = self.member.config.node_id
        if any(
            n != me and not (self._links.get(n) and self._links[n].synced) for n in self.member.live
        ):
            self._wake.set()

    # -- presence and hints: this node's side --------------------------------------------------

    def bound(self, agent_id: str, replay: bool) -> None:
        self._changes[agent_id] = True
        if replay:
            self._fresh.add(agent_id)
        self._wake.set()

    def released(self, agent_id: str) -> None:
        self._changes[agent_id] = False
        self._fresh.discard(agent_id)
        self._wake.set()

    def hint(self, recipient_id: str, session_id: str) -> None:
        node = self.remote.get(recipient_id)
        if node is None or node == self.member.config.node_id:
            return
        pending = self._hints.get(node)
        if pending is None:
            pending = self._hints[node] = set()
        pending.add((recipient_id, session_id))
        self._wake.set()

    async def _send_loop(self) -> None:
        delay = RETRY_S
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            changes, self._changes = self._changes, {}
            fresh, self._fresh = self._fresh, set()
            hints, self._hints = self._hints, {}
            me = self.member.config.node_id
            peers = {n for n in self.member.live if n != me} | set(hints)
            failed: list[bool] = []
            async with trio.open_nursery() as nursery:
                for node_id in sorted(peers):
                    nursery.start_soon(
                        self._tell, node_id, changes, fresh, hints.get(node_id, set()), failed
                    )
            if failed:
                # Tried again after a pause (full presence on the next link); hints requeued.
                await trio.sleep(delay)
                delay = min(delay * 2, self.member.config.tick_s)
                self._wake.set()
            else:
                delay = RETRY_S

    async def _tell(
        self,
        node_id: str,
        changes: dict[str, bool],
        fresh: set[str],
        hints: set[tuple[str, str]],
        failed: list[bool],
    ) -> None:
        try:
            remote = await self._connected(node_id)
            link = self._links[node_id]
            if not link.synced:
                hub = self.hub
                bound = tuple(sorted(hub.core.bindings)) if hub is not None else ()
                await remote.call(Presence(bound=bound, full=True, fresh=bound))
                link.synced = True
            elif changes or fresh:
                await remote.call(
                    Presence(
                        bound=tuple(sorted(a for a, up in changes.items() if up)),
                        gone=tuple(sorted(a for a, up in changes.items() if not up)),
                        fresh=tuple(sorted(fresh)),
                    )
                )
            if hints:
                await remote.call(Hints(pairs=tuple(sorted(hints))))
                self.hints_sent += len(hints)
        except (*LINK_ERRORS, NetworkError, StoreError) as exc:
            # (A NetworkError: the peer refused presence or hints, as a hub without the
            # cluster key does; it is tried again later, as a peer that is down.)
            log.info("node %s: cannot reach %s: %s", self.member.config.node_id, node_id, exc)
            failed.append(True)
            dropped = self._links.get(node_id)
            if dropped is not None:
                dropped.synced = False
            if hints and node_id in self.member.live:
                self._hints.setdefault(node_id, set()).update(hints)

    # -- presence and hints: what peers tell this node -----------------------------------------

    def learn_presence(self, node_id: str, presence: Presence) -> None:
        """Record where ``node_id`` holds identities; hint the fresh ones' sessions to it."""
        held = self._held_by.setdefault(node_id, set())
        if presence.full:
            for agent_id in held:
                if self.remote.get(agent_id) == node_id:
                    del self.remote[agent_id]
            held.clear()
        for agent_id in presence.gone:
            held.discard(agent_id)
            if self.remote.get(agent_id) == node_id:
                del self.remote[agent_id]
        for agent_id in presence.bound:
            before = self.remote.get(agent_id)
            if before is not None and before != node_id:
                self._held_by.get(before, set()).discard(agent_id)
            self.remote[agent_id] = node_id
            held.add(agent_id)
        hub = self.hub
        if hub is None:
            return
        directory = hub.core.directory
        for agent_id in presence.fresh:
            if self.remote.get(agent_id) != node_id:
                continue
            for entry in directory.of_agent(agent_id):
                if not entry.metadata.state.terminal and self.member.serves(entry.session_id):
                    self.hint(agent_id, entry.session_id)

    def catch_up(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Queue a catch-up for each hinted (recipient, session) bound here (one per
        connection, recipient and session)."""
        hub = self.hub
        if hub is None:
            return
        core = hub.core
        for recipient_id, session_id in pairs:
            conn = core.bindings.get(recipient_id)
            if conn is None:
                continue  # gone meanwhile: its next bind replays
            try:
                core.catch_ups.queue(conn, recipient_id, session_id, hinted=True)
            except MailboxClosed:
                pass  # the connection is ending: its next bind replays


def _refused(member: Member, session_id: str, shard: int, why: str) -> NotOwner:
    """The member's ``NotOwner`` for the session, its message saying ``why``."""
    refused = member.not_owner(session_id, shard)
    return NotOwner(
        f"{refused} ({why})",
        shard=refused.shard,
        owner=refused.owner,
        epoch=refused.epoch,
        address=refused.address,
    )
