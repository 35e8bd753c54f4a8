"""The hub's edge: one frozen request record per hub operation, with its typed result.

Each record is declared once, here, and used by every layer: the ``Hub`` implements it once
(``Hub.call``), the WebSocket dispatcher structures it from a ``RequestFrame``'s params by
its ``op``, and ``RemoteHub.call`` sends it and structures the answer as its result type.
The seed-named methods (``get_agent``, ``create_session``, …) are one-line calls building a
record.

A record declares, next to its fields:

- ``op``: its name on the wire (a ``RequestFrame``'s ``op``; its params are the record's
  fields, unstructured by the one converter);
- its result type, as the parameter of its base ``Request[R]``;
- ``acting``: the (dotted) field naming the identity that acts, which must be bound to the
  calling connection; ``for_each_bound``: that field may be left out, and then means each
  identity bound to the caller (lists only, merged up to ``limit``);
- ``owner``: which stored record's owner must match: ``"session"`` (the acting identity, or
  without one any identity of the caller, is a participant of ``session_id`` as stored) or
  ``"task"`` (the stored owner of ``task_id`` is bound to the caller: the stored owner
  decides, not a claim in the request);
- ``retry``: whether a client may send it again after a lost connection;
- ``stored``: what it carries is stored by the hub, so it is at most the hub's
  ``max_envelope_bytes`` as JSON (a read is bounded only by the frame it travels in).

The hub checks these declarations in one place (``Hub.call``, for a caller over a wire; the
in-process owner of the hub is trusted). Field values are checked by the one converter
wherever a request enters: off the wire (``structure``) and from Python (``check_record``),
so a wrong type or an out-of-range value is the caller's ``DecodeError`` naming the field.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, Literal, TypeVar, get_args, get_origin

import attrs

from .._errors import DecodeError
from ..actors import Message
from ..model import (
    Envelope,
    Passport,
    Resume,
    Rule,
    SessionMetadata,
    SessionState,
    TaskMetadata,
    TaskState,
)

R = TypeVar("R")

#: ``list_agents``' orders.
SORT_BY: Final = ("name", "success_rate", "latency")
#: The longest ``close_session`` reason (it travels in the close notice to every participant).
MAX_REASON_CHARS: Final = 1000

#: op name -> its request record (filled in as the records are defined).
REQUESTS: dict[str, type[Request[Any]]] = {}


class Request(Message[R]):
    """The marker base of a hub request record (``R`` is its result type).

    Not a record itself (it has no fields): each request is an ``attrs.frozen`` record
    deriving from ``Request[its result type]`` once, and never from another record.
    """

    __slots__ = ()

    op: ClassVar[str]
    #: The type of the answer, taken from ``Request[R]`` (what the client structures).
    result_type: ClassVar[Any]
    acting: ClassVar[str | None] = None
    for_each_bound: ClassVar[bool] = False
    owner: ClassVar[Literal["session", "task"] | None] = None
    retry: ClassVar[bool] = True
    stored: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__dict__.get("__orig_bases__", ()):
            if get_origin(base) is Request:
                (cls.result_type,) = get_args(base)
        if "op" in cls.__dict__:
            REQUESTS[cls.op] = cls

    def repeatable(self) -> bool:
        """Whether this request may be sent again after the connection dropped."""
        return self.retry

    def acting_id(self) -> str | None:
        """The identity that acts (the value of the ``acting`` field), if any."""
        path = self.acting
        if path is None:
            return None
        value: Any = self
        for part in path.split("."):
            value = getattr(value, part)
        return value if isinstance(value, str) or value is None else str(value)


def _limit(record: str) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is int and value < 0:
            raise DecodeError(
                f"{record}.{attribute.name}: expected an integer >= 0, got {value}",
                record=record,
                field=attribute.name,
            )

    return check


# -- identities --------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Register(Request[Passport]):
    """Register an identity; the answer is its passport stamped with ``agent_id``."""

    op = "register"
    stored = True
    retry = False
    passport: Passport
    resume: Resume = attrs.field(factory=Resume)
    skill_md: str | None = None
    rule: Rule | None = None


@attrs.frozen(kw_only=True)
class Unregister(Request[None]):
    op = "unregister"
    acting = "agent_id"
    retry = False
    agent_id: str


@attrs.frozen(kw_only=True)
class FindAgentId(Request[str | None]):
    op = "find_agent_id"
    name: str


@attrs.frozen(kw_only=True)
class GetAgent(Request[Passport]):
    op = "get_agent"
    name_or_id: str


@attrs.frozen(kw_only=True)
class NamesFor(Request[dict[str, str]]):
    op = "names_for"
    agent_ids: tuple[str, ...]


@attrs.frozen(kw_only=True)
class GetResume(Request[Resume]):
    op = "get_resume"
    agent_id: str


@attrs.frozen(kw_only=True)
class GetSkill(Request[str | None]):
    op = "get_skill"
    agent_id: str


@attrs.frozen(kw_only=True)
class GetRule(Request[Rule]):
    op = "get_rule"
    agent_id: str


def _sort_by(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value not in SORT_BY:
        raise DecodeError(
            f"ListAgents.sort_by: unknown sort_by {value!r:.40}; use 'name', 'success_rate' "
            "or 'latency'",
            record="ListAgents",
            field=attribute.name,
        )


@attrs.frozen(kw_only=True)
class ListAgents(Request[list[Passport]]):
    op = "list_agents"
    capability: str | None = None
    query: str | None = None
    kind: str | None = None
    sort_by: str | None = attrs.field(default=None, validator=_sort_by)
    limit: int = attrs.field(default=50, validator=_limit("ListAgents"))


@attrs.frozen(kw_only=True)
class SetResume(Request[None]):
    op = "set_resume"
    stored = True
    acting = "agent_id"
    agent_id: str
    resume: Resume


@attrs.frozen(kw_only=True)
class SetSkill(Request[None]):
    op = "set_skill"
    stored = True
    acting = "agent_id"
    agent_id: str
    skill_md: str | None = None


@attrs.frozen(kw_only=True)
class SetRule(Request[None]):
    op = "set_rule"
    stored = True
    acting = "agent_id"
    agent_id: str
    rule: Rule


# -- sessions ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CreateSession(Request[SessionMetadata]):
    """Open a session; the answer is its metadata once it is ACTIVE."""

    op = "create_session"
    stored = True
    acting = "creator_id"
    retry = False
    creator_id: str
    manifest_type: str
    manifest_version: int = 1
    participants: tuple[str, ...]
    required_acks: int | None = None
    ttl: str | int | None = None
    knobs: dict[str, Any] | None = None
    intent: str | None = None
    labels: dict[str, str] | None = None


@attrs.frozen(kw_only=True)
class GetSession(Request[SessionMetadata]):
    op = "get_session"
    owner = "session"
    session_id: str


@attrs.frozen(kw_only=True)
class ListSessions(Request[list[SessionMetadata]]):
    op = "list_sessions"
    acting = "agent_id"
    for_each_bound = True
    agent_id: str | None = None
    state: SessionState | None = None
    include_terminal: bool = False
    limit: int = attrs.field(default=50, validator=_limit("ListSessions"))


def _reason(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not str or len(value) > MAX_REASON_CHARS:
        raise DecodeError(
            f"close_session reason: expected a string of at most {MAX_REASON_CHARS} "
            f"characters, got {value!r:.80}",
            record="close_session",
            field=attribute.name,
        )


@attrs.frozen(kw_only=True)
class CloseSession(Request[SessionMetadata]):
    op = "close_session"
    owner = "session"
    session_id: str
    reason: str = attrs.field(default="", validator=_reason)


@attrs.frozen
class Accepted:
    """What a post got: the envelope's id and seq, and whether it repeated an earlier post."""

    envelope_id: str
    seq: int
    duplicate: bool = False


@attrs.frozen(kw_only=True)
class PostEnvelope(Request[Accepted]):
    """Post an envelope (checked by ``check_envelope``, the post path's own fast check)."""

    op = "post_envelope"
    acting = "envelope.sender_id"
    envelope: Envelope


@attrs.frozen(kw_only=True)
class WalPage:
    """One page of a session's WAL; ``more``: ask again from the last seq for the rest."""

    envelopes: list[Envelope]
    more: bool  # no default: always on the wire, where clients read it


@attrs.frozen(kw_only=True)
class ReadWal(Request[WalPage]):
    """The envelopes with ``since < seq <= until`` (negative bounds count from the end).

    Over a wire the answer is one bounded page (``more`` says to ask for the rest); in
    process it is the whole range.
    """

    op = "read_wal"
    owner = "session"
    session_id: str
    since: int = 0
    until: int | None = None


@attrs.frozen(kw_only=True)
class CanSend(Request[bool]):
    op = "can_send"
    acting = "sender_id"
    owner = "session"
    session_id: str
    sender_id: str
    event_type: str | None = None


@attrs.frozen(kw_only=True)
class FindEnvelopeByCausation(Request[Envelope | None]):
    op = "find_envelope_by_causation"
    acting = "sender_id"
    owner = "session"
    session_id: str
    sender_id: str
    causation_id: str


@attrs.frozen(kw_only=True)
class PendingTurn:
    """A turn the session type says an agent owes (``pending_turns_for``).

    Attributes:
      session_id: the session.
      triggering_envelope_id: the envelope that gave the agent the floor (None when nothing
        did, such as the creator's first turn).
      expected_at: since when the turn is owed (ISO 8601, hub clock): the trigger's
        ``created_at``, or the hub's clock now when there is no trigger or it is not among
        the session's last ``TRIGGER_LOOKBACK`` envelopes.
    """

    session_id: str
    triggering_envelope_id: str | None = None
    expected_at: str = ""


@attrs.frozen(kw_only=True)
class PendingTurnsFor(Request[list[PendingTurn]]):
    op = "pending_turns_for"
    acting = "agent_id"
    owner = "session"  # when ``session_id`` is given
    agent_id: str
    session_id: str | None = None


@attrs.frozen(kw_only=True)
class ReportTurnFailure(Request[None]):
    op = "report_turn_failure"
    acting = "agent_id"
    owner = "session"
    session_id: str
    agent_id: str
    envelope_id: str
    exc_type: str
    exc_message: str = ""


# -- tasks -------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ObserveTask(Request[None]):
    op = "observe_task"
    stored = True
    acting = "task.owner_id"
    retry = False
    task: TaskMetadata


@attrs.frozen(kw_only=True)
class UpdateTask(Request[None]):
    op = "update_task"
    stored = True
    owner = "task"
    task_id: str
    state: TaskState | None = None
    progress: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None


@attrs.frozen(kw_only=True)
class GetTask(Request[TaskMetadata]):
    op = "get_task"
    owner = "task"
    task_id: str


@attrs.frozen(kw_only=True)
class ListTasks(Request[list[TaskMetadata]]):
    op = "list_tasks"
    acting = "agent_id"
    for_each_bound = True
    agent_id: str | None = None
    session_id: str | None = None
    state: TaskState | None = None
    limit: int = attrs.field(default=50, validator=_limit("ListTasks"))


@attrs.frozen(kw_only=True)
class RecordObservation(Request[None]):
    op = "record_observation"
    stored = True
    acting = "owner_id"
    owner_id: str
    capability: str
    outcome: TaskState
    latency_ms: int | None = None
    task_id: str | None = None

    def repeatable(self) -> bool:
        # Without a task id the hub cannot tell a repeat from a new observation.
        return self.task_id is not None


@attrs.frozen(kw_only=True)
class CheckpointTask(Request[None]):
    op = "checkpoint_task"
    stored = True
    owner = "task"
    task_id: str
    state: dict[str, Any]


@attrs.frozen(kw_only=True)
class ReadTaskCheckpoint(Request[dict[str, Any] | None]):
    op = "read_task_checkpoint"
    owner = "task"
    task_id: str
