"""The control plane over a wire: ``RequestFrame`` ops, each checked against the caller.

A connection may act only for the identities bound to it (by ``register`` over this
connection or a successful ``HelloFrame``): post as them, read their sessions and tasks,
change their resume and rule. The reference executed RPC ops for whatever id a parameter
named (its §9 item 14); here an op naming an identity this connection is not bound to is
refused with ``access_denied``. Discovery (agents, resumes, skills) is public.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from .. import _tracing
from .._errors import AccessDeniedError, DecodeError, NetworkError, StoreError
from ..model import (
    Envelope,
    Passport,
    RequestFrame,
    ResponseFrame,
    Resume,
    Rule,
    TaskMetadata,
    TaskState,
    structure,
    unstructure,
)
from ._connection import Bind
from ._core import Failed

if TYPE_CHECKING:
    from ..actors import ActorRef
    from ._connection import ConnectionActor
    from ._hub import Hub

log = logging.getLogger("troupe.hub.rpc")

#: A ``read_wal`` answer over the wire holds at most this many envelopes, and stops after
#: the envelope that takes it past ``READ_WAL_PAGE_BYTES`` of JSON (at least one envelope);
#: ``more`` then says to ask again from the last seq (``HubClient.read_wal`` does).
READ_WAL_PAGE_COUNT = 1000
READ_WAL_PAGE_BYTES = 256 << 10


@attrs.define
class Caller:
    """Who is calling: the hub, and the connection (with its bound identities)."""

    hub: Hub
    actor: ConnectionActor
    ref: ActorRef[Any, Any]

    def require(self, agent_id: str) -> str:
        if agent_id not in self.actor.agents:
            raise AccessDeniedError(f"this connection is not bound to agent {agent_id!r}")
        return agent_id

    def require_participant(self, session_id: str) -> None:
        md = self.hub.core.directory.get(session_id).metadata
        if not self.actor.agents.intersection(md.participant_ids()):
            raise AccessDeniedError(
                f"no identity of this connection is a participant of session {session_id}"
            )

    def require_member(self, session_id: str, agent_id: str) -> str:
        """``agent_id`` is bound to this connection and a participant of the session (as
        stored, not as claimed)."""
        self.require(agent_id)
        md = self.hub.core.directory.get(session_id).metadata
        if md.role_of(agent_id) is None:
            raise AccessDeniedError(
                f"agent {self.hub.name_for(agent_id)!r} is not a participant of session "
                f"{session_id}"
            )
        return agent_id

    def require_task(self, task_id: str) -> TaskMetadata:
        task = self.hub.core.tasks.get(task_id)
        if task is None:
            from .._errors import NotFoundError

            raise NotFoundError(f"task not found: {task_id!r}")
        self.require(task.owner_id)
        return task


Op = Callable[[Caller, dict[str, Any]], Awaitable[Any]]
OPS: dict[str, Op] = {}


def op(name: str) -> Callable[[Op], Op]:
    def register(fn: Op) -> Op:
        OPS[name] = fn
        return fn

    return register


def _str(params: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = params.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"parameter {key!r} must be a string", record="params", field=key)
    return value


def _int(params: dict[str, Any], key: str, default: int | None = None) -> Any:
    """An integer parameter (``default`` when absent; None allowed only if that is the
    default). ``int(value)`` would take "5", 1.5 and True, and fail with a bare ValueError."""
    value = params.get(key, default)
    if value is None and default is None:
        return None
    if type(value) is not int:
        raise DecodeError(f"parameter {key!r} must be an integer", record="params", field=key)
    return value


def _dict(params: dict[str, Any], key: str) -> Any:
    """An optional JSON-object parameter."""
    value = params.get(key)
    if value is not None and not isinstance(value, dict):
        raise DecodeError(f"parameter {key!r} must be an object", record="params", field=key)
    return value


def error_code(exc: Exception) -> str:
    """The code an error travels under on the wire (the client raises it again from it)."""
    if isinstance(exc, NetworkError):
        return exc.code
    return "store_error" if isinstance(exc, StoreError) else "error"


async def handle_request(caller: Caller, frame: RequestFrame) -> ResponseFrame:
    """Run one op and answer it; errors become ``ok=False`` with their code."""
    tracer = _tracing.ACTIVE
    if tracer is None:
        return await _handle_request(caller, frame)
    with tracer.rpc_server(frame) as answered:
        response = await _handle_request(caller, frame)
        answered(response)
        return response


async def _handle_request(caller: Caller, frame: RequestFrame) -> ResponseFrame:
    fn = OPS.get(frame.op)
    try:
        if fn is None:
            raise DecodeError(f"unknown op {frame.op!r}", record="RequestFrame", field="op")
        result = await fn(caller, frame.params)
    except (NetworkError, StoreError) as exc:
        return ResponseFrame(
            request_id=frame.request_id,
            ok=False,
            error_code=error_code(exc),
            error_message=str(exc),
        )
    except Exception as exc:
        # An edge: a bug in an op must not take the connection (and its identities) down.
        log.exception("op %r failed", frame.op)
        return ResponseFrame(
            request_id=frame.request_id,
            ok=False,
            error_code="error",
            error_message=f"internal error in {frame.op}: {type(exc).__name__}",
        )
    return ResponseFrame(request_id=frame.request_id, ok=True, result=result)


# -- identities ------------------------------------------------------------------------------


@op("register")
async def _register(c: Caller, p: dict[str, Any]) -> Any:
    rule = p.get("rule")
    passport = structure(p.get("passport"), Passport)
    if passport.effective_kind == "remote_agent":
        # A federation proxy's identity skips registration auth; only the hub's owner may
        # make one (in process). Over a connection it would take any name without its key.
        raise AccessDeniedError(
            f"agent {passport.name!r}: a remote_agent passport is registered by the hub "
            "itself, not over a connection"
        )
    passport = await c.hub.register(
        passport,
        structure(p.get("resume") or {}, Resume),
        skill_md=_str(p, "skill_md", optional=True),
        rule=structure(rule, Rule) if rule is not None else None,
    )
    assert passport.agent_id is not None
    bound = await c.ref.ask(Bind(passport.agent_id))
    if isinstance(bound, Failed):
        await c.hub._unregister_after_failed_bind(passport.agent_id, bound.error)
    return unstructure(passport)


@op("find_agent_id")
async def _find_agent_id(c: Caller, p: dict[str, Any]) -> Any:
    return c.hub.find_agent_id(_str(p, "name"))


@op("get_agent")
async def _get_agent(c: Caller, p: dict[str, Any]) -> Any:
    return unstructure(await c.hub.get_agent(_str(p, "name_or_id")))


@op("names_for")
async def _names_for(c: Caller, p: dict[str, Any]) -> Any:
    ids = p.get("agent_ids")
    if not isinstance(ids, list):
        raise DecodeError(
            "parameter 'agent_ids' must be a list", record="params", field="agent_ids"
        )
    return {agent_id: c.hub.name_for(str(agent_id)) for agent_id in ids}


@op("get_resume")
async def _get_resume(c: Caller, p: dict[str, Any]) -> Any:
    return unstructure(await c.hub.get_resume(_str(p, "agent_id")))


@op("get_skill")
async def _get_skill(c: Caller, p: dict[str, Any]) -> Any:
    return await c.hub.get_skill(_str(p, "agent_id"))


@op("get_rule")
async def _get_rule(c: Caller, p: dict[str, Any]) -> Any:
    return unstructure(await c.hub.get_rule(_str(p, "agent_id")))


@op("list_agents")
async def _list_agents(c: Caller, p: dict[str, Any]) -> Any:
    found = await c.hub.list_agents(
        capability=_str(p, "capability", optional=True),
        query=_str(p, "query", optional=True),
        kind=_str(p, "kind", optional=True),
        sort_by=_str(p, "sort_by", optional=True),
        limit=_int(p, "limit", 50),
    )
    return unstructure(found)


@op("set_resume")
async def _set_resume(c: Caller, p: dict[str, Any]) -> Any:
    await c.hub.set_resume(c.require(_str(p, "agent_id")), structure(p.get("resume"), Resume))


@op("set_skill")
async def _set_skill(c: Caller, p: dict[str, Any]) -> Any:
    await c.hub.set_skill(c.require(_str(p, "agent_id")), _str(p, "skill_md", optional=True))


@op("set_rule")
async def _set_rule(c: Caller, p: dict[str, Any]) -> Any:
    await c.hub.set_rule(c.require(_str(p, "agent_id")), structure(p.get("rule"), Rule))


@op("unregister")
async def _unregister(c: Caller, p: dict[str, Any]) -> Any:
    agent_id = c.require(_str(p, "agent_id"))
    await c.hub.unregister(agent_id)
    c.actor.agents.discard(agent_id)


# -- sessions --------------------------------------------------------------------------------


@op("create_session")
async def _create_session(c: Caller, p: dict[str, Any]) -> Any:
    participants = p.get("participants")
    if not isinstance(participants, list):
        raise DecodeError(
            "parameter 'participants' must be a list", record="params", field="participants"
        )
    md = await c.hub.create_session(
        creator_id=c.require(_str(p, "creator_id")),
        manifest_type=_str(p, "manifest_type"),
        manifest_version=_int(p, "manifest_version", 1),
        participants=[str(x) for x in participants],
        required_acks=_int(p, "required_acks"),
        ttl=p.get("ttl"),
        knobs=_dict(p, "knobs"),
        intent=_str(p, "intent", optional=True),
        labels=_dict(p, "labels"),
    )
    return unstructure(md)


@op("get_session")
async def _get_session(c: Caller, p: dict[str, Any]) -> Any:
    session_id = _str(p, "session_id")
    c.require_participant(session_id)
    return unstructure(await c.hub.get_session(session_id))


@op("list_sessions")
async def _list_sessions(c: Caller, p: dict[str, Any]) -> Any:
    agent_id = _str(p, "agent_id", optional=True)
    agents = [c.require(agent_id)] if agent_id is not None else sorted(c.actor.agents)
    limit = _int(p, "limit", 50)
    include_terminal = bool(p.get("include_terminal", False))
    found: dict[str, Any] = {}
    for who in agents:
        for md in await c.hub.list_sessions(
            agent_id=who, include_terminal=include_terminal, limit=limit
        ):
            found.setdefault(md.session_id, md)
    return unstructure(list(found.values())[:limit])


@op("close_session")
async def _close_session(c: Caller, p: dict[str, Any]) -> Any:
    session_id = _str(p, "session_id")
    c.require_participant(session_id)
    return unstructure(await c.hub.close_session(session_id, reason=str(p.get("reason", ""))))


@op("post_envelope")
async def _post_envelope(c: Caller, p: dict[str, Any]) -> Any:
    envelope = structure(p.get("envelope"), Envelope)
    c.require(envelope.sender_id)
    accepted = await c.hub.post(envelope)
    return {
        "envelope_id": accepted.envelope_id,
        "seq": accepted.seq,
        "duplicate": accepted.duplicate,
    }


@op("read_wal")
async def _read_wal(c: Caller, p: dict[str, Any]) -> Any:
    session_id = _str(p, "session_id")
    c.require_participant(session_id)
    since, until = _int(p, "since", 0), _int(p, "until")
    last = since + READ_WAL_PAGE_COUNT
    wal = await c.hub.read_wal(
        session_id, since=since, until=last if until is None else min(until, last)
    )
    page: list[Any] = []
    size = 0
    for envelope in wal:
        data = unstructure(envelope)
        page.append(data)
        size += len(orjson.dumps(data))
        if size >= READ_WAL_PAGE_BYTES:
            break
    more = bool(page) and (until is None or page[-1]["seq"] < until)
    if more and len(page) == len(wal) and len(wal) < READ_WAL_PAGE_COUNT:
        more = False  # the store had no more than this
    return {"envelopes": page, "more": more}


@op("can_send")
async def _can_send(c: Caller, p: dict[str, Any]) -> Any:
    session_id = _str(p, "session_id")
    return c.hub.can_send(
        session_id,
        c.require_member(session_id, _str(p, "sender_id")),
        event_type=_str(p, "event_type", optional=True),
    )


@op("find_envelope_by_causation")
async def _find_by_causation(c: Caller, p: dict[str, Any]) -> Any:
    session_id = _str(p, "session_id")
    found = await c.hub.find_envelope_by_causation(
        session_id,
        sender_id=c.require_member(session_id, _str(p, "sender_id")),
        causation_id=_str(p, "causation_id"),
    )
    return unstructure(found) if found is not None else None


@op("pending_turns_for")
async def _pending_turns_for(c: Caller, p: dict[str, Any]) -> Any:
    agent_id = c.require(_str(p, "agent_id"))
    session_id = _str(p, "session_id", optional=True)
    if session_id is not None:
        c.require_member(session_id, agent_id)
    return unstructure(await c.hub.pending_turns_for(agent_id, session_id=session_id))


@op("report_turn_failure")
async def _report_turn_failure(c: Caller, p: dict[str, Any]) -> Any:
    session_id = _str(p, "session_id")
    c.hub.audit_turn_failure(
        session_id=session_id,
        agent_id=c.require_member(session_id, _str(p, "agent_id")),
        envelope_id=_str(p, "envelope_id"),
        exc_type=_str(p, "exc_type"),
        exc_message=str(p.get("exc_message", "")),
    )


# -- tasks -----------------------------------------------------------------------------------


@op("observe_task")
async def _observe_task(c: Caller, p: dict[str, Any]) -> Any:
    task = structure(p.get("task"), TaskMetadata)
    c.require(task.owner_id)
    await c.hub.observe_task(task)


@op("update_task")
async def _update_task(c: Caller, p: dict[str, Any]) -> Any:
    task = c.require_task(_str(p, "task_id"))
    state = p.get("state")
    await c.hub.update_task(
        task.task_id,
        state=structure(state, TaskState) if state is not None else None,
        progress=_dict(p, "progress"),
        result=p.get("result"),
        error=_str(p, "error", optional=True),
    )


@op("get_task")
async def _get_task(c: Caller, p: dict[str, Any]) -> Any:
    return unstructure(c.require_task(_str(p, "task_id")))


@op("list_tasks")
async def _list_tasks(c: Caller, p: dict[str, Any]) -> Any:
    agent_id = _str(p, "agent_id", optional=True)
    state = p.get("state")
    owners = [c.require(agent_id)] if agent_id is not None else sorted(c.actor.agents)
    limit = _int(p, "limit", 50)
    found = []
    for owner in owners:
        found.extend(
            await c.hub.list_tasks(
                agent_id=owner,
                session_id=_str(p, "session_id", optional=True),
                state=structure(state, TaskState) if state is not None else None,
                limit=limit,
            )
        )
    return unstructure(found[:limit])


@op("record_observation")
async def _record_observation(c: Caller, p: dict[str, Any]) -> Any:
    await c.hub.record_observation(
        owner_id=c.require(_str(p, "owner_id")),
        capability=_str(p, "capability"),
        outcome=structure(p.get("outcome"), TaskState),
        latency_ms=_int(p, "latency_ms"),
        task_id=_str(p, "task_id", optional=True),
    )


@op("checkpoint_task")
async def _checkpoint_task(c: Caller, p: dict[str, Any]) -> Any:
    data = p.get("state")
    if not isinstance(data, dict):
        raise DecodeError("parameter 'state' must be an object", record="params", field="state")
    await c.hub.checkpoint_task(c.require_task(_str(p, "task_id")).task_id, data)


@op("read_task_checkpoint")
async def _read_task_checkpoint(c: Caller, p: dict[str, Any]) -> Any:
    return await c.hub.read_task_checkpoint(c.require_task(_str(p, "task_id")).task_id)
