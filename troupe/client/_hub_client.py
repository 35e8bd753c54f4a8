"""HubClient: one connection to a hub, serving any number of identities (the seed's API).

In process (``HubClient(LocalLink(hub))``) control calls go straight to the ``Hub`` and only
deliveries and receipts travel over the link; the client's receive loop runs in the hub's
nursery, so the client needs no nursery of its own and ends with the hub at the latest.

Deliveries are handled per (identity, session) in WAL order, by a task that exists while
that session has deliveries waiting; different sessions are handled concurrently. After an
envelope is handled the hub gets a receipt (``ack``, or ``nack`` if the handler raised), which
advances that identity's cursor: on a reconnect the hub replays what was not acked.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import trio

from .._errors import NetworkError
from ..hub import Hub, PendingTurn
from ..model import (
    Envelope,
    NotifyFrame,
    Passport,
    ReceiptFrame,
    Resume,
    Rule,
    SessionMetadata,
    TaskMetadata,
    TaskState,
)
from ..session_types import AnySessionType, ViewPolicy, builtin_types
from ..transport import LocalLink, LocalLinkClient
from ._agent_client import AgentClient
from ._human_client import HumanClient
from ._identity import Identity
from ._turn import Agent

log = logging.getLogger("troupe.client")


class HubClient:
    """One connection to a hub. A process should hold one per hub it talks to.

    Use it as an async context manager (``close()`` on exit: the connection ends, the
    identities stay registered) or call :meth:`close` / :meth:`shutdown` yourself.
    """

    def __init__(self, link: LocalLink, *, hub: Hub | None = None) -> None:
        self._link = link
        self._hub = hub if hub is not None else link.hub
        self._conn: LocalLinkClient | None = None
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._clients: dict[str, Identity] = {}
        self._closed = False
        self._connecting = trio.Lock()
        self._session_types: dict[tuple[str, int], AnySessionType] = {
            (t.name, t.version): t for t in builtin_types()
        }

    async def __aenter__(self) -> Self:
        await self._ensure_connected()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def hub(self) -> Hub:
        return self._hub

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def endpoint_id(self) -> str | None:
        return self._conn.endpoint_id if self._conn is not None else None

    def identities(self) -> list[Identity]:
        return list(self._clients.values())

    # -- the connection ----------------------------------------------------------------------

    async def _ensure_connected(self) -> LocalLinkClient:
        async with self._connecting:
            if self._closed:
                raise RuntimeError("HubClient is closed")
            if self._conn is None:
                conn = self._link.client()
                await conn.open()
                self._conn = conn
                self._scope = await self._hub.host(self._run, conn)
            return self._conn

    async def _run(
        self, conn: LocalLinkClient, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(scope)
                async for frame in conn.frames():
                    if isinstance(frame, NotifyFrame):
                        self._route(frame.envelope, frame.recipient_id)
                nursery.cancel_scope.cancel()

    def _route(self, envelope: Envelope, recipient_id: str) -> None:
        assert self._nursery is not None
        identity = self._clients.get(recipient_id)
        if identity is None:
            self._nursery.start_soon(
                self._receipt, envelope, recipient_id, "nack", "no such identity on this client"
            )
            return
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
            queue.popleft()
            await self._receipt(envelope, identity.agent_id, status, reason)
        del identity.queues[session_id]

    async def _receipt(
        self, envelope: Envelope, recipient_id: str, status: str, reason: str
    ) -> None:
        if self._conn is not None:
            await self._conn.send_frame(
                ReceiptFrame(
                    envelope_id=envelope.envelope_id,
                    status=status,
                    recipient_id=recipient_id,
                    session_id=envelope.session_id,
                    seq=envelope.seq,
                    reason=reason,
                )
            )

    async def close(self) -> None:
        """End the connection and its loops; identities stay registered. Idempotent."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        for identity in self._clients.values():
            await identity.disconnect()
        if self._conn is not None:
            await self._conn.aclose()
        if self._scope is not None:
            self._scope.cancel()

    async def shutdown(self) -> None:
        """Unregister every identity of this client, then :meth:`close`."""
        for identity in list(self._clients.values()):
            try:
                await self._hub.unregister(identity.agent_id)
            except NetworkError as exc:
                log.warning("shutdown: could not unregister %s: %s", identity, exc)
        await self.close()  # disconnects them all: their waiters wake
        self._clients.clear()

    # -- identities --------------------------------------------------------------------------

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
        conn = await self._ensure_connected()
        stamped = await self._hub.register(
            passport, resume or Resume(), skill_md=skill_md, rule=rule
        )
        assert stamped.agent_id is not None
        client = AgentClient(
            agent=agent,
            passport=stamped,
            resume=await self._hub.get_resume(stamped.agent_id),
            rule=await self._hub.get_rule(stamped.agent_id),
            hub_client=self,
        )
        self._clients[stamped.agent_id] = client
        await self._hub.bind_endpoint(conn.endpoint_id, stamped.agent_id)
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
        """
        if passport.kind not in (None, "human"):
            raise ValueError(
                f"register_human requires kind='human', passport {passport.name!r} has "
                f"kind={passport.kind!r}"
            )
        import attrs

        conn = await self._ensure_connected()
        stamped = await self._hub.register(
            attrs.evolve(passport, kind="human"), resume or Resume(), skill_md=skill_md, rule=rule
        )
        assert stamped.agent_id is not None
        client = HumanClient(
            passport=stamped,
            resume=await self._hub.get_resume(stamped.agent_id),
            rule=await self._hub.get_rule(stamped.agent_id),
            hub_client=self,
            auto_ack_invites=auto_ack_invites,
        )
        self._clients[stamped.agent_id] = client
        await self._hub.bind_endpoint(conn.endpoint_id, stamped.agent_id)
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
        """
        conn = await self._ensure_connected()
        agent_id = self._hub.find_agent_id(name)
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
        stamped = await self._hub.get_agent(agent_id)
        client: AgentClient | HumanClient
        common: dict[str, Any] = {
            "passport": stamped,
            "resume": await self._hub.get_resume(agent_id),
            "rule": await self._hub.get_rule(agent_id),
            "hub_client": self,
        }
        if stamped.effective_kind == "human":
            client = HumanClient(auto_ack_invites=auto_ack_invites, **common)
        elif agent is None:
            raise ValueError(f"attaching agent {name!r} needs the agent object")
        else:
            client = AgentClient(agent=agent, **common)
        self._clients[agent_id] = client
        await self._hub.bind_endpoint(conn.endpoint_id, agent_id, since={})
        return client

    # -- the seed's pass-throughs ------------------------------------------------------------

    async def get_agent(self, name_or_id: str) -> Passport:
        return await self._hub.get_agent(name_or_id)

    async def get_resume(self, agent_id: str) -> Resume:
        return await self._hub.get_resume(agent_id)

    async def get_skill(self, agent_id: str) -> str | None:
        return await self._hub.get_skill(agent_id)

    async def get_rule(self, agent_id: str) -> Rule:
        return await self._hub.get_rule(agent_id)

    async def list_agents(
        self,
        *,
        capability: str | None = None,
        query: str | None = None,
        sort_by: str | None = None,
        limit: int = 50,
        kind: str | None = None,
    ) -> list[Passport]:
        return await self._hub.list_agents(
            capability=capability, query=query, kind=kind, sort_by=sort_by, limit=limit
        )

    async def set_resume(self, agent_id: str, resume: Resume) -> None:
        await self._hub.set_resume(agent_id, resume)

    async def set_skill(self, agent_id: str, skill_md: str | None) -> None:
        await self._hub.set_skill(agent_id, skill_md)

    async def set_rule(self, agent_id: str, rule: Rule) -> None:
        await self._hub.set_rule(agent_id, rule)

    async def unregister_agent(self, agent_id: str) -> None:
        await self._hub.unregister(agent_id)
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
        return await self._hub.create_session(
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
        return await self._hub.get_session(session_id)

    async def list_sessions(
        self, *, agent_id: str | None = None, include_terminal: bool = False, limit: int = 50
    ) -> list[SessionMetadata]:
        return await self._hub.list_sessions(
            agent_id=agent_id, include_terminal=include_terminal, limit=limit
        )

    async def close_session(self, session_id: str, *, reason: str = "") -> SessionMetadata:
        return await self._hub.close_session(session_id, reason=reason)

    async def post_envelope(self, envelope: Envelope) -> str:
        if self._closed:
            raise RuntimeError("HubClient is closed")
        return await self._hub.post_envelope(envelope)

    async def read_wal(
        self, session_id: str, *, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        return await self._hub.read_wal(session_id, since=since, until=until)

    def can_send(self, session_id: str, sender_id: str, *, event_type: str | None = None) -> bool:
        return self._hub.can_send(session_id, sender_id, event_type=event_type)

    def default_view_policy(self, session_id: str, participant_id: str) -> ViewPolicy:
        return self._hub.default_view_policy(session_id, participant_id)

    async def get_task(self, task_id: str) -> TaskMetadata:
        return await self._hub.get_task(task_id)

    async def list_tasks(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        state: TaskState | None = None,
        limit: int = 50,
    ) -> list[TaskMetadata]:
        return await self._hub.list_tasks(
            agent_id=agent_id, session_id=session_id, state=state, limit=limit
        )

    async def observe_task(self, metadata: TaskMetadata) -> None:
        await self._hub.observe_task(metadata)

    async def update_task(
        self,
        task_id: str,
        *,
        state: TaskState | None = None,
        progress: dict[str, object] | None = None,
        result: object | None = None,
        error: str | None = None,
    ) -> None:
        await self._hub.update_task(
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
        await self._hub.record_observation(
            owner_id=owner_id,
            capability=capability,
            outcome=outcome,
            latency_ms=latency_ms,
            task_id=task_id,
        )

    # -- what the turn handler needs ---------------------------------------------------------

    def register_session_type(self, stype: AnySessionType) -> None:
        """Make a custom session type known to this client's turn handler."""
        self._session_types[(stype.name, stype.version)] = stype

    def session_type_for(self, metadata: SessionMetadata) -> AnySessionType:
        key = (metadata.manifest_type, metadata.manifest_version)
        stype = self._session_types.get(key) or self._hub.core.session_type(*key)
        if stype is None:
            from .._errors import NotFoundError

            raise NotFoundError(f"no session type registered for {key[0]}@v{key[1]}")
        return stype

    def session_state(self, session_id: str) -> Any:
        """The session type's current state of the session (None before it was loaded)."""
        return self._hub.session_state(session_id)

    def name_for(self, agent_id: str) -> str:
        return self._hub.name_for(agent_id)

    async def find_envelope_by_causation(
        self, session_id: str, *, sender_id: str, causation_id: str
    ) -> Envelope | None:
        return await self._hub.find_envelope_by_causation(
            session_id, sender_id=sender_id, causation_id=causation_id
        )

    async def pending_turns_for(self, agent_id: str) -> list[PendingTurn]:
        return await self._hub.pending_turns_for(agent_id)

    async def report_turn_failure(
        self, *, session_id: str, agent_id: str, envelope_id: str, exc: BaseException
    ) -> None:
        await self._hub.report_turn_failure(
            session_id=session_id, agent_id=agent_id, envelope_id=envelope_id, exc=exc
        )
