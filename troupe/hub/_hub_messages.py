"""The messages the hub actor answers (frozen records; the ``Hub`` handle sends them)."""

from __future__ import annotations

from typing import Any

import attrs

from ..model import (
    Passport,
    Resume,
    Rule,
    TaskMetadata,
    TaskState,
)


@attrs.frozen(kw_only=True)
class Register:
    passport: Passport
    resume: Resume
    skill_md: str | None
    rule: Rule | None


@attrs.frozen
class Unregister:
    agent_id: str


@attrs.frozen
class SetResume:
    agent_id: str
    resume: Resume


@attrs.frozen
class SetSkill:
    agent_id: str
    skill_md: str | None


@attrs.frozen
class SetRule:
    agent_id: str
    rule: Rule


@attrs.frozen(kw_only=True)
class RecordObservation:
    owner_id: str
    capability: str
    outcome: TaskState
    latency_ms: int | None = None
    task_id: str | None = None


@attrs.frozen(kw_only=True)
class CreateSession:
    creator_id: str
    manifest_type: str
    manifest_version: int
    participants: tuple[str, ...]
    required_acks: int | None
    ttl: str | int | None
    knobs: dict[str, Any] | None
    intent: str | None
    labels: dict[str, str] | None


@attrs.frozen
class ObserveTask:
    task: TaskMetadata


@attrs.frozen(kw_only=True)
class UpdateTask:
    task_id: str
    state: TaskState | None = None
    progress: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None


@attrs.frozen
class ExpireSessionTasks:
    session_id: str


@attrs.frozen
class ExpireTasks:
    now: float


@attrs.frozen
class SaveCheckpoint:
    task_id: str
    data: dict[str, Any]


@attrs.frozen
class LoadCheckpoint:
    task_id: str


@attrs.frozen
class ReadWal:
    session_id: str
    since: int = 0
    until: int | None = None


@attrs.frozen
class FindEnvelope:
    session_id: str
    seq: int


@attrs.frozen
class FindAccepted:
    """Was this post accepted already (by its dedup keys, or its id among the last few)?"""

    session_id: str
    keys: tuple[str, ...]
    envelope_id: str | None


@attrs.frozen
class FindAnswer:
    """``(envelope_id, seq)`` of what ``sender_id`` posted in answer to ``causation_id``."""

    session_id: str
    sender_id: str
    causation_id: str


HubMsg = (
    Register
    | Unregister
    | SetResume
    | SetSkill
    | SetRule
    | RecordObservation
    | CreateSession
    | ObserveTask
    | UpdateTask
    | ExpireSessionTasks
    | ExpireTasks
    | SaveCheckpoint
    | LoadCheckpoint
    | ReadWal
    | FindEnvelope
    | FindAccepted
    | FindAnswer
)
