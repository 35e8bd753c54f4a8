"""HubClient: one connection to a hub, serving any number of identities (the seed's API).

In process (``HubClient(LocalLink(hub))``) control calls go straight to the ``Hub`` and only
deliveries and receipts travel over the link; the client's receive loop runs in the hub's
nursery, so the client needs no nursery of its own and ends with the hub at the latest.

Over a network (``async with HubClient(WsLink(url)) as hc:``) control calls are RPCs
correlated by request id; the client owns a nursery (hence the ``async with``), reconnects
with exponential backoff and jitter when the connection drops (bounded by
``reconnect_within`` seconds), re-binds its identities and is replayed what they had not
acked.

Deliveries are handled per (identity, session) in WAL order, by a task that exists while
that session has deliveries waiting; different sessions are handled concurrently. After an
envelope is handled the hub gets a receipt (``ack``, or ``nack`` if the handler raised), which
advances that identity's cursor: on a reconnect the hub replays what was not acked, and the
client drops what it already handled, so a handler never sees a duplicate.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Sequence
from contextlib import AsyncExitStack, aclosing
from types import TracebackType
from typing import Any, Self

import attrs
import trio
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter
from trio_websocket import HandshakeError

from .._errors import ConnectionLost, NetworkError, NotFoundError
from ..hub import Hub, PendingTurn
from ..model import (
    Envelope,
    ErrorFrame,
    Frame,
    NotifyFrame,
    Passport,
    ReceiptFrame,
    ResponseFrame,
    Resume,
    Rule,
    SessionMetadata,
    TaskMetadata,
    TaskState,
    WelcomeFrame,
)
from ..session_types import AnySessionType, ViewPolicy, builtin_types
from ..transport import LocalLink, LocalLinkClient, WsLink, WsLinkClient
from ._agent_client import AgentClient
from ._human_client import HumanClient
from ._identity import Identity
from ._inbox import ENDED_KEPT, ENDINGS
from ._remote import RemoteHub
from ._turn import Agent

log = logging.getLogger("troupe.client")

Link = LocalLink | WsLink


class HubClient:
    """One connection to a hub. A process should hold one per hub it talks to.

    Use it as an async context manager (``close()`` on exit: the connection ends, the
    identities stay registered) or, in process only, call :meth:`close` / :meth:`shutdown`
    yourself.

    Args:
      link: ``LocalLink(hub)`` (in process) or ``WsLink(url)`` (over a network).
      hub: the in-process hub (defaults to ``link.hub`` for a LocalLink).
      reconnect_within: over a network, how long (seconds) to keep trying to reconnect
        before giving up; calls then fail with :class:`ConnectionLost`.
    """

    def __init__(
        self, link: Link, *, hub: Hub | None = None, reconnect_within: float = 60.0
    ) -> None:
        self._link = link
        self._hub = hub if hub is not None else getattr(link, "hub", None)
        self._api: Hub | RemoteHub = self._hub if self._hub is not None else RemoteHub()
        self._reconnect_within = reconnect_within
        self._conn: LocalLinkClient | WsLinkClient | None = None
        self._scope: trio.CancelScope | None = None
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._clients: dict[str, Identity] = {}
        #: (identity, session) -> highest seq routed to a handler / fully handled.
        self._routed: dict[tuple[str, str], int] = {}
        self._handled: dict[tuple[str, str], int] = {}
        #: Sessions that ended, with the last seq handled (the oldest forgotten first).
        self._ended: OrderedDict[tuple[str, str], int] = OrderedDict()
        #: (identity, session, seq) handled with a nack: a replay of it is handled again.
        self._nacked: set[tuple[str, str, int]] = set()
        self._closed = False
        #: Set to make the remote runner look up: the connection ended, or close() was called.
        self._wake = trio.Event()
        self._connecting = trio.Lock()
        self._session_types: dict[tuple[str, int], AnySessionType] = {
            (t.name, t.version): t for t in builtin_types()
        }

    async def __aenter__(self) -> Self:
        if isinstance(self._link, WsLink):
            self._stack = AsyncExitStack()
            self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        await self._ensure_connected()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
        if self._stack is not None:
            await self._stack.aclose()

    @property
    def hub(self) -> Hub | None:
        """The in-process hub, or None over a network."""
        return self._hub

    @property
    def remote(self) -> bool:
        return self._hub is None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def endpoint_id(self) -> str | None:
        return self._conn.endpoint_id if self._conn is not None else None

    def identities(self) -> list[Identity]:
        return list(self._clients.values())

    # -- the connection ----------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        async with self._connecting:
            if self._closed:
                raise RuntimeError("HubClient is closed")
            if self._scope is not None:
                return
            if isinstance(self._link, WsLink):
                if self._nursery is None:
                    raise RuntimeError(
                        "a HubClient over a WsLink needs 'async with HubClient(WsLink(...))'"
                    )
                self._scope = await self._nursery.start(self._run_remote, self._link)
            else:
                assert self._hub is not None
                conn = self._link.client()
                await conn.open()
                self._conn = conn
                self._scope = await self._hub.host(self._run_local, conn)

    async def _run_local(
        self, conn: LocalLinkClient, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(scope)
                async with aclosing(conn.frames()) as frames:
                    async for frame in frames:
                        self._on_frame(frame)
                nursery.cancel_scope.cancel()

    async def _run_remote(
        self, link: WsLink, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """Own the WebSocket connection: connect, read, and reconnect until closed."""
        api = self._api
        assert isinstance(api, RemoteHub)
        with trio.CancelScope() as scope:
            first = True
            while not self._closed:
                async with trio.open_nursery() as conn_nursery:
                    try:
                        conn = await self._connect(link, conn_nursery)
                    except (OSError, HandshakeError, trio.TooSlowError) as exc:
                        log.error("giving up on %s: %s", link.url, exc)
                        api.fail(f"could not reach {link.url}: {exc}")
                        if first:
                            raise ConnectionLost(f"could not reach {link.url}: {exc}") from exc
                        await self._lose_identities()
                        return
                    self._conn = conn
                    self._wake = wake = trio.Event()
                    api.attach(conn)
                    conn_nursery.start_soon(self._read, conn, wake)
                    if first:
                        first = False
                        task_status.started(scope)
                    else:
                        conn_nursery.start_soon(self._rebind, link)
                    await wake.wait()  # the connection ended, or close() was called
                    self._conn = None
                    api.detach("the connection closed")
                    if self._closing():
                        # Close while the library's reader still runs, so the closing
                        # handshake can complete.
                        with trio.move_on_after(5):
                            await conn.aclose()
                    conn_nursery.cancel_scope.cancel()
                if not self._closed:
                    log.warning("lost the connection to %s; reconnecting", link.url)

    def _closing(self) -> bool:
        # A call, not an attribute read: mypy would narrow ``self._closed`` across awaits.
        return self._closed

    async def _read(self, conn: WsLinkClient, wake: trio.Event) -> None:
        async with aclosing(conn.frames()) as frames:
            async for frame in frames:
                self._on_frame(frame)
        wake.set()

    async def _connect(self, link: WsLink, nursery: trio.Nursery) -> WsLinkClient:
        """Connect, retrying with exponential backoff and jitter for ``reconnect_within`` s."""
        with trio.fail_after(self._reconnect_within):
            async for attempt in AsyncRetrying(
                sleep=trio.sleep,
                wait=wait_exponential_jitter(initial=0.05, max=5.0),
                retry=retry_if_exception_type((OSError, HandshakeError, trio.TooSlowError)),
                reraise=True,
            ):
                with attempt:
                    return await link.connect(nursery)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _rebind(self, link: WsLink) -> None:
        """After a reconnect: bind every identity again and be replayed what it missed."""
        api = self._api
        assert isinstance(api, RemoteHub)
        for identity in list(self._clients.values()):
            scheme, claim = link.claim_for(identity.passport.name)
            try:
                await api.hello(identity.passport.name, scheme, claim, since={})
            except NetworkError as exc:
                log.error("could not re-bind %s: %s", identity, exc)

    async def _lose_identities(self) -> None:
        self._closed = True
        for identity in self._clients.values():
            await identity.disconnect()

    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, NotifyFrame):
            self._route(frame.envelope, frame.recipient_id)
        elif isinstance(frame, ResponseFrame | WelcomeFrame | ErrorFrame):
            if isinstance(self._api, RemoteHub):
                self._api.answer(frame)

    def _route(self, envelope: Envelope, recipient_id: str) -> None:
        assert self._nursery is not None
        identity = self._clients.get(recipient_id)
        if identity is None:
            self._nursery.start_soon(
                self._receipt, envelope, recipient_id, "nack", "no such identity on this client"
            )
            return
        key = (recipient_id, envelope.session_id)
        retry = (recipient_id, envelope.session_id, envelope.seq)
        ended = self._ended.get(key)
        if ended is not None and envelope.seq <= ended:
            # A session that ended here, replayed (its last receipts were lost): re-ack.
            self._nursery.start_soon(self._receipt, envelope, recipient_id, "ack", "")
            return
        if retry in self._nacked:
            self._nacked.discard(retry)  # it failed before: handle it again
        elif envelope.seq <= self._routed.get(key, 0):
            if envelope.seq <= self._handled.get(key, 0):
                # Handled before (its receipt was lost): ack again, do not handle twice.
                self._nursery.start_soon(self._receipt, envelope, recipient_id, "ack", "")
            return
        self._routed[key] = max(envelope.seq, self._routed.get(key, 0))
        queue = identity.queues.get(envelope.session_id)
        if queue is None:
            queue = identity.queues[envelope.session_id] = deque()
            self._nursery.start_soon(self._drain, identity, envelope.session_id, queue)
        queue.append(envelope)

    async def _drain(self, identity: Identity, session_id: str, queue: deque[Envelope]) -> None:
        while queue:
            envelope = queue[0]
            status, reason = "ack", ""
            try:
                await identity.receive(envelope)
            except Exception as exc:
                log.exception("%s failed to handle %s", identity, envelope.envelope_id)
                status, reason = "nack", f"{type(exc).__name__}: {exc}"
                self._nacked.add((identity.agent_id, session_id, envelope.seq))
            queue.popleft()
            key = (identity.agent_id, session_id)
            self._handled[key] = max(envelope.seq, self._handled.get(key, 0))
            if envelope.event_type in ENDINGS and status == "ack":
                self._forget_session(key)
            await self._receipt(envelope, identity.agent_id, status, reason)
        del identity.queues[session_id]

    def _forget_session(self, key: tuple[str, str]) -> None:
        """A session ended: keep one number for it (bounded), not its live marks."""
        self._ended[key] = self._handled.pop(key, 0)
        self._routed.pop(key, None)
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    async def _receipt(
        self, envelope: Envelope, recipient_id: str, status: str, reason: str
    ) -> None:
        conn = self._conn
        if conn is not None:
            await conn.send_frame(
                ReceiptFrame(
                    envelope_id=envelope.envelope_id,
                    status=status,
                    recipient_id=recipient_id,
                    session_id=envelope.session_id,
                    seq=envelope.seq,
                    reason=reason,
                )
            )
        else:
            await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        """End the connection and its loops; identities stay registered. Idempotent."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        for identity in self._clients.values():
            await identity.disconnect()
        if isinstance(self._api, RemoteHub):
            self._api.fail("the HubClient is closed")
            self._wake.set()  # the runner closes the connection and ends
            await trio.lowlevel.checkpoint()
            return
        if self._conn is not None:
            await self._conn.aclose()
        if self._scope is not None:
            self._scope.cancel()

    async def shutdown(self) -> None:
        """Unregister every identity of this client, then :meth:`close`."""
        for identity in list(self._clients.values()):
            try:
                await self._api.unregister(identity.agent_id)
            except NetworkError as exc:
                log.warning("shutdown: could not unregister %s: %s", identity, exc)
        await self.close()  # disconnects them all: their waiters wake
        self._clients.clear()

    # -- identities --------------------------------------------------------------------------

    def _with_link_auth(self, passport: Passport) -> Passport:
        """Present the link's API key for this name when the passport carries no auth."""
        if isinstance(self._link, WsLink) and passport.auth.scheme in ("none", ""):
            scheme, claim = self._link.claim_for(passport.name)
            if scheme != "none":
                return attrs.evolve(
                    passport, auth=attrs.evolve(passport.auth, scheme=scheme, claim=claim)
                )
        return passport

    async def _register(
        self,
        passport: Passport,
        resume: Resume | None,
        skill_md: str | None,
        rule: Rule | None,
    ) -> tuple[Passport, Resume, Rule]:
        if self._closed:
            raise RuntimeError("HubClient is closed")
        await self._ensure_connected()
        api = self._api
        stamped = await api.register(
            self._with_link_auth(passport), resume or Resume(), skill_md=skill_md, rule=rule
        )
        assert stamped.agent_id is not None
        if isinstance(api, Hub):
            assert self._conn is not None
            await api.bind_endpoint(self._conn.endpoint_id, stamped.agent_id)
        # (over a network, the 'register' op bound this connection already)
        return stamped, await api.get_resume(stamped.agent_id), await api.get_rule(stamped.agent_id)

    async def register(
        self,
        agent: Agent,
        passport: Passport,
        resume: Resume | None = None,
        *,
        skill_md: str | None = None,
        rule: Rule | None = None,
        attach_plugin: bool = True,
    ) -> AgentClient:
        """Register an agent and return its AgentClient (bound to this connection).

        ``attach_plugin`` is accepted for compatibility with the seed and does nothing.

        Raises:
          ValueError: ``passport.kind`` is ``"human"`` (use :meth:`register_human`).
          RuntimeError: this client is closed.
        """
        if passport.kind == "human":
            raise ValueError(f"passport {passport.name!r} is a human's: use register_human()")
        stamped, resume, rule = await self._register(passport, resume, skill_md, rule)
        client = AgentClient(
            agent=agent, passport=stamped, resume=resume, rule=rule, hub_client=self
        )
        self._clients[client.agent_id] = client
        return client

    async def register_human(
        self,
        passport: Passport,
        resume: Resume | None = None,
        *,
        skill_md: str | None = None,
        rule: Rule | None = None,
        auto_ack_invites: bool = True,
    ) -> HumanClient:
        """Register a person and return their HumanClient.

        Raises:
          ValueError: ``passport.kind`` is set and is not ``"human"``.
          RuntimeError: this client is closed.
        """
        if passport.kind not in (None, "human"):
            raise ValueError(
                f"register_human requires kind='human', passport {passport.name!r} has "
                f"kind={passport.kind!r}"
            )
        stamped, resume, rule = await self._register(
            attrs.evolve(passport, kind="human"), resume, skill_md, rule
        )
        client = HumanClient(
            passport=stamped,
            resume=resume,
            rule=rule,
            hub_client=self,
            auto_ack_invites=auto_ack_invites,
        )
        self._clients[client.agent_id] = client
        return client

    async def attach(
        self,
        agent: Agent | None,
        name: str,
        *,
        passport: Passport | None = None,
        resume: Resume | None = None,
        rule: Rule | None = None,
        skill_md: str | None = None,
        auto_ack_invites: bool = True,
    ) -> AgentClient | HumanClient:
        """Re-bind an existing identity (after a restart or reconnect) by name.

        The hub replays, in WAL order, what the identity had not acked. If ``name`` is not
        registered, ``passport`` and ``resume`` register it (human passports via
        :meth:`register_human`).

        Raises:
          ValueError: ``name`` is unknown and no passport/resume were given, or an agent
            identity is attached without an ``agent``.
          AuthError: over a network, the link's key for ``name`` is missing or wrong.
        """
        if self._closed:
            raise RuntimeError("HubClient is closed")
        await self._ensure_connected()
        api = self._api
        agent_id = await api.find_agent(name)
        if agent_id is None:
            if passport is None or resume is None:
                raise ValueError(
                    f"agent {name!r} is not registered; passport and resume are required "
                    "to register it"
                )
            if passport.kind == "human":
                return await self.register_human(
                    passport,
                    resume,
                    skill_md=skill_md,
                    rule=rule,
                    auto_ack_invites=auto_ack_invites,
                )
            if agent is None:
                raise ValueError(f"attaching agent {name!r} needs the agent object")
            return await self.register(agent, passport, resume, skill_md=skill_md, rule=rule)
        stamped = await api.get_agent(agent_id)
        common: dict[str, Any] = {
            "passport": stamped,
            "resume": await api.get_resume(agent_id),
            "rule": await api.get_rule(agent_id),
            "hub_client": self,
        }
        client: AgentClient | HumanClient
        if stamped.effective_kind == "human":
            client = HumanClient(auto_ack_invites=auto_ack_invites, **common)
        elif agent is None:
            raise ValueError(f"attaching agent {name!r} needs the agent object")
        else:
            client = AgentClient(agent=agent, **common)
        earlier = self._clients.get(agent_id)
        if earlier is not None:
            # Attaching again replaces the handle: the old one's waiters must not hang.
            await earlier.disconnect()
        # Known before the bind: replayed deliveries arrive right after it.
        self._clients[agent_id] = client
        try:
            if isinstance(api, Hub):
                assert self._conn is not None
                await api.bind_endpoint(self._conn.endpoint_id, agent_id, since={})
            else:
                assert isinstance(self._link, WsLink)
                scheme, claim = self._link.claim_for(name)
                await api.hello(name, scheme, claim, since={})
        except NetworkError:
            del self._clients[agent_id]
            raise
        return client

    # -- the seed's pass-throughs ------------------------------------------------------------

    async def get_agent(self, name_or_id: str) -> Passport:
        return await self._api.get_agent(name_or_id)

    async def get_resume(self, agent_id: str) -> Resume:
        return await self._api.get_resume(agent_id)

    async def get_skill(self, agent_id: str) -> str | None:
        return await self._api.get_skill(agent_id)

    async def get_rule(self, agent_id: str) -> Rule:
        return await self._api.get_rule(agent_id)

    async def list_agents(
        self,
        *,
        capability: str | None = None,
        query: str | None = None,
        sort_by: str | None = None,
        limit: int = 50,
        kind: str | None = None,
    ) -> list[Passport]:
        return await self._api.list_agents(
            capability=capability, query=query, kind=kind, sort_by=sort_by, limit=limit
        )

    async def set_resume(self, agent_id: str, resume: Resume) -> None:
        await self._api.set_resume(agent_id, resume)

    async def set_skill(self, agent_id: str, skill_md: str | None) -> None:
        await self._api.set_skill(agent_id, skill_md)

    async def set_rule(self, agent_id: str, rule: Rule) -> None:
        await self._api.set_rule(agent_id, rule)

    async def unregister_agent(self, agent_id: str) -> None:
        await self._api.unregister(agent_id)
        identity = self._clients.pop(agent_id, None)
        if identity is not None:
            await identity.disconnect()

    async def create_session(
        self,
        *,
        creator_id: str,
        manifest_type: str,
        manifest_version: int = 1,
        participants: Sequence[str],
        required_acks: int | None = None,
        ttl: str | int | None = None,
        knobs: dict[str, object] | None = None,
        intent: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> SessionMetadata:
        return await self._api.create_session(
            creator_id=creator_id,
            manifest_type=manifest_type,
            manifest_version=manifest_version,
            participants=participants,
            required_acks=required_acks,
            ttl=ttl,
            knobs=knobs,
            intent=intent,
            labels=labels,
        )

    async def get_session(self, session_id: str) -> SessionMetadata:
        return await self._api.get_session(session_id)

    async def list_sessions(
        self, *, agent_id: str | None = None, include_terminal: bool = False, limit: int = 50
    ) -> list[SessionMetadata]:
        return await self._api.list_sessions(
            agent_id=agent_id, include_terminal=include_terminal, limit=limit
        )

    async def close_session(self, session_id: str, *, reason: str = "") -> SessionMetadata:
        return await self._api.close_session(session_id, reason=reason)

    async def post_envelope(self, envelope: Envelope) -> str:
        if self._closed:
            raise RuntimeError("HubClient is closed")
        return (await self._api.post(envelope)).envelope_id

    async def read_wal(
        self, session_id: str, *, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        return await self._api.read_wal(session_id, since=since, until=until)

    def can_send(self, session_id: str, sender_id: str, *, event_type: str | None = None) -> bool:
        """Whether the session type would accept a post from ``sender_id`` now (a turn probe).

        Synchronous, as in the seed, in process only: over a network use :meth:`acan_send`.
        """
        if self._hub is None:
            raise RuntimeError("can_send is synchronous in process only; use 'await acan_send()'")
        return self._hub.can_send(session_id, sender_id, event_type=event_type)

    async def acan_send(
        self, session_id: str, sender_id: str, *, event_type: str | None = None
    ) -> bool:
        """:meth:`can_send`, awaitable, in process and over a network."""
        return await self._api.acan_send(session_id, sender_id, event_type=event_type)

    def default_view_policy(self, session_id: str, participant_id: str) -> ViewPolicy:
        """The session type's view for ``participant_id`` (over a network: of a session this
        client has fetched or opened)."""
        if self._hub is not None:
            return self._hub.default_view_policy(session_id, participant_id)
        assert isinstance(self._api, RemoteHub)
        metadata = self._api.cached_session(session_id)
        if metadata is None:
            raise NotFoundError(
                f"session {session_id} is not known to this client yet: get_session() it first"
            )
        return self.session_type_for(metadata).default_view_policy(metadata, participant_id)

    async def get_task(self, task_id: str) -> TaskMetadata:
        return await self._api.get_task(task_id)

    async def list_tasks(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        state: TaskState | None = None,
        limit: int = 50,
    ) -> list[TaskMetadata]:
        return await self._api.list_tasks(
            agent_id=agent_id, session_id=session_id, state=state, limit=limit
        )

    async def observe_task(self, metadata: TaskMetadata) -> None:
        await self._api.observe_task(metadata)

    async def update_task(
        self,
        task_id: str,
        *,
        state: TaskState | None = None,
        progress: dict[str, object] | None = None,
        result: object | None = None,
        error: str | None = None,
    ) -> None:
        await self._api.update_task(
            task_id, state=state, progress=progress, result=result, error=error
        )

    async def record_observation(
        self,
        *,
        owner_id: str,
        capability: str,
        outcome: TaskState,
        latency_ms: int | None = None,
        task_id: str | None = None,
    ) -> None:
        await self._api.record_observation(
            owner_id=owner_id,
            capability=capability,
            outcome=outcome,
            latency_ms=latency_ms,
            task_id=task_id,
        )

    async def checkpoint_task(self, task_id: str, state: dict[str, Any]) -> None:
        await self._api.checkpoint_task(task_id, state)

    async def read_task_checkpoint(self, task_id: str) -> dict[str, Any] | None:
        return await self._api.read_task_checkpoint(task_id)

    # -- what the turn handler needs ---------------------------------------------------------

    def register_session_type(self, stype: AnySessionType) -> None:
        """Make a custom session type known to this client's turn handler."""
        self._session_types[(stype.name, stype.version)] = stype

    def session_type_for(self, metadata: SessionMetadata) -> AnySessionType:
        key = (metadata.manifest_type, metadata.manifest_version)
        stype = self._session_types.get(key)
        if stype is None and self._hub is not None:
            stype = self._hub.core.session_type(*key)
        if stype is None:
            raise NotFoundError(
                f"no session type registered for {key[0]}@v{key[1]} on this client "
                "(register_session_type)"
            )
        return stype

    async def pending_turn(self, session_id: str, agent_id: str) -> PendingTurn | None:
        """``agent_id``'s turn in the session by its session type, and what triggered it.

        None when it is not that agent's turn, or when the session type names no one (a
        free-form session).
        """
        if self._hub is None:
            turns = await self._api.pending_turns_for(agent_id, session_id=session_id)
            return turns[0] if turns else None
        metadata = await self._hub.get_session(session_id)
        state = self._hub.session_state(session_id)
        if state is None:
            return None
        turn = self.session_type_for(metadata).expected_next(metadata, state)
        if turn is None or turn.agent_id != agent_id:
            return None
        return PendingTurn(
            session_id=session_id, triggering_envelope_id=turn.triggering_envelope_id
        )

    def name_for(self, agent_id: str) -> str:
        return self._api.name_for(agent_id)

    async def learn_names(self, agent_ids: Sequence[str]) -> None:
        await self._api.learn_names(agent_ids)

    async def find_envelope_by_causation(
        self, session_id: str, *, sender_id: str, causation_id: str
    ) -> Envelope | None:
        return await self._api.find_envelope_by_causation(
            session_id, sender_id=sender_id, causation_id=causation_id
        )

    async def pending_turns_for(self, agent_id: str) -> list[PendingTurn]:
        return await self._api.pending_turns_for(agent_id)

    async def report_turn_failure(
        self, *, session_id: str, agent_id: str, envelope_id: str, exc: BaseException
    ) -> None:
        await self._api.report_turn_failure(
            session_id=session_id, agent_id=agent_id, envelope_id=envelope_id, exc=exc
        )
