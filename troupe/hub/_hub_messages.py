"""The hub actor's messages: the requests it owns (``troupe.api`` records) and its own.

The hub actor answers the ``troupe.api`` requests that change its tables (``Register``,
``SetRule``, ``CreateSession``, ``UpdateTask``, …) as they are: the record a caller built is
the message, and its answer is the request's result type. The records below are the hub's
internal asks (sweepers, the post path); each declares its answer's type (``Message[T]``),
so ``hub_ref.ask(msg)`` is typed.
"""

from __future__ import annotations

import attrs

from ..actors import Message
from ..api import (
    CheckpointTask,
    CreateSession,
    ObserveTask,
    ReadTaskCheckpoint,
    RecordObservation,
    Register,
    SetResume,
    SetRule,
    SetSkill,
    Unregister,
    UpdateTask,
)
from ..model import Envelope, SessionMetadata


@attrs.frozen
class ExpireSessionTasks(Message[None]):
    """Expire the open tasks of a session that just ended."""

    session_id: str


@attrs.frozen
class ExpireTasks(Message[None]):
    """Expire the tasks past their TTL at ``now``."""

    now: float


@attrs.frozen
class ReadEnvelopes(Message[list[Envelope]]):
    """The envelopes ``since < seq <= until`` of a session (negative bounds count from the
    end); what ``read_wal`` pages. NotFoundError for an unknown session."""

    session_id: str
    since: int = 0
    until: int | None = None


@attrs.frozen
class FindAccepted(Message[tuple[str, int] | None]):
    """Was this post accepted already (by its dedup keys, or its id among the last few)?"""

    session_id: str
    keys: tuple[str, ...]
    envelope_id: str | None


@attrs.frozen
class FindAnswer(Message[tuple[str, int] | None]):
    """``(envelope_id, seq)`` of what ``sender_id`` posted in answer to ``causation_id``."""

    session_id: str
    sender_id: str
    causation_id: str


@attrs.frozen
class GainSessions(Message[int]):
    """Add these stored sessions to the directory, those it does not hold yet (a cluster
    member's, for the shards it gained; each starts from the store on first use). Answers
    how many it added."""

    sessions: tuple[SessionMetadata, ...]


@attrs.frozen
class SyncRegistry(Message[int]):
    """Apply the registry and task changes other nodes made (the store's change feed) since
    the last sync: a cluster member's, every tick. Answers how many records changed."""


@attrs.frozen
class LearnAgent(Message[bool]):
    """Read an agent this node does not know (a name first, unless not ``by_name``, then an
    id) from the store into the registry: a cluster's read-through on a miss; with
    ``fresh``, read it even when known (what a bind does). Answers whether it exists."""

    name_or_id: str
    by_name: bool = True
    fresh: bool = False


@attrs.frozen
class LearnTask(Message[bool]):
    """Read a task this node does not know from the store and add it to the tasks: a
    cluster's read-through on a miss. Answers whether it exists."""

    task_id: str


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
    | ReadEnvelopes
    | ExpireSessionTasks
    | ExpireTasks
    | FindAccepted
    | FindAnswer
    | GainSessions
    | SyncRegistry
    | LearnAgent
    | LearnTask
)
