"""Tasks the hub observes (agents own and run them) — reference §2.9."""

from __future__ import annotations

import enum
from typing import Any

import attrs


class TaskState(enum.Enum):
    """A task's state; ``completed``, ``failed``, ``cancelled`` and ``expired`` are final."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED}
)


@attrs.frozen(kw_only=True)
class TaskSpec:
    """What a task is; with ``capability`` set, its outcome feeds the owner's track record."""

    title: str
    description: str = ""
    payload: dict[str, Any] = attrs.field(factory=dict)
    capability: str | None = None


@attrs.frozen(kw_only=True)
class TaskMetadata:
    """A task as the hub records it."""

    task_id: str
    owner_id: str
    spec: TaskSpec
    state: TaskState = TaskState.CREATED
    created_at: str = ""
    started_at: str | None = None
    completed_at: str | None = None
    expires_at: str | None = None
    last_progress_at: str | None = None
    progress: dict[str, Any] = attrs.field(factory=dict)
    result: Any = None
    error: str | None = None
    session_id: str | None = None
