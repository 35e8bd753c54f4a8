"""The calls HubClient passes to its hub: the seed's methods, and what turn handlers need.

In process they go straight to the ``Hub``; over a network to a ``RemoteHub`` (RPC). Kept
apart from ``_hub_client.py``, which owns the connection and the identities.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import trio

from .. import _tracing
from .._errors import NetworkError, NotFoundError
from ..hub import Hub, PendingTurn
from ..model import (
    Envelope,
    Passport,
    Resume,
    Rule,
    SessionMetadata,
    StreamChunk,
    TaskMetadata,
    TaskState,
    is_substantive,
)
from ..session_types import AnySessionType, ViewPolicy
from ._identity import Identity
from ._remote import RemoteHub

log = logging.getLogger("troupe.client")


class HubCalls:
    """The seed's pass-throughs; mixed into :class:`HubClient`."""

    _api: Hub | RemoteHub
    _hub: Hub | None
    _closed: bool
    _clients: dict[str, Identity]
    _session_types: dict[tuple[str, int], AnySessionType]

    def _check_open(self, method: str) -> None:
        """Refuse a call of ``method`` once the client is closed (every call to the hub).

        In process the hub would still answer; over a network the call would fail with
        another error. Either way the caller gets the one error that says what happened.

        Raises:
          RuntimeError: this client is closed.
        """
        if self._closed:
            raise RuntimeError(f"HubClient is closed: cannot call {method}")

    # -- the seed's pass-throughs ------------------------------------------------------------

    async def get_agent(self, name_or_id: str) -> Passport:
        self._check_open("get_agent")
        return await self._api.get_agent(name_or_id)

    async def get_resume(self, agent_id: str) -> Resume:
        self._check_open("get_resume")
        return await self._api.get_resume(agent_id)

    async def get_skill(self, agent_id: str) -> str | None:
        self._check_open("get_skill")
        return await self._api.get_skill(agent_id)

    async def get_rule(self, agent_id: str) -> Rule:
        self._check_open("get_rule")
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
        self._check_open("list_agents")
        return await self._api.list_agents(
            capability=capability, query=query, kind=kind, sort_by=sort_by, limit=limit
        )

    async def set_resume(self, agent_id: str, resume: Resume) -> None:
        self._check_open("set_resume")
        await self._api.set_resume(agent_id, resume)

    async def set_skill(self, agent_id: str, skill_md: str | None) -> None:
        self._check_open("set_skill")
        await self._api.set_skill(agent_id, skill_md)

    async def set_rule(self, agent_id: str, rule: Rule) -> None:
        self._check_open("set_rule")
        await self._api.set_rule(agent_id, rule)

    async def unregister_agent(self, agent_id: str) -> None:
        self._check_open("unregister_agent")
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
        self._check_open("create_session")
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
        self._check_open("get_session")
        return await self._api.get_session(session_id)

    async def list_sessions(
        self, *, agent_id: str | None = None, include_terminal: bool = False, limit: int = 50
    ) -> list[SessionMetadata]:
        self._check_open("list_sessions")
        return await self._api.list_sessions(
            agent_id=agent_id, include_terminal=include_terminal, limit=limit
        )

    async def close_session(self, session_id: str, *, reason: str = "") -> SessionMetadata:
        self._check_open("close_session")
        return await self._api.close_session(session_id, reason=reason)

    async def post_envelope(self, envelope: Envelope) -> str:
        self._check_open("post_envelope")
        tracer = _tracing.ACTIVE
        if tracer is not None:
            return (await tracer.client_post(self._api.post, envelope)).envelope_id
        return (await self._api.post(envelope)).envelope_id

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
        try:
            self._api.stream_chunk(chunk)
        except NetworkError as exc:
            log.debug("chunk of stream %s refused: %s", chunk.stream_id, exc)

    async def read_wal(
        self, session_id: str, *, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        """The slice ``wal[since:until]`` of the session's envelopes (negative bounds count
        from the end, as in Python: ``since=-2`` is the last two)."""
        self._check_open("read_wal")
        return await self._api.read_wal(session_id, since=since, until=until)

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
        self._check_open("acan_send")
        return await self._api.acan_send(session_id, sender_id, event_type=event_type)

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
        metadata = await self._api.get_session(session_id)
        stype = self.session_type_for(metadata)
        state = stype.initial_state(metadata)
        for envelope in await self._api.read_wal(session_id):
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
        self._check_open("get_task")
        return await self._api.get_task(task_id)

    async def list_tasks(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        state: TaskState | None = None,
        limit: int = 50,
    ) -> list[TaskMetadata]:
        self._check_open("list_tasks")
        return await self._api.list_tasks(
            agent_id=agent_id, session_id=session_id, state=state, limit=limit
        )

    async def observe_task(self, metadata: TaskMetadata) -> None:
        self._check_open("observe_task")
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
        self._check_open("update_task")
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
        self._check_open("record_observation")
        await self._api.record_observation(
            owner_id=owner_id,
            capability=capability,
            outcome=outcome,
            latency_ms=latency_ms,
            task_id=task_id,
        )

    async def checkpoint_task(self, task_id: str, state: dict[str, Any]) -> None:
        self._check_open("checkpoint_task")
        await self._api.checkpoint_task(task_id, state)

    async def read_task_checkpoint(self, task_id: str) -> dict[str, Any] | None:
        self._check_open("read_task_checkpoint")
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
        self._check_open("pending_turn")
        turns = await self._api.pending_turns_for(agent_id, session_id=session_id)
        return turns[0] if turns else None

    def name_for(self, agent_id: str) -> str:
        return self._api.name_for(agent_id)

    async def learn_names(self, agent_ids: Sequence[str]) -> None:
        self._check_open("learn_names")
        await self._api.learn_names(agent_ids)

    async def find_envelope_by_causation(
        self, session_id: str, *, sender_id: str, causation_id: str
    ) -> Envelope | None:
        self._check_open("find_envelope_by_causation")
        return await self._api.find_envelope_by_causation(
            session_id, sender_id=sender_id, causation_id=causation_id
        )

    async def pending_turns_for(self, agent_id: str) -> list[PendingTurn]:
        self._check_open("pending_turns_for")
        return await self._api.pending_turns_for(agent_id)

    async def report_turn_failure(
        self, *, session_id: str, agent_id: str, envelope_id: str, exc: BaseException
    ) -> None:
        self._check_open("report_turn_failure")
        await self._api.report_turn_failure(
            session_id=session_id, agent_id=agent_id, envelope_id=envelope_id, exc=exc
        )
