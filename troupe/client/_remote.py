"""RemoteHub: the hub's API over a WebSocket connection, as RPC with request correlation.

Every request carries a fresh ``request_id`` and waits for the response that echoes it, so
any number of calls can be in flight on one connection. When the connection drops, calls in
flight fail with :class:`ConnectionLost`; calls that are safe to repeat (reads, and posts,
which get an idempotency key here when they have none) wait for the reconnect and go again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import attrs
import trio

from .. import _tracing
from .._errors import (
    AccessDeniedError,
    AuthError,
    ConnectionLost,
    DecodeError,
    IdentityInUse,
    InboxFull,
    NetworkError,
    NotFoundError,
    ProtocolError,
    StoreError,
)
from ..hub import Accepted, PendingTurn
from ..model import (
    ChunkFrame,
    Envelope,
    ErrorFrame,
    Frame,
    HelloFrame,
    InvalidFrame,
    Passport,
    RequestFrame,
    ResponseFrame,
    Resume,
    Rule,
    SessionMetadata,
    StreamChunk,
    TaskMetadata,
    TaskState,
    WelcomeFrame,
    check_envelope,
    check_json,
    structure,
    unstructure,
)
from ..transport import WsLinkClient

T = TypeVar("T")

_ERRORS: dict[str, type[NetworkError]] = {
    cls.code: cls
    for cls in (
        NotFoundError,
        AccessDeniedError,
        InboxFull,
        ProtocolError,
        AuthError,
        DecodeError,
        IdentityInUse,
    )
}


def error_from(code: str, message: str) -> Exception:
    """The exception an error code stands for (``NetworkError`` for codes it does not know)."""
    if code == "store_error":
        return StoreError(message)
    if code == "bad_frame":
        return DecodeError(message, record="frame")
    return _ERRORS.get(code, NetworkError)(message)


class _Slot:
    """Where one answer lands."""

    __slots__ = ("answer", "event")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.answer: Frame | ConnectionLost | None = None

    def set(self, answer: Frame | ConnectionLost) -> None:
        if self.answer is None:
            self.answer = answer
            self.event.set()


class RemoteHub:
    """The subset of :class:`~troupe.hub.Hub` a ``HubClient`` uses, over RPC."""

    def __init__(self) -> None:
        self._conn: WsLinkClient | None = None
        self._connected = trio.Event()
        self._pending: dict[str, _Slot] = {}
        self._names: dict[str, str] = {}
        self._sessions: dict[str, SessionMetadata] = {}
        self.closed_because: str | None = None

    # -- the connection ----------------------------------------------------------------------

    def attach(self, conn: WsLinkClient) -> None:
        """Use ``conn``: answers arrive, hellos may go (``early=True``); calls wait for
        :meth:`ready`."""
        self._conn = conn

    def ready(self, conn: WsLinkClient) -> None:
        """Let calls go on ``conn`` (if it is still the current connection)."""
        if self._conn is conn:
            self._connected.set()

    def detach(self, why: str) -> None:
        """The connection is gone: fail what is in flight, hold new calls until reattached."""
        self._conn = None
        if self._connected.is_set() and self.closed_because is None:
            self._connected = trio.Event()
        pending, self._pending = self._pending, {}
        for slot in pending.values():
            slot.set(ConnectionLost(f"connection to the hub lost: {why}"))

    def fail(self, why: str) -> None:
        """No reconnect is coming: every call, now and later, fails."""
        self.closed_because = why
        self.detach(why)
        self._connected.set()

    def answer(self, frame: ResponseFrame | WelcomeFrame | ErrorFrame | InvalidFrame) -> None:
        slot = self._pending.get(frame.request_id)
        if slot is not None:
            slot.set(frame)

    async def _exchange(self, make: Any, *, retry: bool, early: bool = False) -> Frame:
        while True:
            if not early:
                await self._connected.wait()
            if self.closed_because is not None:
                raise ConnectionLost(f"no connection to the hub: {self.closed_because}")
            conn = self._conn
            if conn is None:
                if early:
                    raise ConnectionLost("no connection to the hub")
                # The connection dropped since the wait returned; wait for the next one.
                continue
            request_id = uuid.uuid4().hex
            slot = self._pending[request_id] = _Slot()
            try:
                await conn.send_frame(make(request_id))
                await slot.event.wait()
            finally:
                self._pending.pop(request_id, None)
            answer = slot.answer
            if isinstance(answer, ConnectionLost):
                if retry and self.closed_because is None:
                    continue
                raise answer
            assert answer is not None
            if isinstance(answer, InvalidFrame):
                raise DecodeError(
                    f"the hub's answer could not be decoded: {answer.reason}", record="frame"
                )
            return answer

    async def call(self, op: str, retry: bool = True, **params: Any) -> Any:
        """Run ``op`` on the hub; raise the error it answered with.

        Raises:
          DecodeError: a parameter is not JSON data (JSON would turn a NaN into null on the
            way, which the hub refuses in process).
        """
        if op != "post_envelope":  # checked as a whole by post()
            check_json(params, "", record=op)
        tracer = _tracing.ACTIVE
        if tracer is None:
            return await self._call(op, retry, "", params)
        with tracer.rpc_client(op) as traceparent:
            return await self._call(op, retry, traceparent, params)

    async def _call(self, op: str, retry: bool, traceparent: str, params: dict[str, Any]) -> Any:
        answer = await self._exchange(
            lambda rid: RequestFrame(request_id=rid, op=op, params=params, traceparent=traceparent),
            retry=retry,
        )
        if not isinstance(answer, ResponseFrame):
            raise NetworkError(f"unexpected answer to {op!r}: {type(answer).__name__}")
        if not answer.ok:
            raise error_from(answer.error_code, answer.error_message)
        return answer.result

    async def hello(
        self,
        name: str,
        scheme: str,
        claim: dict[str, Any],
        since: dict[str, int] | None,
        *,
        early: bool = False,
    ) -> WelcomeFrame:
        """Bind this connection to identity ``name`` (auth first); replay follows the welcome.

        ``early``: go before the connection is :meth:`ready` (the re-binding after a
        reconnect), and fail at once if there is none.
        """
        answer = await self._exchange(
            lambda rid: HelloFrame(
                name=name, auth_scheme=scheme, auth_claim=claim, since=since, request_id=rid
            ),
            retry=False,
            early=early,
        )
        if isinstance(answer, ErrorFrame):
            raise error_from(answer.code, answer.message)
        if not isinstance(answer, WelcomeFrame):
            raise NetworkError(f"unexpected answer to hello: {type(answer).__name__}")
        return answer

    # -- identities --------------------------------------------------------------------------

    async def register(
        self,
        passport: Passport,
        resume: Resume | None = None,
        *,
        skill_md: str | None = None,
        rule: Rule | None = None,
    ) -> Passport:
        data = await self.call(
            "register",
            retry=False,
            passport=unstructure(passport),
            resume=unstructure(resume or Resume()),
            skill_md=skill_md,
            rule=unstructure(rule) if rule is not None else None,
        )
        stamped = structure(data, Passport)
        self._names[stamped.agent_id or ""] = stamped.name
        return stamped

    async def unregister(self, agent_id: str) -> None:
        await self.call("unregister", retry=False, agent_id=agent_id)

    async def find_agent(self, name: str) -> str | None:
        found: str | None = await self.call("find_agent_id", name=name)
        return found

    async def get_agent(self, name_or_id: str) -> Passport:
        passport = structure(await self.call("get_agent", name_or_id=name_or_id), Passport)
        self._names[passport.agent_id or ""] = passport.name
        return passport

    async def get_resume(self, agent_id: str) -> Resume:
        return structure(await self.call("get_resume", agent_id=agent_id), Resume)

    async def get_skill(self, agent_id: str) -> str | None:
        skill: str | None = await self.call("get_skill", agent_id=agent_id)
        return skill

    async def get_rule(self, agent_id: str) -> Rule:
        return structure(await self.call("get_rule", agent_id=agent_id), Rule)

    async def list_agents(
        self,
        *,
        capability: str | None = None,
        query: str | None = None,
        kind: str | None = None,
        sort_by: str | None = None,
        limit: int = 50,
    ) -> list[Passport]:
        data = await self.call(
            "list_agents",
            capability=capability,
            query=query,
            kind=kind,
            sort_by=sort_by,
            limit=limit,
        )
        found = structure(data, list[Passport])
        self._names.update({p.agent_id or "": p.name for p in found})
        return found

    async def set_resume(self, agent_id: str, resume: Resume) -> None:
        await self.call("set_resume", agent_id=agent_id, resume=unstructure(resume))

    async def set_skill(self, agent_id: str, skill_md: str | None) -> None:
        await self.call("set_skill", agent_id=agent_id, skill_md=skill_md)

    async def set_rule(self, agent_id: str, rule: Rule) -> None:
        await self.call("set_rule", agent_id=agent_id, rule=unstructure(rule))

    def name_for(self, agent_id: str) -> str:
        return self._names.get(agent_id, agent_id)

    async def learn_names(self, agent_ids: Sequence[str]) -> None:
        """Fetch the names of ids not seen yet (``name_for`` is synchronous)."""
        missing = sorted({a for a in agent_ids if a not in self._names})
        if missing:
            self._names.update(await self.call("names_for", agent_ids=missing))

    # -- sessions ----------------------------------------------------------------------------

    def _remember(self, data: Any) -> SessionMetadata:
        md = structure(data, SessionMetadata)
        self._sessions[md.session_id] = md
        return md

    def cached_session(self, session_id: str) -> SessionMetadata | None:
        return self._sessions.get(session_id)

    async def create_session(self, **kwargs: Any) -> SessionMetadata:
        kwargs["participants"] = list(kwargs["participants"])
        return self._remember(await self.call("create_session", retry=False, **kwargs))

    async def get_session(self, session_id: str) -> SessionMetadata:
        return self._remember(await self.call("get_session", session_id=session_id))

    async def list_sessions(
        self,
        *,
        agent_id: str | None = None,
        include_terminal: bool = False,
        limit: int = 50,
    ) -> list[SessionMetadata]:
        data = await self.call(
            "list_sessions", agent_id=agent_id, include_terminal=include_terminal, limit=limit
        )
        return [self._remember(item) for item in data]

    async def close_session(self, session_id: str, *, reason: str = "") -> SessionMetadata:
        return self._remember(
            await self.call("close_session", session_id=session_id, reason=reason)
        )

    async def post(self, envelope: Envelope) -> Accepted:
        if envelope.idempotency_key is None:
            # Makes the post safe to repeat after a reconnect: exactly once in the WAL.
            envelope = attrs.evolve(envelope, idempotency_key=uuid.uuid4().hex)
        # The hub's own check, here too: JSON would turn a NaN into null on the way.
        check_envelope(envelope)
        data = await self.call("post_envelope", envelope=unstructure(envelope))
        return Accepted(data["envelope_id"], data["seq"], duplicate=data["duplicate"])

    async def post_envelope(self, envelope: Envelope) -> str:
        return (await self.post(envelope)).envelope_id

    async def stream_chunk(self, chunk: StreamChunk) -> None:
        """Send a chunk, unanswered; dropped when there is no connection (best effort)."""
        conn = self._conn
        if conn is None or not self._connected.is_set() or self.closed_because is not None:
            await trio.lowlevel.checkpoint()
            return
        await conn.send_frame(ChunkFrame(chunk=chunk))

    async def read_wal(
        self, session_id: str, *, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        """The whole range, read page by page (the hub answers a bounded page at a time)."""
        found: list[Envelope] = []
        while True:
            data = await self.call("read_wal", session_id=session_id, since=since, until=until)
            page = structure(data["envelopes"], list[Envelope])
            found.extend(page)
            if not data["more"] or not page:
                return found
            since = page[-1].seq

    async def acan_send(
        self, session_id: str, sender_id: str, *, event_type: str | None = None
    ) -> bool:
        answer: bool = await self.call(
            "can_send", session_id=session_id, sender_id=sender_id, event_type=event_type
        )
        return answer

    async def find_envelope_by_causation(
        self, session_id: str, *, sender_id: str, causation_id: str
    ) -> Envelope | None:
        data = await self.call(
            "find_envelope_by_causation",
            session_id=session_id,
            sender_id=sender_id,
            causation_id=causation_id,
        )
        return structure(data, Envelope) if data is not None else None

    async def pending_turns_for(
        self, agent_id: str, *, session_id: str | None = None
    ) -> list[PendingTurn]:
        data = await self.call("pending_turns_for", agent_id=agent_id, session_id=session_id)
        return structure(data, list[PendingTurn])

    async def report_turn_failure(
        self, *, session_id: str, agent_id: str, envelope_id: str, exc: BaseException
    ) -> None:
        await self.call(
            "report_turn_failure",
            session_id=session_id,
            agent_id=agent_id,
            envelope_id=envelope_id,
            exc_type=type(exc).__name__,
            exc_message=str(exc),
        )

    # -- tasks -------------------------------------------------------------------------------

    async def observe_task(self, metadata: TaskMetadata) -> None:
        await self.call("observe_task", retry=False, task=unstructure(metadata))

    async def update_task(
        self,
        task_id: str,
        *,
        state: TaskState | None = None,
        progress: dict[str, object] | None = None,
        result: object | None = None,
        error: str | None = None,
    ) -> None:
        await self.call(
            "update_task",
            task_id=task_id,
            state=state.value if state is not None else None,
            progress=progress,
            result=result,
            error=error,
        )

    async def get_task(self, task_id: str) -> TaskMetadata:
        return structure(await self.call("get_task", task_id=task_id), TaskMetadata)

    async def list_tasks(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        state: TaskState | None = None,
        limit: int = 50,
    ) -> list[TaskMetadata]:
        data = await self.call(
            "list_tasks",
            agent_id=agent_id,
            session_id=session_id,
            state=state.value if state is not None else None,
            limit=limit,
        )
        return structure(data, list[TaskMetadata])

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
            "record_observation",
            # Without a task id the hub cannot tell a repeat from a new observation.
            retry=task_id is not None,
            owner_id=owner_id,
            capability=capability,
            outcome=outcome.value,
            latency_ms=latency_ms,
            task_id=task_id,
        )

    async def checkpoint_task(self, task_id: str, state: dict[str, Any]) -> None:
        await self.call("checkpoint_task", task_id=task_id, state=state)

    async def read_task_checkpoint(self, task_id: str) -> dict[str, Any] | None:
        data: dict[str, Any] | None = await self.call("read_task_checkpoint", task_id=task_id)
        return data
