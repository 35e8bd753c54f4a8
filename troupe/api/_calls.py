"""``HubCalls``: the seed's named hub operations, each declared once, over one ``call``.

``Hub`` (the hub in this process) and ``HubClient`` (a connection to one, in process or
over a network) offer the same operations under the seed's names (``get_agent``,
``create_session``, …). Each is one line that builds its request record and hands it to
the class's one generic :meth:`HubCalls.call`, so it is written here once rather than in
each class: as ``collections.abc.Mapping`` declares ``get`` and ``items`` over
``__getitem__``, an abstract base for one interface, not a piece of a class split off.

The operations whose behaviour differs between the two stay on their class: ``register``
(the client returns an ``AgentClient``), ``read_wal`` (the client pages), ``post``, and
the synchronous in-process reads.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, TypeVar

from ..model import (
    Envelope,
    Passport,
    Resume,
    Rule,
    SessionMetadata,
    SessionState,
    TaskMetadata,
    TaskState,
    check_json,
)
from ._requests import (
    CheckpointTask,
    CloseSession,
    CreateSession,
    FindEnvelopeByCausation,
    GetAgent,
    GetResume,
    GetRule,
    GetSession,
    GetSkill,
    GetTask,
    ListAgents,
    ListSessions,
    ListTasks,
    ObserveTask,
    PendingTurn,
    PendingTurnsFor,
    ReadTaskCheckpoint,
    RecordObservation,
    ReportTurnFailure,
    Request,
    SetResume,
    SetRule,
    SetSkill,
    UpdateTask,
)

R = TypeVar("R")


class HubCalls(abc.ABC):
    """The seed's operations as methods, each one call of :meth:`call` (module rules)."""

    __slots__ = ()

    @abc.abstractmethod
    async def call(self, request: Request[R]) -> R:
        """Run ``request`` on the hub and return its result (of the request's result type).

        Raises:
          DecodeError: a field of the request does not fit (``field`` names it).
          NetworkError: the hub refused the request (the subclass says why).
        """

    async def get_agent(self, name_or_id: str) -> Passport:
        return await self.call(GetAgent(name_or_id=name_or_id))

    async def get_resume(self, agent_id: str) -> Resume:
        return await self.call(GetResume(agent_id=agent_id))

    async def get_skill(self, agent_id: str) -> str | None:
        return await self.call(GetSkill(agent_id=agent_id))

    async def get_rule(self, agent_id: str) -> Rule:
        return await self.call(GetRule(agent_id=agent_id))

    async def set_resume(self, agent_id: str, resume: Resume) -> None:
        await self.call(SetResume(agent_id=agent_id, resume=resume))

    async def set_skill(self, agent_id: str, skill_md: str | None) -> None:
        await self.call(SetSkill(agent_id=agent_id, skill_md=skill_md))

    async def set_rule(self, agent_id: str, rule: Rule) -> None:
        await self.call(SetRule(agent_id=agent_id, rule=rule))

    async def list_agents(
        self,
        *,
        capability: str | None = None,
        query: str | None = None,
        kind: str | None = None,
        sort_by: str | None = None,
        limit: int = 50,
    ) -> list[Passport]:
        return await self.call(
            ListAgents(capability=capability, query=query, kind=kind, sort_by=sort_by, limit=limit)
        )

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
        """Open a session, invite the participants and return once it is ACTIVE.

        It is ACTIVE once ``required_acks`` invitees acked (1 to the number of invitees;
        all of them by default). An invitee receives nothing of the session but its invite
        (and the notice that ends it) until it acks; then it gets what it missed, in order.

        Raises:
          NotFoundError: the creator, a participant or the session type is unknown.
          AccessDeniedError: a rule forbids it (inbound globs, session types, caps).
          ProtocolError: bad participants or knobs, an invite was rejected, or the acks did
            not arrive within ``invite_ack_timeout`` (the session is then CLOSED).
        """
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
        self,
        *,
        agent_id: str | None = None,
        state: SessionState | None = None,
        include_terminal: bool = False,
        limit: int = 50,
    ) -> list[SessionMetadata]:
        """Sessions in creation order: all of ``agent_id``'s, or all of them.

        Terminal sessions are left out unless ``include_terminal`` or a terminal ``state``
        is asked for.
        """
        return await self.call(
            ListSessions(
                agent_id=agent_id, state=state, include_terminal=include_terminal, limit=limit
            )
        )

    async def close_session(self, session_id: str, *, reason: str = "") -> SessionMetadata:
        """Close a session (idempotent on a terminal one).

        Raises:
          NotFoundError: the session is unknown.
          DecodeError: ``reason`` is not a string of at most ``MAX_REASON_CHARS``.
          StoreError: the store refused the close notice; the session stays as it was.
          ProtocolError: also when the session crashed twice while closing.
        """
        return await self.call(CloseSession(session_id=session_id, reason=reason))

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
        """Track a task (audited: ``task_observed``); a known one is merged into (its state
        changes are audited: ``task_state_changed``, and ``task_terminated`` at the end)."""
        if isinstance(metadata, TaskMetadata):
            check_json(metadata.result, "result", record="TaskMetadata")
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
        """Update a task that is not terminal yet (a terminal one is left as it is).

        A change of state is audited (``task_state_changed``, and ``task_terminated`` when it
        ends); an update of progress, result or error alone is not, so a task reporting
        progress often does not flood the audit log.

        Raises:
          NotFoundError: no such task.
          DecodeError: a value is not of its type, or not JSON data.
        """
        check_json(result, "result", record="UpdateTask")
        await self.call(
            UpdateTask(
                task_id=task_id,
                state=state,
                progress=dict(progress) if progress is not None else None,
                result=result,
                error=error,
            )
        )

    async def checkpoint_task(self, task_id: str, state: dict[str, Any]) -> None:
        await self.call(CheckpointTask(task_id=task_id, state=state))

    async def read_task_checkpoint(self, task_id: str) -> dict[str, Any] | None:
        return await self.call(ReadTaskCheckpoint(task_id=task_id))

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

    async def pending_turns_for(
        self, agent_id: str, *, session_id: str | None = None
    ) -> list[PendingTurn]:
        """ACTIVE sessions where the session type says it is ``agent_id``'s turn.

        With ``session_id``, only that session is looked at (what a turn handler asks on
        every delivery).
        """
        return await self.call(PendingTurnsFor(agent_id=agent_id, session_id=session_id))

    async def find_envelope_by_causation(
        self, session_id: str, *, sender_id: str, causation_id: str
    ) -> Envelope | None:
        """The envelope ``sender_id`` posted in answer to ``causation_id`` (any event type).

        Raises:
          NotFoundError: the session is unknown.
          AccessDeniedError: ``sender_id`` is not a participant of it.
        """
        return await self.call(
            FindEnvelopeByCausation(
                session_id=session_id, sender_id=sender_id, causation_id=causation_id
            )
        )

    async def report_turn_failure(
        self, *, session_id: str, agent_id: str, envelope_id: str, exc: BaseException
    ) -> None:
        """Record that an agent's turn raised (audit ``turn_failed``); no reply is invented.

        Raises:
          NotFoundError: the session is unknown.
          AccessDeniedError: ``agent_id`` is not a participant of it (nothing is recorded).
        """
        await self.call(
            ReportTurnFailure(
                session_id=session_id,
                agent_id=agent_id,
                envelope_id=envelope_id,
                exc_type=type(exc).__name__,
                exc_message=str(exc),
            )
        )
