"""The hub actor's messages: the requests it owns (``troupe.api`` records) and its own.

The hub actor answers the ``troupe.api`` requests that change its tables (``Register``,
``SetRule``, ``CreateSession``, ``UpdateTask``, …) as they are: the record a caller built is
the message. The records below are the hub's internal asks (sweepers, the post path).
"""

from __future__ import annotations

import attrs

from ..api import (
    CheckpointTask,
    CreateSession,
    ObserveTask,
    ReadTaskCheckpoint,
    ReadWal,
    RecordObservation,
    Register,
    SetResume,
    SetRule,
    SetSkill,
    Unregister,
    UpdateTask,
)


@attrs.frozen
class ExpireSessionTasks:
    session_id: str


@attrs.frozen
class ExpireTasks:
    now: float


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
    | CheckpointTask
    | ReadTaskCheckpoint
    | ReadWal
    | ExpireSessionTasks
    | ExpireTasks
    | FindEnvelope
    | FindAccepted
    | FindAnswer
)
