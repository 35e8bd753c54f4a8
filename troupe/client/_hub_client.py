"""HubClient: one connection to a hub, serving any number of identities (the seed's API).

In process (``HubClient(LocalLink(hub))``) control calls go straight to the ``Hub`` and only
deliveries and receipts travel over the link; the client's receive loop runs in the hub's
nursery, so the client needs no nursery of its own and ends with the hub at the latest (its
identities are then disconnected: their waiters get ``Disconnected``); ``close()`` (the end
of ``async with``) waits for that loop and its turns to end.

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
from collections.abc import Sequence
from contextlib import AsyncExitStack, aclosing
from types import TracebackType
from typing import Any, Self, TypeVar

import attrs
import trio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)
from trio_websocket import HandshakeError

from .. import _tracing
from .._errors import ConnectionLost, IdentityInUse, NetworkError, NotFoundError, StoreError
from ..api import (
    Accepted,
    CanSend,
    CheckpointTask,
    CloseSession,
    CreateSession,
    FindAgentId,
    FindEnvelopeByCausation,
    GetAgent,
    GetResume,
    GetRule,
    GetSession,
    GetSkill,
    GetTask,
    HubApi,
    ListAgents,
    ListSessions,
    ListTasks,
    LocalHub,
    ObserveTask,
    PendingTurn,
    PendingTurnsFor,
    PostEnvelope,
    ReadTaskCheckpoint,
    ReadWal,
    RecordObservation,
    Register,
    ReportTurnFailure,
    Request,
    SetResume,
    SetRule,
    SetSkill,
    Unregister,
    UpdateTask,
)
from ..model import (
    ChunkFrame,
    Envelope,
    ErrorFrame,
    Frame,
    InvalidFrame,
    NotifyFrame,
    Passport,
    ResponseFrame,
    Resume,
    Rule,
    SessionMetadata,
    StreamChunk,
    TaskMetadata,
    TaskState,
    WelcomeFrame,
    is_substantive,
)
from ..session_types import AnySessionType, ViewPolicy, builtin_types
from ..transport import LocalLink, LocalLinkClient, WsLink, WsLinkClient
from ._agent_client import AgentClient, Handler
from ._human_client import HumanClient
from ._identity import Identity
from ._remote import RemoteHub
from ._router import Router
from ._streaming import ChunkRouter
from ._turn import Agent

log = logging.getLogger("troupe.client")

Link = LocalLink | WsLink
R = TypeVar("R")

#: How long (seconds) an in-process ``close()`` waits for the client's loop and the turns
#: in it to end after they were cancelled (a turn in a worker thread cannot be cancelled).
CLOSE_WAIT_S = 5.0


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
        self, link: Link, *, hub: LocalHub | None = None, reconnect_within: float = 60.0
    ) -> None:
        self._link = link
        self._hub: LocalHub | None = hub if hub is not None else getattr(link, "hub", None)
        self._api: HubApi = self._hub if self._hub is not None else RemoteHub()
        self._reconnect_within = reconnect_within
        self._conn: LocalLinkClient | WsLinkClient | None = None
        self._scope: trio.CancelScope | None = None
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        #: In process: the receive loop's task, and an event set once it (and every delivery
        #: task under it) has ended.
        self._loop_task: trio.lowlevel.Task | None = None
        self._loop_done: trio.Event | None = None
        self._clients: dict[str, Identity] = {}
        self._router = Router(self._clients, self._send_frame)
        self._chunks = ChunkRouter(self._clients, self._router)
        self._closed = False
        #: Why the hub closed this connection for good (an identity was taken over), if it did.
        self._taken_over: str | None = None
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
            self._router.nursery = self._nursery
        connected = False
        try:
            await self._ensure_connected()
            connected = True
        finally:
            if not connected and self._stack is not None:
                # __aexit__ will not run: leave the nursery here, or trio's nursery
                # stack is corrupted when the exception unwinds past it.
                await self._stack.aclose()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.close()
        finally:
            # Also when close() is cancelled: the nursery must be left in this task.
            if self._stack is not None:
                await self._stack.aclose()

    @property
    def hub(self) -> LocalHub | None:
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
        self._loop_task = trio.lowlevel.current_task()
        done = self._loop_done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = self._router.nursery = nursery
                    task_status.started(scope)
                    async with aclosing(conn.frames()) as frames:
                        async for frame in frames:
                            self._on_frame(frame)
                    nursery.cancel_scope.cancel()
        finally:
            # However the loop ended (close(), the hub closing the connection, or the hub
            # shutting down and cancelling it), nothing more will be delivered: the
            # identities' waiters must not hang.
            for identity in self._clients.values():
                identity._lose_connection()
            done.set()

    def _in_loop(self) -> bool:
        """Whether the current task runs under the receive loop (a turn, a callback)."""
        task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
        while task is not None:
            if task is self._loop_task:
                return True
            parent = task.parent_nursery
            task = parent.parent_task if parent is not None else None
        return False

    async def _send_frame(self, frame: Frame) -> None:
        """Send on the current connection; dropped between connections (a replay follows)."""
        conn = self._conn
        if conn is not None:
            await conn.send_frame(frame)
        else:
            await trio.lowlevel.checkpoint()

    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, NotifyFrame):
            self._router.route(frame.envelope, frame.recipient_id)
        elif isinstance(frame, ChunkFrame):
            self._chunks.route(frame.chunk, frame.recipient_id)
        elif (
            isinstance(frame, ErrorFrame)
            and frame.code == IdentityInUse.code
            and not frame.request_id
            and isinstance(self._api, RemoteHub)
        ):
            # Another connection took an identity over with its key, and the hub closes this
            # one: reconnecting would take it back, and so on. Stop, and say why.
            log.error("the hub closed this connection: %s", frame.message)
            self._taken_over = frame.message
            self._api.fail(f"the hub closed this connection: {frame.message}")
            self._wake.set()
        elif isinstance(frame, ResponseFrame | WelcomeFrame | ErrorFrame | InvalidFrame):
            if isinstance(frame, InvalidFrame):
                log.warning("undecodable frame from the hub: %s", frame.reason)
            if isinstance(self._api, RemoteHub):
                self._api.answer(frame)  # (an undecodable answer fails its call)

    async def close(self) -> None:
        """End the connection and its loops; identities stay registered. Idempotent.

        First the receipts of the deliveries already handed over are sent (a person's
        envelope taken while its callbacks still ran), so the hub does not replay them.

        In process, returns once the receive loop and its turns have ended (waiting, even
        when cancelled, at most ``CLOSE_WAIT_S`` seconds for turns that ignore a cancel).
        From then on every call to the hub raises ``RuntimeError`` naming the method.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        for identity in self._clients.values():
            await identity.disconnect()
        # What was handed over must not be replayed to the next connection: its receipts
        # go before the connection ends (shielded: an outer cancel must not lose them).
        with trio.move_on_after(CLOSE_WAIT_S, shield=True):
            await self._router.flush()
        if isinstance(self._api, RemoteHub):
            self._api.fail("the HubClient is closed")
            self._wake.set()  # the runner closes the connection and ends
            if self._conn is None and self._scope is not None:
                # Between connections: stop trying to reconnect (that may take up to
                # reconnect_within seconds).
                self._scope.cancel()
            await trio.lowlevel.checkpoint()
            return
        if self._conn is not None:
            await self._conn.aclose()
        if self._scope is not None:
            self._scope.cancel()
        await self._wait_loop_done()

    async def _wait_loop_done(self) -> None:
        """Wait, shielded and bounded, until the in-process receive loop has ended.

        Its delivery tasks run in the hub's nursery: without this wait a turn that cannot be
        cancelled (a blocking call in a worker thread) would outlive ``async with HubClient``.
        Not from under the loop itself (a turn closing its own client): that would wait for
        itself.
        """
        done = self._loop_done
        if done is None or done.is_set() or self._in_loop():
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(CLOSE_WAIT_S, shield=True) as waited:
            await done.wait()
        if waited.cancelled_caught:
            log.warning(
                "HubClient.close(): its deliveries did not end within %ss; leaving them to the hub",
                CLOSE_WAIT_S,
            )

    async def shutdown(self) -> None:
        """Unregister every identity of this client, then :meth:`close`."""
        for identity in list(self._clients.values()):
            try:
                await self._api.call(Unregister(agent_id=identity.agent_id))
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
        await self._ensure_connected()
        stamped = await self._api.call(
            Register(
                passport=self._with_link_auth(passport),
                resume=resume or Resume(),
                skill_md=skill_md,
                rule=rule,
            )
        )
        agent_id = stamped.agent_id
        assert agent_id is not None
        if self._hub is not None:
            assert self._conn is not None
            try:
                await self._hub.bind_endpoint(self._conn.endpoint_id, agent_id)
            except StoreError as exc:
                await self._hub.unregister_after_failed_bind(agent_id, exc)
        # (over a network, the 'register' op bound this connection already)
        return (
            stamped,
            await self._api.call(GetResume(agent_id=agent_id)),
            await self._api.call(GetRule(agent_id=agent_id)),
        )

    async def register(
        self,
        agent: Agent,
        passport: Passport,
        resume: Resume | None = None,
        *,
        skill_md: str | None = None,
        rule: Rule | None = None,
        attach_plugin: bool = True,
        handler: Handler | None = None,
        auto_ack_invites: bool = True,
    ) -> AgentClient:
        """Register an agent and return its AgentClient (bound to this connection).

        ``handler`` replaces the default turn handler (see :meth:`AgentClient.set_handler`);
        with ``auto_ack_invites=False`` invites are not acked for the agent (its handler
        calls ``accept_invite`` / ``reject_invite``). ``attach_plugin`` is accepted for
        compatibility with the seed and does nothing.

        Raises:
          ValueError: ``passport.kind`` is ``"human"`` (use :meth:`register_human`).
          RuntimeError: this client is closed.
        """
        self._check_open("register")
        if passport.kind == "human":
            raise ValueError(f"passport {passport.name!r} is a human's: use register_human()")
        stamped, resume, rule = await self._register(passport, resume, skill_md, rule)
        client = AgentClient(
            agent=agent,
            passport=stamped,
            resume=resume,
            rule=rule,
            hub_client=self,
            handler=handler,
            auto_ack_invites=auto_ack_invites,
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
        self._check_open("register_human")
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
          RuntimeError: this client is closed.
        """
        self._check_open("attach")
        await self._ensure_connected()
        api = self._api
        agent_id = await api.call(FindAgentId(name=name))
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
            return await self.register(
                agent,
                passport,
                resume,
                skill_md=skill_md,
                rule=rule,
                auto_ack_invites=auto_ack_invites,
            )
        stamped = await api.call(GetAgent(name_or_id=agent_id))
        common: dict[str, Any] = {
            "passport": stamped,
            "resume": await api.call(GetResume(agent_id=agent_id)),
            "rule": await api.call(GetRule(agent_id=agent_id)),
            "hub_client": self,
        }
        client: AgentClient | HumanClient
        if stamped.effective_kind == "human":
            client = HumanClient(auto_ack_invites=auto_ack_invites, **common)
        elif agent is None:
            raise ValueError(f"attaching agent {name!r} needs the agent object")
        else:
            client = AgentClient(agent=agent, auto_ack_invites=auto_ack_invites, **common)
        earlier = self._clients.get(agent_id)
        # Known before the bind: replayed deliveries arrive right after it; and before the
        # old handle is let go, so that what is queued for it goes to the new one.
        self._clients[agent_id] = client
        if earlier is not None:
            await earlier.disconnect()  # the old handle's waiters must not hang
        try:
            if self._hub is not None:
                assert self._conn is not None
                await self._hub.bind_endpoint(self._conn.endpoint_id, agent_id, since={})
            else:
                assert isinstance(self._link, WsLink)
                assert isinstance(api, RemoteHub)
                scheme, claim = self._link.claim_for(name)
                await api.hello(name, scheme, claim, since={})
        except NetworkError:
            del self._clients[agent_id]
            raise
        return client

    # -- the hub's operations ----------------------------------------------------------------

    def _check_open(self, method: str) -> None:
        """Refuse a call of ``method`` once the client is closed (every call to the hub).

        In process the hub would still answer; over a network the call would fail with
        another error. Either way the caller gets the one error that says what happened.

        Raises:
          RuntimeError: this client is closed.
        """
        if self._closed:
            raise RuntimeError(f"HubClient is closed: cannot call {method}")

    async def call(self, request: Request[R], *, method: str | None = None) -> R:
        """Run any hub request (a ``troupe.api`` record) and return its typed result.

        Every method below is this with its record; an operation with no method of its
        own is reached the same way: ``await hc.call(GetTask(task_id=...))``.

        Raises:
          RuntimeError: this client is closed (naming ``method``, the op by default).
          DecodeError: a field of the request does not fit its type (named).
          NetworkError: what the hub refused the request with.
        """
        self._check_open(method or request.op)
        return await self._api.call(request)

    async def get_agent(self, name_or_id: str) -> Passport:
        return await self.call(GetAgent(name_or_id=name_or_id))

    async def get_resume(self, agent_id: str) -> Resume:
        return await self.call(GetResume(agent_id=agent_id))

    async def get_skill(self, agent_id: str) -> str | None:
        return await self.call(GetSkill(agent_id=agent_id))

    async def get_rule(self, agent_id: str) -> Rule:
        return await self.call(GetRule(agent_id=agent_id))

    async def list_agents(
        self,
        *,
        capability: str | None = None,
        query: str | None = None,
        sort_by: str | None = None,
        limit: int = 50,
        kind: str | None = None,
    ) -> list[Passport]:
        return await self.call(
            ListAgents(capability=capability, query=query, kind=kind, sort_by=sort_by, limit=limit)
        )

    async def set_resume(self, agent_id: str, resume: Resume) -> None:
        await self.call(SetResume(agent_id=agent_id, resume=resume))

    async def set_skill(self, agent_id: str, skill_md: str | None) -> None:
        await self.call(SetSkill(agent_id=agent_id, skill_md=skill_md))

    async def set_rule(self, agent_id: str, rule: Rule) -> None:
        await self.call(SetRule(agent_id=agent_id, rule=rule))

    async def unregister_agent(self, agent_id: str) -> None:
        await self.call(Unregister(agent_id=agent_id), method="unregister_agent")
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
        return await self.call(
            CreateSession(
                creator_id=creator_id,
                manifest_type=manifest_type,
                manifest_version=manifest_version,
                participants=tuple(participants),
                required_acks=required_acks,
                ttl=ttl,
                knobs=dict(knobs) if knobs is not None else None,
                intent=intent,
                labels=labels,
            )
        )

    async def get_session(self, session_id: str) -> SessionMetadata:
        return await self.call(GetSession(session_id=session_id))

    async def list_sessions(
        self, *, agent_id: str | None = None, include_terminal: bool = False, limit: int = 50
    ) -> list[SessionMetadata]:
        return await self.call(
            ListSessions(agent_id=agent_id, include_terminal=include_terminal, limit=limit)
        )

    async def close_session(self, session_id: str, *, reason: str = "") -> SessionMetadata:
        return await self.call(CloseSession(session_id=session_id, reason=reason))

    async def post_envelope(self, envelope: Envelope) -> str:
        self._check_open("post_envelope")
        tracer = _tracing.ACTIVE
        if tracer is not None:
            return (await tracer.client_post(self._post, envelope)).envelope_id
        return (await self._post(envelope)).envelope_id

    async def _post(self, envelope: Envelope) -> Accepted:
        return await self._api.call(PostEnvelope(envelope=envelope))

    async def stream_chunk(self, chunk: StreamChunk) -> None:
        """Send a streamed chunk to the hub (best effort; see ``ChunkStream``).

        A chunk the hub refuses is dropped and counted by it (over a network it is not
        answered, and in process it is not raised either, so both behave alike).
        """
        self._check_open("stream_chunk")
        if isinstance(self._api, RemoteHub):
            await self._api.stream_chunk(chunk)
            return
        await trio.lowlevel.checkpoint()
        assert self._hub is not None
        try:
            self._hub.stream_chunk(chunk)
        except NetworkError as exc:
            log.debug("chunk of stream %s refused: %s", chunk.stream_id, exc)

    async def read_wal(
        self, session_id: str, *, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        """The slice ``wal[since:until]`` of the session's envelopes (negative bounds count
        from the end, as in Python: ``since=-2`` is the last two).

        Over a network the hub answers a bounded page at a time: read here page by page.
        """
        found: list[Envelope] = []
        while True:
            page = await self.call(ReadWal(session_id=session_id, since=since, until=until))
            found.extend(page.envelopes)
            if not page.more or not page.envelopes:
                return found
            since = page.envelopes[-1].seq

    def can_send(self, session_id: str, sender_id: str, *, event_type: str | None = None) -> bool:
        """Whether the session type would accept a post from ``sender_id`` now (a turn probe).

        Synchronous, as in the seed, in process only: over a network use :meth:`acan_send`.
        """
        self._check_open("can_send")
        if self._hub is None:
            raise RuntimeError("can_send is synchronous in process only; use 'await acan_send()'")
        return self._hub.can_send(session_id, sender_id, event_type=event_type)

    async def acan_send(
        self, session_id: str, sender_id: str, *, event_type: str | None = None
    ) -> bool:
        """:meth:`can_send`, awaitable, in process and over a network."""
        request = CanSend(session_id=session_id, sender_id=sender_id, event_type=event_type)
        return await self.call(request, method="acan_send")

    async def adapter_state(self, session_id: str) -> Any:
        """The session type's state of the session (the reference's "adapter state").

        In process: the hub's last published state (``Hub.session_state``). Over a network,
        or for a session the hub has not loaded since it opened: folded here from the
        session's WAL (over a network only a participant may read it).

        Raises:
          NotFoundError: no such session, or its session type is not registered here.
        """
        self._check_open("adapter_state")
        if self._hub is not None:
            state = self._hub.session_state(session_id)
            if state is not None:
                await trio.lowlevel.checkpoint()
                return state
        metadata = await self.get_session(session_id)
        stype = self.session_type_for(metadata)
        state = stype.initial_state(metadata)
        for envelope in await self.read_wal(session_id):
            if is_substantive(envelope.event_type):
                state = stype.fold(envelope, state)
        return state

    def default_view_policy(self, session_id: str, participant_id: str) -> ViewPolicy:
        """The session type's view for ``participant_id`` (over a network: of a session this
        client has fetched or opened)."""
        self._check_open("default_view_policy")
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
        return await self.call(GetTask(task_id=task_id))

    async def list_tasks(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        state: TaskState | None = None,
        limit: int = 50,
    ) -> list[TaskMetadata]:
        return await self.call(
            ListTasks(agent_id=agent_id, session_id=session_id, state=state, limit=limit)
        )

    async def observe_task(self, metadata: TaskMetadata) -> None:
        await self.call(ObserveTask(task=metadata))

    async def update_task(
        self,
        task_id: str,
        *,
        state: TaskState | None = None,
        progress: dict[str, object] | None = None,
        result: object | None = None,
        error: str | None = None,
    ) -> None:
        await self.call(
            UpdateTask(
                task_id=task_id,
                state=state,
                progress=dict(progress) if progress is not None else None,
                result=result,
                error=error,
            )
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
        await self.call(
            RecordObservation(
                owner_id=owner_id,
                capability=capability,
                outcome=outcome,
                latency_ms=latency_ms,
                task_id=task_id,
            )
        )

    async def checkpoint_task(self, task_id: str, state: dict[str, Any]) -> None:
        await self.call(CheckpointTask(task_id=task_id, state=state))

    async def read_task_checkpoint(self, task_id: str) -> dict[str, Any] | None:
        return await self.call(ReadTaskCheckpoint(task_id=task_id))

    # -- what the turn handler needs ---------------------------------------------------------

    def register_session_type(self, stype: AnySessionType) -> None:
        """Make a custom session type known to this client's turn handler."""
        self._session_types[(stype.name, stype.version)] = stype

    def session_type_for(self, metadata: SessionMetadata) -> AnySessionType:
        key = (metadata.manifest_type, metadata.manifest_version)
        stype = self._session_types.get(key)
        if stype is None and self._hub is not None:
            stype = self._hub.session_type(*key)
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
        request = PendingTurnsFor(agent_id=agent_id, session_id=session_id)
        turns = await self.call(request, method="pending_turn")
        return turns[0] if turns else None

    def name_for(self, agent_id: str) -> str:
        return self._api.name_for(agent_id)

    async def learn_names(self, agent_ids: Sequence[str]) -> None:
        self._check_open("learn_names")
        if isinstance(self._api, RemoteHub):
            await self._api.learn_names(agent_ids)
        else:
            await trio.lowlevel.checkpoint()  # in process ``name_for`` knows every name

    async def find_envelope_by_causation(
        self, session_id: str, *, sender_id: str, causation_id: str
    ) -> Envelope | None:
        return await self.call(
            FindEnvelopeByCausation(
                session_id=session_id, sender_id=sender_id, causation_id=causation_id
            )
        )

    async def pending_turns_for(self, agent_id: str) -> list[PendingTurn]:
        return await self.call(PendingTurnsFor(agent_id=agent_id))

    async def report_turn_failure(
        self, *, session_id: str, agent_id: str, envelope_id: str, exc: BaseException
    ) -> None:
        await self.call(
            ReportTurnFailure(
                session_id=session_id,
                agent_id=agent_id,
                envelope_id=envelope_id,
                exc_type=type(exc).__name__,
                exc_message=str(exc),
            )
        )

    # -- the network side: one WebSocket connection at a time, reconnecting ------------------
    #
    # The runner owns the connection: it connects (tenacity backoff with full jitter, bounded
    # by ``reconnect_within`` on trio's clock), reads frames, and when the connection drops it
    # reconnects, re-binds every identity with a Hello that replays what it had not acked, and
    # lets the calls waiting for the connection go once they are bound again.

    async def _run_remote(
        self, link: WsLink, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """Own the WebSocket connection: connect, read, and reconnect until closed."""
        api = self._api
        assert isinstance(api, RemoteHub)
        with trio.CancelScope() as scope:
            first = True
            while not self._closing():
                failure: OSError | HandshakeError | trio.TooSlowError | None = None
                async with trio.open_nursery() as conn_nursery:
                    try:
                        conn = await self._connect(link, conn_nursery)
                    except (OSError, HandshakeError, trio.TooSlowError) as exc:
                        failure = exc
                    else:
                        if first:
                            api.attach(conn)
                            api.ready(conn)
                            task_status.started(scope)
                        await self._serve_connection(conn, conn_nursery, link, rebind=not first)
                        first = False
                # Raised here, outside the connection's nursery, so that callers get a
                # ConnectionLost and not an exception group.
                if failure is not None:
                    why = f"could not reach {link.url}: {str(failure) or type(failure).__name__}"
                    log.error("giving up: %s", why)
                    api.fail(why)
                    if first:
                        raise ConnectionLost(why) from failure
                    await self._lose_identities()
                    return
                if self._taken_over is not None:
                    # The hub closed this connection because another took an identity
                    # over: calls fail saying so (api.fail), the identities are let go.
                    await self._lose_identities()
                    return
                if not self._closing():
                    log.warning("lost the connection to %s; reconnecting", link.url)

    async def _serve_connection(
        self, conn: WsLinkClient, nursery: trio.Nursery, link: WsLink, *, rebind: bool
    ) -> None:
        """Read ``conn`` until it ends or close() is called; after a reconnect, re-bind."""
        api = self._api
        assert isinstance(api, RemoteHub)
        self._conn = conn
        self._wake = wake = trio.Event()
        if self._closing():
            wake.set()  # close() ran while this connection was being made
        nursery.start_soon(self._read, conn, wake)
        if rebind:
            # Calls wait until every identity is bound again: a post retried now would
            # otherwise reach the hub before its sender's binding and be refused.
            api.attach(conn)
            nursery.start_soon(self._rebind, link, conn)
        await wake.wait()  # the connection ended, or close() was called
        self._conn = None
        api.detach("the connection closed")
        # Close while the library's reader still runs, so that a closing handshake can
        # complete (bounded); when the hub dropped us this frees the socket.
        await conn.aclose()
        nursery.cancel_scope.cancel()

    def _closing(self) -> bool:
        # A call, not an attribute read: mypy would narrow ``self._closed`` across awaits.
        return self._closed or self._taken_over is not None

    async def _read(self, conn: WsLinkClient, wake: trio.Event) -> None:
        async with aclosing(conn.frames()) as frames:
            async for frame in frames:
                self._on_frame(frame)
        wake.set()

    async def _connect(self, link: WsLink, nursery: trio.Nursery) -> WsLinkClient:
        """Connect, retrying with exponential backoff and jitter for ``reconnect_within`` s."""
        last: OSError | HandshakeError | trio.TooSlowError | None = None
        try:
            with trio.fail_after(self._reconnect_within):
                async for attempt in AsyncRetrying(
                    sleep=trio.sleep,
                    # Full jitter: a random wait up to 0.05 s * 2**attempt (at most 5 s), so
                    # clients dropped together do not come back together.
                    wait=wait_random_exponential(multiplier=0.05, max=5.0),
                    retry=retry_if_exception_type((OSError, HandshakeError, trio.TooSlowError)),
                    reraise=True,
                ):
                    with attempt:
                        try:
                            return await link.connect(nursery)
                        except (OSError, HandshakeError, trio.TooSlowError) as exc:
                            last = exc
                            raise
        except trio.TooSlowError:
            if last is None:
                raise
            # Out of time: say what the last attempt ran into, not just "too slow".
            raise last from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _rebind(self, link: WsLink, conn: WsLinkClient) -> None:
        """After a reconnect: bind every identity again and be replayed what it missed;
        then let the calls waiting for the connection go."""
        api = self._api
        assert isinstance(api, RemoteHub)
        for identity in list(self._clients.values()):
            scheme, claim = link.claim_for(identity.passport.name)
            try:
                await self._hello_again(identity, scheme, claim)
            except ConnectionLost:
                return  # this connection is gone too; the next one re-binds
            except NetworkError as exc:
                log.error("could not re-bind %s: %s", identity, exc)
        api.ready(conn)

    async def _hello_again(self, identity: Identity, scheme: str, claim: dict[str, Any]) -> None:
        """Re-bind one identity. The hub may still hold it on the connection that dropped
        (it lets a dead connection go within its ping interval + timeout): an anonymous
        bind is refused until then, so ``IdentityInUse`` is retried, with backoff, for at
        most ``reconnect_within`` seconds; then it is raised."""
        api = self._api
        assert isinstance(api, RemoteHub)

        def say_once(state: RetryCallState) -> None:
            if state.attempt_number == 1:
                log.warning(
                    "%s is still bound to another connection at the hub (the one that "
                    "dropped, until the hub lets it go): retrying for up to %ss",
                    identity,
                    self._reconnect_within,
                )

        with trio.move_on_after(self._reconnect_within):
            async for attempt in AsyncRetrying(
                sleep=trio.sleep,
                wait=wait_random_exponential(multiplier=0.05, max=2.0),
                retry=retry_if_exception_type(IdentityInUse),
                before_sleep=say_once,
            ):
                with attempt:
                    await api.hello(identity.passport.name, scheme, claim, since={}, early=True)
                    return
        await api.hello(identity.passport.name, scheme, claim, since={}, early=True)

    async def _lose_identities(self) -> None:
        # Not closed: calls go on failing with the ConnectionLost that says why (api.fail).
        for identity in self._clients.values():
            await identity.disconnect()
