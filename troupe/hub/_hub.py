"""``Hub``: the handle ``open_hub`` yields; each hub operation is implemented here, once.

Every operation is a request record of ``troupe.api`` and one handler here, keyed by the
record's type (``HANDLERS``). ``Hub.call`` is the one path every caller takes: the seed-named
methods below (``get_agent``, ``create_session``, …) build a record and call it in process,
and the WebSocket dispatcher (``_rpc``) hands a request frame's params to ``call_data``,
which structures the record from them and takes the same path, with the connection as
``caller``. Both check the record's fields with the one converter and, for a caller over a
wire, the identity and owner the record declares.

Reads (``get_agent``, ``get_session``, ``can_send``, …) read the published tables and never
wait on an actor. Writes go to the one actor that owns the thing written. Posts, closes and
invite rounds go to the session supervisor (``_sessions``), which picks the session's actor
(starting it from the store), restarts or gives up on one that crashed, and settles what a
poster gets after a crash.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import attrs
import orjson
import trio

from .. import _tracing
from .._errors import (
    AccessDeniedError,
    NetworkError,
    NotFoundError,
    NotOwner,
    ProtocolError,
    StoreError,
)
from ..actors import ActorRef, Message
from ..api import (
    Accepted,
    CanSend,
    CheckpointTask,
    CloseSession,
    CreateSession,
    Endpoint,
    FindAgentId,
    FindEnvelopeByCausation,
    GetAgent,
    GetResume,
    GetRule,
    GetSession,
    GetSkill,
    GetTask,
    HubCalls,
    ListAgents,
    ListSessions,
    ListTasks,
    NamesFor,
    ObserveTask,
    PendingTurn,
    PendingTurnsFor,
    PostEnvelope,
    ReadTaskCheckpoint,
    ReadWal,
    RecordObservation,
    Register,
    ReportTurnFailure,
    Request,
    SetResume,
    SetRule,
    SetSkill,
    Unregister,
    UpdateTask,
    WalPage,
)
from ..mailbox import DeadLetterBuffer
from ..model import (
    EV_TEXT,
    Envelope,
    Passport,
    Resume,
    Rule,
    SessionMetadata,
    SessionState,
    StreamChunk,
    TaskMetadata,
    check_data,
    check_envelope,
    check_record,
    structure,
    unstructure,
)
from ..session_types import AnySessionType, ViewPolicy
from ..supervisors import ChildSpec, Supervisor
from . import _hub_messages as H
from ._arbiters import Arbiter
from ._audit import ReadAudit
from ._auth import AuthRegistry
from ._connection import Bind, Caller
from ._core import HubCore
from ._directory import Directory
from ._evaluators import Evaluator
from ._events import DEFAULT_CAPACITY, EventStream, ExpectationViolation
from ._expectations import ExpectationSweeper, Handler
from ._extensions import ExtensionState, check_callable, check_name
from ._lanes import StreamStatistics
from ._listeners import LISTENER_CAPACITY, run_listener
from ._routes import Routes
from ._session_parts import EndSession
from ._sessions import SessionSupervisor
from ._stats import HubHealth, HubStatistics
from ._streaming import fan_out

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

log = logging.getLogger("troupe.hub")

R = TypeVar("R")

#: How many of a session's last envelopes ``pending_turns_for`` looks through for a turn's
#: trigger (its ``expected_at``); an older trigger gives the hub's clock instead.
TRIGGER_LOOKBACK = 16
#: How long ``Hub.health()`` waits for the store's answer before calling it unreachable.
HEALTH_STORE_TIMEOUT_S = 1.0
#: A ``read_wal`` answer over the wire holds at most this many envelopes, and stops after
#: the envelope that takes it past ``READ_WAL_PAGE_BYTES`` of JSON (at least one envelope);
#: ``more`` then says to ask again from the last seq (``HubClient.read_wal`` does).
READ_WAL_PAGE_COUNT = 1000
READ_WAL_PAGE_BYTES = 256 << 10

_Handler = Callable[["Hub", Any, Caller | None], Awaitable[Any]]
#: Request record type -> the one handler that implements it.
HANDLERS: dict[type[Request[Any]], _Handler] = {}
_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def session_of(request: Request[Any]) -> str | None:
    """The session a request is scoped to (a post's, or a session-owned record's), if any:
    what a cluster routes to the session's owner."""
    if type(request) is PostEnvelope:
        return request.envelope.session_id
    if request.owner == "session":
        session_id: str | None = getattr(request, "session_id")  # noqa: B009
        return session_id
    return None


def _handler(kind: type[Request[Any]]) -> _Handler:
    handler = HANDLERS.get(kind)
    if handler is None:
        raise TypeError(f"not a hub request: {kind.__name__}")
    return handler


def handles(kind: type[Request[Any]]) -> Callable[[_F], _F]:
    """Make the decorated ``Hub`` method the handler of requests of type ``kind``.

    A read that waits on nothing is a schedule point for an in-process caller (``caller``
    None), as every trio call is, but not for a connection's request: that runs in a task of
    its own (``_serve._request``), which sends the answer next, and sending is one. A second
    one cost a scheduler round, ~5 µs of every read over the wire.
    """

    def register(fn: _F) -> _F:
        HANDLERS[kind] = fn
        return fn

    return register


class Hub(HubCalls):
    """A running hub; use it only inside its ``open_hub`` block."""

    def __init__(
        self, core: HubCore, auth: AuthRegistry, directory: Directory, routes: Routes
    ) -> None:
        self._core = core
        self.auth = auth
        #: The connections' tables, writable: the handle only passes them to each
        #: connection it attaches (``attach_endpoint``); it reads them through ``core``.
        self._routes = routes
        #: The session supervisor (runs as the root's ``sessions`` child); the handle only
        #: reads the directory (``core.directory``), the supervisor writes its live fields.
        self._sessions = SessionSupervisor(core, directory)
        self._connections: Supervisor | None = None
        #: The root supervisor (set by ``open_hub``).
        self._root: Supervisor | None = None
        self._client_nursery: trio.Nursery | None = None
        #: Serves one connection (``_serve.serve_endpoint``, set by ``open_hub``, which
        #: imports both: the connection's serving code depends on this handle, not back).
        self._serve_endpoint: Callable[..., Awaitable[None]] | None = None
        self._expectations: ExpectationSweeper[Hub] = ExpectationSweeper(self)
        self._ext = ExtensionState()

    @property
    def core(self) -> HubCore:
        return self._core

    @property
    def dead_letters(self) -> DeadLetterBuffer:
        """Poison envelopes and undeliverable messages, with their reasons."""
        return self._core.dead_letters

    # -- the one path ------------------------------------------------------------------------

    async def call(self, request: Request[R], *, caller: Caller | None = None) -> R:
        """Run one request (a ``troupe.api`` record) and return its result.

        The request is checked by the one converter first, as if it had come over the wire
        (a field of the wrong type, or data that is not JSON, is the caller's
        ``DecodeError`` naming it, never an actor's crash). With a ``caller`` (a connection)
        the identity the request names as acting must be bound to it, and the owner the
        request declares (a session's participants, a task's owner, as stored) must match.

        Raises:
          DecodeError: a field does not fit its type or range.
          AccessDeniedError: the caller may not act as the identity, or on the record.
          NetworkError, StoreError: what the operation refused with.
        """
        return await self._route(self._checked(request), caller, _handler(type(request)))

    async def call_data(
        self, kind: type[Request[R]], params: dict[str, Any], *, caller: Caller | None = None
    ) -> R:
        """Run the request of type ``kind`` that ``params`` (its JSON data: a request frame's)
        describe, as :meth:`call` runs a record.

        The one converter builds the record from ``params``, checking every field's type,
        and the data is checked once as it is (JSON, depth, size; ``check_data``), instead
        of being unstructured and structured again as :meth:`call` checks a record built
        in process (~1.3 µs of every RPC's CPU). A post's envelope gets the post path's own
        check either way.

        Raises:
          DecodeError: a field does not fit its type or range.
          AccessDeniedError: the caller may not act as the identity, or on the record.
          NetworkError, StoreError: what the operation refused with.
        """
        handler = _handler(kind)
        request = structure(params, kind)
        if kind is PostEnvelope:
            request = self._checked(request)
        else:
            max_bytes = self._core.config.max_envelope_bytes
            check_data(params, kind.__name__, max_bytes if kind.stored else None)
        return await self._route(request, caller, handler)

    async def _route(self, request: Request[R], caller: Caller | None, handler: _Handler) -> R:
        """Run a checked request here, or at its session's owner in a cluster that routes."""
        cluster = self._core.cluster
        if cluster is not None and cluster.routes:
            session_id = session_of(request)
            if session_id is not None:
                # A session-scoped request in a cluster that routes: served here while this
                # node serves the shard (and does not lose it meanwhile), else forwarded to
                # its owner (``troupe.cluster``).
                if cluster.serves(session_id):
                    try:
                        return await self._local(request, caller, handler)
                    except NotOwner:
                        pass  # lost on the way (nothing was written): to the new owner
                # The acting identity is checked here first, as for a local call.
                if caller is not None and request.acting is not None:
                    self._check_acting(request, caller.agents)
                on_behalf = None if caller is None else frozenset(caller.agents)
                routed: R = await cluster.route(
                    request, session_id, on_behalf, partial(self._local, request, caller, handler)
                )
                return routed
        return await self._local(request, caller, handler)

    async def _local(self, request: Request[R], caller: Caller | None, handler: _Handler) -> R:
        """Run a checked request on this hub (``call``'s local half)."""
        if caller is not None:
            if request.for_each_bound and request.acting_id() is None:
                each: R = await self._for_each_bound(request, caller, handler)
                return each
            if self._core.cluster is not None and request.owner == "task":
                await self.learn_task(getattr(request, "task_id"))  # noqa: B009
            self._authorise(request, caller.agents)
        result: R = await handler(self, request, caller)
        return result

    async def serve_forwarded(self, request: Request[R], on_behalf: frozenset[str] | None) -> R:
        """Run a request another cluster node forwarded here (its owner), never forwarding it
        again: a ``NotOwner`` goes back to the forwarding node, which re-reads the shard map.

        ``on_behalf``: the identities bound to the forwarding node's caller (that node
        checked the acting one); the owner the request declares is checked against them
        here, where the session is known. None: a trusted in-process caller of that node.
        A ``read_wal`` is answered one bounded page at a time, as over a wire.
        """
        handler = _handler(type(request))
        request = self._checked(request)
        if on_behalf is not None:
            self._authorise(request, on_behalf)
        if type(request) is ReadWal:
            page: R = await self._wal_page(request)  # type: ignore[assignment]
            return page
        result: R = await handler(self, request, None)
        return result

    def _checked(self, request: Request[R]) -> Request[R]:
        max_bytes = self._core.config.max_envelope_bytes
        if type(request) is PostEnvelope:
            # The post path's own check (a few type tests and one encode): the envelope is
            # the whole request, and check_record would walk it twice more.
            envelope = request.envelope
            if not isinstance(envelope, Envelope):
                raise TypeError(f"post_envelope takes an Envelope, got {type(envelope).__name__}")
            try:
                check_envelope(envelope, max_bytes)
            except NetworkError as exc:
                self._core.counters.rejected += 1
                self._core.events.rejected(envelope, exc)
                raise
            return request  # type: ignore[return-value]
        return check_record(request, max_bytes if request.stored else None)

    def _check_acting(self, request: Request[Any], agents: AbstractSet[str]) -> None:
        """Refuse a request whose acting identity is not one of ``agents`` (the caller's)."""
        acting = request.acting_id()
        if request.acting is not None and acting not in agents:
            raise AccessDeniedError(f"this connection is not bound to agent {acting!r}")

    def _authorise(self, request: Request[Any], agents: AbstractSet[str]) -> None:
        """Check what ``request`` declares (``acting``, ``owner``) against the caller's
        identities, ``agents``."""
        self._check_acting(request, agents)
        acting = request.acting_id()
        if request.owner == "session":
            session_id: str | None = getattr(request, "session_id")  # noqa: B009
            if session_id is None:
                return
            md = self._core.directory.get(session_id).metadata
            if acting is not None:
                if md.role_of(acting) is None:
                    raise AccessDeniedError(
                        f"agent {self.name_for(acting)!r} is not a participant of session "
                        f"{session_id}"
                    )
            elif agents.isdisjoint(md.participant_ids()):
                raise AccessDeniedError(
                    f"no identity of this connection is a participant of session {session_id}"
                )
        elif request.owner == "task":
            task_id: str = getattr(request, "task_id")  # noqa: B009
            task = self._core.tasks.get(task_id)
            if task is None:
                raise NotFoundError(f"task not found: {task_id!r}")
            if task.owner_id not in agents:
                raise AccessDeniedError(f"this connection is not bound to agent {task.owner_id!r}")

    async def _for_each_bound(
        self, request: Request[Any], caller: Caller, handler: _Handler
    ) -> Any:
        """A list request without its acting identity: once per identity bound to the
        caller, merged (each item once), at most ``limit``."""
        assert request.acting is not None
        limit: int = getattr(request, "limit")  # noqa: B009
        found: list[Any] = []
        for agent_id in sorted(caller.agents):
            mine = attrs.evolve(request, **{request.acting: agent_id})  # type: ignore[misc]
            for item in await handler(self, mine, caller):
                if item not in found:
                    found.append(item)
        return found[:limit]

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
        return await self.call(
            Register(passport=passport, resume=resume or Resume(), skill_md=skill_md, rule=rule)
        )

    @handles(Register)
    async def _register(self, request: Register, caller: Caller | None) -> Passport:
        if caller is not None and request.passport.effective_kind == "remote_agent":
            # A federation proxy's identity skips registration auth; only the hub's owner may
            # make one (in process). Over a connection it would take any name without its key.
            raise AccessDeniedError(
                f"agent {request.passport.name!r}: a remote_agent passport is registered by "
                "the hub itself, not over a connection"
            )
        stamped = await self._ask_hub(request)
        if caller is not None:
            # Registered over a connection: bound to it at once.
            assert stamped.agent_id is not None
            try:
                await caller.ref.ask(Bind(stamped.agent_id))
            except (NetworkError, StoreError) as refused:
                await self.unregister_after_failed_bind(stamped.agent_id, refused)
        return stamped

    async def unregister_after_failed_bind(self, agent_id: str, cause: Exception) -> NoReturn:
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
        await self.call(Unregister(agent_id=agent_id))

    @handles(Unregister)
    async def _unregister(self, request: Unregister, caller: Caller | None) -> None:
        await self._ask_hub(request)
        if caller is not None:
            caller.agents.discard(request.agent_id)

    @handles(GetAgent)
    async def _get_agent(self, request: GetAgent, caller: Caller | None) -> Passport:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        await self.learn_agent(request.name_or_id)
        return self._core.registry.resolve(request.name_or_id).passport

    async def learn_agent(
        self, name_or_id: str, *, by_name: bool = True, fresh: bool = False
    ) -> None:
        """In a cluster, read an agent this node does not know (by name unless not
        ``by_name``, then by id) from the shared store first: one registered on another
        node is known here at once, before the feed brings it (the hub actor's rules).
        With ``fresh``, read it even when known: a bind must not take an identity another
        node unregistered since the last sync. Nothing without a cluster."""
        core = self._core
        if core.cluster is None:
            return
        registry = core.registry
        known = (by_name and registry.find_agent_id(name_or_id) is not None) or (
            name_or_id in registry
        )
        if fresh or not known:
            await self._ask_hub(H.LearnAgent(name_or_id, by_name, fresh))

    async def learn_task(self, task_id: str) -> None:
        """:meth:`learn_agent` for a task."""
        if self._core.cluster is not None and task_id not in self._core.tasks:
            await self._ask_hub(H.LearnTask(task_id))

    @handles(GetResume)
    async def _get_resume(self, request: GetResume, caller: Caller | None) -> Resume:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        await self.learn_agent(request.agent_id, by_name=False)
        record = self._core.registry.agents.get(request.agent_id)
        if record is None:
            raise NotFoundError(f"resume not found: {request.agent_id!r}")
        return record.resume

    @handles(GetSkill)
    async def _get_skill(self, request: GetSkill, caller: Caller | None) -> str | None:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        record = self._core.registry.agents.get(request.agent_id)
        return record.skill_md if record is not None else None

    @handles(GetRule)
    async def _get_rule(self, request: GetRule, caller: Caller | None) -> Rule:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        await self.learn_agent(request.agent_id, by_name=False)
        return self._core.registry.record(request.agent_id).rule

    @handles(SetResume)
    @handles(SetSkill)
    @handles(SetRule)
    @handles(RecordObservation)
    @handles(ObserveTask)
    @handles(CheckpointTask)
    @handles(ReadTaskCheckpoint)
    async def _hub_actor_owns(self, request: Request[Any], caller: Caller | None) -> Any:
        """The requests the hub actor answers as they are (it owns the tables they change)."""
        return await self._ask_hub(request)

    @handles(ListAgents)
    async def _list_agents(self, request: ListAgents, caller: Caller | None) -> list[Passport]:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        return self._core.registry.search(
            capability=request.capability,
            query=request.query,
            kind=request.kind,
            sort_by=request.sort_by,
            limit=request.limit,
        )

    def agents_with_capability(self, capability: str) -> list[str]:
        return self._core.registry.with_capability(capability)

    def name_for(self, agent_id: str) -> str:
        return self._core.registry.name_for(agent_id)

    def find_agent_id(self, name: str) -> str | None:
        return self._core.registry.find_agent_id(name)

    async def find_agent(self, name: str) -> str | None:
        """:meth:`find_agent_id`, awaitable (the same call as on a remote hub)."""
        return await self.call(FindAgentId(name=name))

    @handles(FindAgentId)
    async def _find_agent(self, request: FindAgentId, caller: Caller | None) -> str | None:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        await self.learn_agent(request.name)
        return self._core.registry.find_agent_id(request.name)

    @handles(NamesFor)
    async def _names_for(self, request: NamesFor, caller: Caller | None) -> dict[str, str]:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        return {agent_id: self.name_for(agent_id) for agent_id in request.agent_ids}

    async def learn_names(self, agent_ids: Sequence[str]) -> None:
        """Nothing to fetch in process (a remote hub caches names for ``name_for``)."""
        await trio.lowlevel.checkpoint()

    # -- session types -----------------------------------------------------------------------

    def register_session_type(self, stype: AnySessionType) -> None:
        """Add (or replace) a session type; existing sessions keep the type they started with."""
        self._core.session_types[(stype.name, stype.version)] = stype

    # -- tasks -------------------------------------------------------------------------------

    @handles(UpdateTask)
    async def _update_task(self, request: UpdateTask, caller: Caller | None) -> None:
        await self._ask_hub(request)

    @handles(GetTask)
    async def _get_task(self, request: GetTask, caller: Caller | None) -> TaskMetadata:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        await self.learn_task(request.task_id)
        task = self._core.tasks.get(request.task_id)
        if task is None:
            raise NotFoundError(f"task not found: {request.task_id!r}")
        return task

    @handles(ListTasks)
    async def _list_tasks(self, request: ListTasks, caller: Caller | None) -> list[TaskMetadata]:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        out: list[TaskMetadata] = []
        for task in self._core.tasks.values():
            if len(out) >= request.limit:
                break
            if request.agent_id is not None and task.owner_id != request.agent_id:
                continue
            if request.session_id is not None and task.session_id != request.session_id:
                continue
            if request.state is not None and task.state is not request.state:
                continue
            out.append(task)
        return out

    async def _ask_hub(self, msg: Message[R]) -> R:
        """Ask the hub actor (one of its ``HubMsg``, checked by ``call``); return its answer,
        of the type the message declares, or raise what it refused with.

        A crash of the hub actor counts against the root supervisor: what reaches it is
        checked first, so a caller's bad value is the caller's error, not a crash.
        """
        assert self._core.hub_ref is not None
        return await self._core.hub_ref.ask(msg)  # a refusal raises here (Refused)

    # -- sessions ----------------------------------------------------------------------------

    @handles(CreateSession)
    async def _create_session(
        self, request: CreateSession, caller: Caller | None
    ) -> SessionMetadata:
        self._check_arbiter(request.manifest_type, request.knobs)
        md = await self._ask_hub(request)
        if _tracing.ACTIVE is not None:
            _tracing.ACTIVE.session_opened(md)
        return await self._sessions.open(md)

    @handles(GetSession)
    async def _get_session(self, request: GetSession, caller: Caller | None) -> SessionMetadata:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        return self._core.directory.get(request.session_id).metadata

    @handles(ListSessions)
    async def _list_sessions(
        self, request: ListSessions, caller: Caller | None
    ) -> list[SessionMetadata]:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        return self._core.directory.select(
            agent_id=request.agent_id,
            state=request.state,
            include_terminal=request.include_terminal,
            limit=request.limit,
        )

    @handles(CloseSession)
    async def _close_session(self, request: CloseSession, caller: Caller | None) -> SessionMetadata:
        entry = self._core.directory.get(request.session_id)
        if entry.metadata.state.terminal:
            await trio.lowlevel.checkpoint()
            return entry.metadata
        return await self._sessions.end(
            request.session_id, EndSession(request.reason or "explicit_close")
        )

    async def read_wal(
        self, session_id: str, *, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        """The slice ``wal[since:until]`` of the session's envelopes, in order.

        Seqs start at 1, so that is the envelopes with ``since < seq <= until``; a negative
        bound counts from the end, as in a Python slice (``since=-2``: the last two).

        Raises:
          NotFoundError: no such session.
        """
        page = await self.call(ReadWal(session_id=session_id, since=since, until=until))
        return page.envelopes

    @handles(ReadWal)
    async def _read_wal(self, request: ReadWal, caller: Caller | None) -> WalPage:
        since, until = request.since, request.until
        if caller is None:  # in process: the whole range at once
            whole = H.ReadEnvelopes(request.session_id, since, until)
            return WalPage(envelopes=await self._ask_hub(whole), more=False)
        return await self._wal_page(request)

    async def _wal_page(self, request: ReadWal) -> WalPage:
        """One bounded page of ``request``'s range (over a wire: its answer is one frame)."""
        since, until = request.since, request.until
        last = since + READ_WAL_PAGE_COUNT
        bounded = H.ReadEnvelopes(
            request.session_id, since, last if until is None else min(until, last)
        )
        wal = await self._ask_hub(bounded)
        page: list[Envelope] = []
        size = 0
        for envelope in wal:
            page.append(envelope)
            size += len(orjson.dumps(unstructure(envelope)))
            if size >= READ_WAL_PAGE_BYTES:
                break
        more = bool(page) and (until is None or page[-1].seq < until)
        if more and len(page) == len(wal) and len(wal) < READ_WAL_PAGE_COUNT:
            more = False  # the store had no more than this
        return WalPage(envelopes=page, more=more)

    def can_send(self, session_id: str, sender_id: str, *, event_type: str | None = None) -> bool:
        """Whether the session type would accept a post of ``event_type`` from the sender now.

        A turn probe: it reads the last published state and checks membership (an invitee
        that has not acked its invite may not send), ACTIVE and the session type's rules,
        not rates or inboxes.
        """
        entry = self._core.directory.sessions.get(session_id)
        if entry is None or entry.stype is None or entry.state is None:
            return False
        md = entry.metadata
        if (
            md.state is not SessionState.ACTIVE
            or md.role_of(sender_id) is None
            or sender_id in md.pending_acks  # it has not acked its invite
        ):
            return False
        probe = Envelope(
            session_id=session_id,
            sender_id=sender_id,
            event_type=event_type or EV_TEXT,
            event_data={"text": ""},
        )
        try:
            entry.stype.validate_send(md, probe, entry.state)
        except ProtocolError:
            return False
        return True

    async def acan_send(
        self, session_id: str, sender_id: str, *, event_type: str | None = None
    ) -> bool:
        """:meth:`can_send`, awaitable (the same call as on a remote hub)."""
        return await self.call(
            CanSend(session_id=session_id, sender_id=sender_id, event_type=event_type)
        )

    @handles(CanSend)
    async def _can_send(self, request: CanSend, caller: Caller | None) -> bool:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        return self.can_send(request.session_id, request.sender_id, event_type=request.event_type)

    def session_state(self, session_id: str) -> Any:
        """The session type's last published state (None before the session was loaded)."""
        return self._core.directory.get(session_id).state

    def default_view_policy(self, session_id: str, participant_id: str) -> ViewPolicy:
        entry = self._core.directory.get(session_id)
        if entry.stype is None:
            md = entry.metadata
            raise NotFoundError(
                f"no session type registered for {md.manifest_type}@v{md.manifest_version}"
            )
        return entry.stype.default_view_policy(entry.metadata, participant_id)

    def session_type(self, name: str, version: int) -> AnySessionType | None:
        """The session type registered as ``name`` at ``version``, if any."""
        return self._core.session_type(name, version)

    @handles(PendingTurnsFor)
    async def _pending_turns_for(
        self, request: PendingTurnsFor, caller: Caller | None
    ) -> list[PendingTurn]:
        agent_id, session_id = request.agent_id, request.session_id
        turns = []
        directory = self._core.directory
        entries = (
            [directory.get(session_id)] if session_id is not None else directory.of_agent(agent_id)
        )
        for entry in entries:
            md = entry.metadata
            if md.state is not SessionState.ACTIVE or entry.stype is None or entry.state is None:
                continue
            turn = entry.stype.expected_next(md, entry.state)
            if turn is not None and turn.agent_id == agent_id and agent_id not in md.pending_acks:
                trigger = turn.triggering_envelope_id
                turns.append(
                    PendingTurn(
                        session_id=md.session_id,
                        triggering_envelope_id=trigger,
                        expected_at=await self._expected_at(md.session_id, trigger),
                    )
                )
        await trio.lowlevel.checkpoint()
        return turns

    async def _expected_at(self, session_id: str, trigger_id: str | None) -> str:
        """The trigger's ``created_at`` if it is among the session's last envelopes, else now.

        (The reference scanned the whole WAL; a turn's trigger is nearly always recent.)
        """
        core = self._core
        if trigger_id is not None:
            last = core.directory.get(session_id).last_seq
            # Mostly the last envelope: read it alone first (one decode, not sixteen).
            for lookback in (1, TRIGGER_LOOKBACK):
                for envelope in await core.store.read(session_id, since=max(0, last - lookback)):
                    if envelope.envelope_id == trigger_id:
                        return envelope.created_at
        return core.now_iso()

    @handles(FindEnvelopeByCausation)
    async def _find_envelope_by_causation(
        self, request: FindEnvelopeByCausation, caller: Caller | None
    ) -> Envelope | None:
        session_id, sender_id = request.session_id, request.sender_id
        causation_id = request.causation_id
        entry = self._core.directory.get(session_id)
        self._check_participant(entry.metadata, sender_id)
        if entry.dedup is None or not entry.running:
            if entry.metadata.state.terminal:
                wal = await self.read_wal(session_id)
                return next(
                    (e for e in wal if e.sender_id == sender_id and e.causation_id == causation_id),
                    None,
                )
            await self._sessions.running(entry)
        assert entry.dedup is not None
        complete = entry.dedup.complete
        answered = entry.dedup.answer(sender_id, causation_id)
        if answered is not None:
            seq = answered[1]
            found = await self.read_wal(session_id, since=seq - 1, until=seq)
            return found[0] if found else None
        if complete:
            return None
        # Older than the session's dedup window: the store's index has it.
        hit = await self._ask_hub(H.FindAnswer(session_id, sender_id, causation_id))
        if hit is None:
            return None
        found = await self.read_wal(session_id, since=hit[1] - 1, until=hit[1])
        return found[0] if found else None

    @handles(ReportTurnFailure)
    async def _report_turn_failure(self, request: ReportTurnFailure, caller: Caller | None) -> None:
        if caller is None:  # (a connection's request task yields sending the answer)
            await trio.lowlevel.checkpoint()
        self._check_participant(
            self._core.directory.get(request.session_id).metadata, request.agent_id
        )
        self._core.audit(
            "turn_failed",
            session_id=request.session_id,
            agent_id=request.agent_id,
            envelope_id=request.envelope_id,
            exc_type=request.exc_type,
            exc_message=request.exc_message,
        )

    def _check_participant(self, md: SessionMetadata, agent_id: str) -> None:
        if md.role_of(agent_id) is None:
            raise AccessDeniedError(
                f"agent {self._core.registry.name_for(agent_id)!r} is not a participant of "
                f"session {md.session_id}"
            )

    # -- posting ----------------------------------------------------------------------------

    async def post_envelope(self, envelope: Envelope) -> str:
        """Validate, stamp and durably append ``envelope``; return its ``envelope_id``.

        The caller's object is not changed. A repeat (same ``idempotency_key``, or the same
        sender answering the same ``causation_id`` with the same event type) returns the
        original id and appends nothing.

        Raises:
          NotFoundError, AccessDeniedError, RateLimited, InboxFull, ProtocolError: the post
            was refused and the WAL is untouched.
          DecodeError: a field is not of its type, or ``event_data`` is not JSON data
            (see ``troupe.model.check_envelope``); ``field`` names it.
          StoreError: the store failed; nothing was appended.
        """
        return (await self.post(envelope)).envelope_id

    async def post(self, envelope: Envelope) -> Accepted:
        """Like :meth:`post_envelope`, returning the ``envelope_id``, ``seq`` and ``duplicate``."""
        return await self.call(PostEnvelope(envelope=envelope))

    @handles(PostEnvelope)
    async def _post_envelope(self, request: PostEnvelope, caller: Caller | None) -> Accepted:
        # ``call`` checked the envelope (check_envelope) before any actor sees it: the one
        # check of the caller's fields, for posts in process and over the wire alike. The
        # session supervisor admits it, asks the session's actor and settles a crash.
        return await self._sessions.post(request.envelope)

    async def expire_due(self) -> None:
        """Expire sessions and tasks past their TTL; time out PENDING handshakes (the sweeper)."""
        now = self._core.now()
        await self._sessions.expire_due(now)  # the sessions' ends: their supervisor's
        await self._ask_hub(H.ExpireTasks(now))  # the tasks: the hub actor's

    async def check_expectations(self) -> list[ExpectationViolation]:
        """Evaluate every live session's expectations now and run the new violations' handlers.

        The expectation sweeper's tick (every ``expectation_sweep_interval`` seconds); each
        violation fires once per violator and episode, also across restarts (see
        ``troupe.hub._expectations``).

        Returns:
            The violations that fired.
        """
        return await self._expectations.check()

    # -- endpoints ---------------------------------------------------------------------------

    async def attach_endpoint(self, endpoint: Endpoint) -> str:
        """Serve a new connection (its frames, its deliveries); return its endpoint id."""
        assert self._connections is not None, "the hub is not running"
        assert self._serve_endpoint is not None, "the hub is not running"
        await self._connections.start_child(
            ChildSpec(
                endpoint.endpoint_id,
                partial(self._serve_endpoint, self, endpoint, self._routes),
                restart="temporary",
            )
        )
        return endpoint.endpoint_id

    async def bind_endpoint(
        self,
        endpoint_id: str,
        agent_id: str,
        *,
        since: dict[str, int] | None = None,
        takeover: bool = False,
    ) -> None:
        """Route ``agent_id``'s deliveries to this endpoint.

        With ``since`` not None, replay what the agent has not acked (see ``HelloFrame``).
        With ``takeover``, take the identity from another open connection, which is told why
        (an ``identity_in_use`` ErrorFrame) and closed: what an API key allows over a wire.

        Raises:
          IdentityInUse: another connection that is still open holds ``agent_id`` and
            ``takeover`` is off (one that was closed holds nothing: a client that
            reconnects binds again at once).
        """
        conn = self._core.connections.get(endpoint_id)
        if conn is None:
            raise NotFoundError(f"endpoint not attached: {endpoint_id!r}")
        await self.learn_agent(agent_id, by_name=False, fresh=True)
        self._core.registry.record(agent_id)
        await conn.ref.ask(Bind(agent_id, since, takeover=takeover))

    async def host(self, fn: Any, *args: Any) -> Any:
        """Run ``await nursery.start(fn, *args)`` in the hub's nursery for in-process clients.

        In-process clients (``HubClient(LocalLink(hub))``) keep their receive loops here, so
        they need no nursery of their own and end with the hub at the latest.
        """
        assert self._client_nursery is not None, "the hub is not running"
        return await self._client_nursery.start(fn, *args)

    # -- streaming ---------------------------------------------------------------------------

    def stream_chunk(self, chunk: StreamChunk) -> int:
        """Forward a streamed chunk to the session's participants; how many got it.

        Best effort and never stored (see ``_streaming.py``): the chunk is checked as a post
        of its sender would be, then handed to the connection of each participant in its
        audience without waiting; a recipient already ``CHUNK_BUFFER`` chunks behind misses
        it (counted in :meth:`stream_statistics`).

        Raises:
          NotFoundError: the sender or the session is unknown.
          AccessDeniedError: the audience is outside the sender's ``outbound_to``.
          ProtocolError: the chunk is malformed, or its sender may not post in the
            session now.
        """
        if not isinstance(chunk, StreamChunk):
            raise TypeError(f"stream_chunk takes a StreamChunk, got {type(chunk).__name__}")
        return fan_out(self._core, chunk)

    def stream_statistics(self) -> StreamStatistics:
        """How many chunks the hub forwarded, dropped and refused."""
        return self._core.streams.statistics()

    # -- observability -----------------------------------------------------------------------

    async def health(self) -> HubHealth:
        """Whether the hub serves: its root supervisor, the store, live sessions, connections.

        Cheap: in-memory counts and one small store read (bounded by
        ``HEALTH_STORE_TIMEOUT_S``). ``serving`` is true while the ``open_hub`` block runs,
        the root supervisor is ``running`` (no child of it down) and the store answered.
        """
        core = self._core
        reachable = False
        with trio.move_on_after(HEALTH_STORE_TIMEOUT_S):
            try:
                await core.store.last_seq("")
            except StoreError:
                pass
            else:
                reachable = True
        supervisor = self._root.state if self._root is not None else "stopping"
        return HubHealth(
            serving=not core.stopping and supervisor == "running" and reachable,
            supervisor=supervisor,
            store_reachable=reachable,
            live_sessions=len(self._sessions),
            connections=len(self._connections) if self._connections is not None else 0,
        )

    def supervisors(self) -> dict[str, Supervisor | None]:
        """The hub's supervisors, to look at (``state``, ``statistics()``,
        ``which_children()``): ``"hub"``, the root, and its dynamic children ``"sessions"``
        (one actor per live session) and ``"endpoints"`` (one per connection). None for one
        that is not running (before the hub has started it, or after it ended)."""
        return {
            "hub": self._root,
            "sessions": self._sessions.supervisor,
            "endpoints": self._connections,
        }

    def statistics(self) -> HubStatistics:
        """A snapshot of the hub's counters (see :class:`HubStatistics`)."""
        core = self._core
        directory = core.directory
        live = len(self._sessions)
        open_ = directory.open_count
        sessions = self._sessions.statistics()
        session_hw = core.counters.session_high_water
        for entry in directory.in_use.values():
            if entry.ref is not None:
                session_hw = max(session_hw, entry.ref.mailbox.statistics().high_water)
        return HubStatistics(
            agents=len(core.registry),
            sessions=len(directory),
            open_sessions=open_,
            live_sessions=live,
            passivated_sessions=max(0, open_ - live),
            passivations=core.counters.passivations,
            rehydrations=core.counters.rehydrations,
            connections=len(self._connections) if self._connections is not None else 0,
            envelopes_accepted=core.counters.accepted,
            envelopes_rejected=core.counters.rejected,
            duplicates=core.counters.duplicates,
            session_restarts=sessions.restarts if sessions is not None else 0,
            sessions_crashed=core.counters.sessions_crashed,
            poison_envelopes=core.counters.poison,
            dead_letters=core.dead_letters.total,
            pending_inbox=core.ledger.total(),
            hub_mailbox_high_water=_high_water(core.hub_ref),
            session_mailbox_high_water=session_hw,
            connection_mailbox_high_water=max(
                (_high_water(conn.ref) for conn in core.connections.values()), default=0
            ),
        )

    async def read_audit(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit records after the first ``since``, oldest first (queued ones included)."""
        assert self._core.audit_ref is not None
        records = await self._core.audit_ref.ask(ReadAudit(since, limit))
        found: list[dict[str, Any]] = records
        return found

    # -- the event stream ------------------------------------------------------------------

    def events(self, *types: type, capacity: int = DEFAULT_CAPACITY) -> EventStream:
        """Subscribe to the hub's events from now on: ``async for event in hub.events():``.

        The stream ends when the hub closes, and unsubscribes when closed or dropped; prefer
        :meth:`open_events` where its end must be certain.

        Args:
          *types: only events of these record types (and ``Missed``); all of them if none.
          capacity: events it may hold unread; beyond that the newest are dropped and
            counted (``Missed``, ``statistics().missed``).

        Raises:
          ValueError: a bad ``capacity``, or a type that is not an event record.
        """
        return self._core.events.subscribe(types=types or None, capacity=capacity)

    @asynccontextmanager
    async def open_events(
        self, *types: type, capacity: int = DEFAULT_CAPACITY
    ) -> AsyncIterator[EventStream]:
        """:meth:`events`, closed when the block ends: ``async with hub.open_events() as ev:``."""
        stream = self.events(*types, capacity=capacity)
        try:
            yield stream
        finally:
            stream.close()

    # -- listeners -------------------------------------------------------------------------

    def add_listener(self, listener: object, *, capacity: int = LISTENER_CAPACITY) -> None:
        """Call ``listener``'s ``on_*`` hooks for every event from now on (see ``HubListener``).

        Raises:
          ValueError: ``listener`` was already added, or a bad ``capacity``.
        """
        ext = self._ext
        if id(listener) in ext.listeners:
            raise ValueError(f"listener {listener!r} was already added")
        stream = self._core.events.subscribe(capacity=capacity)
        scope = trio.CancelScope(shield=True)  # see run_listener
        ext.listeners[id(listener)] = (listener, scope)
        if ext.nursery is None:
            ext.waiting.append((listener, stream, scope))
        else:
            ext.nursery.start_soon(run_listener, listener, stream, scope)

    def remove_listener(self, listener: object) -> None:
        """Stop calling ``listener`` (what it has not handled yet is dropped); no-op if absent."""
        found = self._ext.listeners.pop(id(listener), None)
        if found is not None:
            found[1].cancel()

    # -- registries ------------------------------------------------------------------------

    def _check_arbiter(self, manifest_type: str, knobs: dict[str, object] | None) -> None:
        """Refuse an auction whose ``arbiter`` knob names no registered arbiter."""
        name = (knobs or {}).get("arbiter")
        if manifest_type == "auction" and isinstance(name, str) and name not in self._core.arbiters:
            known = ", ".join(sorted(self._core.arbiters))
            raise ProtocolError(f"auction: no arbiter registered as {name!r} (known: {known})")

    def register_expectation_evaluator(
        self,
        name: str,
        evaluator: Evaluator,
        *,
        state: SessionState = SessionState.ACTIVE,
        replace: bool = False,
    ) -> None:
        """Evaluate expectations called ``name`` with ``evaluator(expectation, seen)``.

        The evaluator returns who is late (``Late(agent_id, since)``, ``""`` for the
        session); each violator fires once per ``since`` mark. It runs on the expectation
        sweeper's tick, only for sessions in ``state``; one that raises is logged and
        audited (``expectation_unsupported``) and does not stop the sweep.

        Raises:
          ValueError: the name is taken (unless ``replace``), or a bad argument.
        """
        table = self._expectations.evaluators
        name = check_name("evaluator", name, table, replace)
        check_callable("evaluator", name, evaluator)
        if not isinstance(state, SessionState) or state.terminal:
            raise ValueError(f"evaluator {name!r}: state must be PENDING or ACTIVE, got {state!r}")
        table[name] = (evaluator, state)

    def register_violation_handler(
        self, name: str, handler: Handler[Hub], *, replace: bool = False
    ) -> None:
        """Run ``await handler(hub, violation)`` for expectations with ``on_violation=name``.

        A handler that raises is logged, and the violation is tried again at the next tick
        (as when a built-in handler's notice is refused).

        Raises:
          ValueError: the name is taken (unless ``replace``), or ``handler`` is not callable.
        """
        table = self._expectations.handlers
        name = check_name("violation handler", name, table, replace)
        check_callable("violation handler", name, handler)
        table[name] = handler

    def register_auction_arbiter(
        self, name: str, arbiter: Arbiter, *, replace: bool = False
    ) -> None:
        """Let auctions with ``knobs={"arbiter": name}`` have ``arbiter(bids)`` pick their winner.

        ``bids`` are the bid envelopes in WAL order; the arbiter returns the winner's id,
        or ``None`` to leave the choice to the initiator.

        Raises:
          ValueError: the name is taken (unless ``replace``), or ``arbiter`` is not callable.
        """
        table = self._core.arbiters
        name = check_name("arbiter", name, table, replace)
        check_callable("arbiter", name, arbiter)
        table[name] = arbiter

    def register_sweeper(
        self,
        name: str,
        interval: float,
        fn: Callable[..., Awaitable[object]],
        *args: Any,
        replace: bool = False,
    ) -> None:
        """Run ``await fn(*args)`` every ``interval`` seconds while the hub runs.

        Raises:
          ValueError: the name is taken (unless ``replace``, which stops the old one),
            ``interval`` is not a positive number, or ``fn`` is not callable.
          RuntimeError: the hub is not running.
        """
        ext = self._ext
        name = check_name("sweeper", name, ext.sweepers, replace)
        check_callable("sweeper", name, fn)
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not math.isfinite(interval)
            or interval <= 0
        ):
            raise ValueError(
                f"sweeper {name!r}: interval must be a positive number, got {interval!r}"
            )
        if ext.nursery is None:
            raise RuntimeError("the hub is not running")
        old = ext.sweepers.pop(name, None)
        if old is not None:
            old.cancel()
        scope = ext.sweepers[name] = trio.CancelScope()
        ext.nursery.start_soon(self._sweep, name, scope, interval, fn, args)

    def unregister_sweeper(self, name: str) -> None:
        """Stop the sweeper called ``name``; no-op if there is none."""
        scope = self._ext.sweepers.pop(name, None)
        if scope is not None:
            scope.cancel()

    async def _sweep(
        self,
        name: str,
        scope: trio.CancelScope,
        interval: float,
        fn: Callable[..., Awaitable[object]],
        args: tuple[Any, ...],
    ) -> None:
        with scope:
            while True:
                await trio.sleep(interval)
                try:
                    await fn(*args)
                except Exception as exc:
                    log.exception("sweeper %r raised; it runs again in %ss", name, interval)
                    self._core.audit(
                        "sweeper_failed",
                        sweeper=name,
                        exc_type=type(exc).__name__,
                        exc_message=str(exc),
                    )
        if self._ext.sweepers.get(name) is scope:
            del self._ext.sweepers[name]


def _high_water(ref: ActorRef[Any, Any] | None) -> int:
    return ref.mailbox.statistics().high_water if ref is not None else 0
