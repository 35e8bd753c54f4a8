"""The hub handle's registry and task calls: each a read of a table, or an ask of the hub actor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import trio

from .._errors import NotFoundError, StoreError
from ..model import (
    Passport,
    Resume,
    Rule,
    TaskMetadata,
    TaskState,
    check_json,
)
from ..session_types import AnySessionType
from . import _hub_messages as H
from ._hub_base import HubBase


class RegistryCalls(HubBase):
    """Agents, session types and tasks (a part of :class:`~troupe.hub.Hub`)."""

    # -- registry ----------------------------------------------------------------------------

    async def register(
        self,
        passport: Passport,
        resume: Resume | None = None,
        *,
        skill_md: str | None = None,
        rule: Rule | None = None,
    ) -> Passport:
        """Register an identity; return its passport stamped with ``agent_id``.

        Raises:
          ProtocolError: the name is taken (the message names the existing id).
          AuthError: the passport's auth scheme is unknown or its claim does not validate.
        """
        msg = H.Register(passport=passport, resume=resume or Resume(), skill_md=skill_md, rule=rule)
        stamped: Passport = await self._call(msg)
        return stamped

    async def _unregister_after_failed_bind(self, agent_id: str, cause: Exception) -> NoReturn:
        """Roll back a registration whose first bind failed, so that it can be retried; then
        raise ``cause``. If the rollback fails too, say how to get the identity back."""
        try:
            await self.unregister(agent_id)
        except (StoreError, NotFoundError) as exc:
            raise StoreError(
                f"{cause}; agent {agent_id} was registered but not bound, and could not be "
                f"rolled back ({exc}): attach it by name"
            ) from cause
        raise cause

    async def unregister(self, agent_id: str) -> None:
        """Forget an identity; its sessions and their WALs are kept. NotFoundError if unknown."""
        await self._call(H.Unregister(agent_id))

    async def get_agent(self, name_or_id: str) -> Passport:
        await trio.lowlevel.checkpoint()
        return self._core.registry.resolve(name_or_id).passport

    async def get_resume(self, agent_id: str) -> Resume:
        await trio.lowlevel.checkpoint()
        record = self._core.registry.agents.get(agent_id)
        if record is None:
            raise NotFoundError(f"resume not found: {agent_id!r}")
        return record.resume

    async def get_skill(self, agent_id: str) -> str | None:
        await trio.lowlevel.checkpoint()
        record = self._core.registry.agents.get(agent_id)
        return record.skill_md if record is not None else None

    async def get_rule(self, agent_id: str) -> Rule:
        await trio.lowlevel.checkpoint()
        return self._core.registry.record(agent_id).rule

    async def set_resume(self, agent_id: str, resume: Resume) -> None:
        await self._call(H.SetResume(agent_id, resume))

    async def set_skill(self, agent_id: str, skill_md: str | None) -> None:
        await self._call(H.SetSkill(agent_id, skill_md))

    async def set_rule(self, agent_id: str, rule: Rule) -> None:
        await self._call(H.SetRule(agent_id, rule))

    async def list_agents(
        self,
        *,
        capability: str | None = None,
        query: str | None = None,
        kind: str | None = None,
        sort_by: str | None = None,
        limit: int = 50,
    ) -> list[Passport]:
        await trio.lowlevel.checkpoint()
        return self._core.registry.search(
            capability=capability, query=query, kind=kind, sort_by=sort_by, limit=limit
        )

    def agents_with_capability(self, capability: str) -> list[str]:
        return self._core.registry.with_capability(capability)

    def name_for(self, agent_id: str) -> str:
        return self._core.registry.name_for(agent_id)

    def find_agent_id(self, name: str) -> str | None:
        return self._core.registry.find_agent_id(name)

    async def find_agent(self, name: str) -> str | None:
        """:meth:`find_agent_id`, awaitable (the same call as on a remote hub)."""
        await trio.lowlevel.checkpoint()
        return self._core.registry.find_agent_id(name)

    async def learn_names(self, agent_ids: Sequence[str]) -> None:
        """Nothing to fetch in process (a remote hub caches names for ``name_for``)."""
        await trio.lowlevel.checkpoint()

    async def record_observation(
        self,
        *,
        owner_id: str,
        capability: str,
        outcome: TaskState,
        latency_ms: int | None = None,
        task_id: str | None = None,
    ) -> None:
        await self._call(
            H.RecordObservation(
                owner_id=owner_id,
                capability=capability,
                outcome=outcome,
                latency_ms=latency_ms,
                task_id=task_id,
            )
        )

    # -- session types -----------------------------------------------------------------------

    def register_session_type(self, stype: AnySessionType) -> None:
        """Add (or replace) a session type; existing sessions keep the type they started with."""
        self._core.session_types[(stype.name, stype.version)] = stype

    # -- tasks -------------------------------------------------------------------------------

    async def observe_task(self, metadata: TaskMetadata) -> None:
        """Track a task (audited: ``task_observed``); a known one is merged into (its state
        changes are audited: ``task_state_changed``, and ``task_terminated`` at the end)."""
        if isinstance(metadata, TaskMetadata):
            check_json(metadata.result, "result", record="TaskMetadata")
        await self._call(H.ObserveTask(metadata))

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
        await self._call(
            H.UpdateTask(
                task_id=task_id,
                state=state,
                progress=dict(progress) if progress is not None else None,
                result=result,
                error=error,
            )
        )

    async def get_task(self, task_id: str) -> TaskMetadata:
        await trio.lowlevel.checkpoint()
        task = self._core.tasks.get(task_id)
        if task is None:
            raise NotFoundError(f"task not found: {task_id!r}")
        return task

    async def list_tasks(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        state: TaskState | None = None,
        limit: int = 50,
    ) -> list[TaskMetadata]:
        await trio.lowlevel.checkpoint()
        out: list[TaskMetadata] = []
        for task in self._core.tasks.values():
            if len(out) >= limit:
                break
            if agent_id is not None and task.owner_id != agent_id:
                continue
            if session_id is not None and task.session_id != session_id:
                continue
            if state is not None and task.state is not state:
                continue
            out.append(task)
        return out

    async def checkpoint_task(self, task_id: str, state: dict[str, Any]) -> None:
        await self._call(H.SaveCheckpoint(task_id, state))

    async def read_task_checkpoint(self, task_id: str) -> dict[str, Any] | None:
        data: dict[str, Any] | None = await self._call(H.LoadCheckpoint(task_id))
        return data
