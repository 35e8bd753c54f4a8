"""RemoteHub: the hub's API over a WebSocket connection, as RPC with request correlation.

Every request carries a fresh ``request_id`` and waits for the response that echoes it, so
any number of calls can be in flight on one connection. When the connection drops, calls in
flight fail with :class:`ConnectionLost`; calls that are safe to repeat (reads, and posts,
which get an idempotency key here when they have none) wait for the reconnect and go again.
"""

from __future__ import annotations

import itertools
import os
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
    NotOwner,
    ProtocolError,
    StoreError,
)
from ..api import NamesFor, PostEnvelope, Request
from ..model import (
    ChunkFrame,
    ErrorFrame,
    Frame,
    HelloFrame,
    InvalidFrame,
    Passport,
    RequestFrame,
    ResponseFrame,
    SessionMetadata,
    StreamChunk,
    WelcomeFrame,
    check_envelope,
    check_record,
    structure,
    unstructure,
)
from ..transport import WsLinkClient

R = TypeVar("R")

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


def error_from(code: str, message: str, details: dict[str, Any] | None = None) -> Exception:
    """The exception an error code stands for (``NetworkError`` for codes it does not know);
    ``details`` are what the code carries besides its message (``not_owner``'s owner)."""
    if code == NotOwner.code:
        return _not_owner(message, details or {})
    if code == "store_error":
        return StoreError(message)
    if code == "bad_frame":
        return DecodeError(message, record="frame")
    return _ERRORS.get(code, NetworkError)(message)


def _not_owner(message: str, details: dict[str, Any]) -> NotOwner:
    """``not_owner``'s fields, each kept only when of its type (a hub's word, not trusted)."""

    def field(name: str, kind: type[Any]) -> Any:
        value = details.get(name)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    return NotOwner(
        message,
        shard=field("shard", int) if field("shard", int) is not None else -1,
        owner=field("owner", str),
        epoch=field("epoch", int) or 0,
        address=field("address", str),
    )


class _Slot:
    """Where one answer lands, and the task waiting for it is woken.

    Not a ``trio.Event``: its parking lot cost ~0.5 us of every call, and only one task (the
    caller) ever waits on a slot.
    """

    __slots__ = ("answer", "task")

    def __init__(self) -> None:
        self.answer: Frame | ConnectionLost | None = None
        self.task: trio.lowlevel.Task | None = None

    def set(self, answer: Frame | ConnectionLost) -> None:
        if self.answer is None:
            self.answer = answer
            task, self.task = self.task, None
            if task is not None:
                trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        """Return once an answer is set (at once, after a checkpoint, if it is)."""
        if self.answer is not None:
            await trio.lowlevel.checkpoint()
            return
        self.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class _RandomKeys:
    """Keys of 128 random bits, as 32 hex digits (as a uuid4's), drawn 256 at a time:
    0.15 µs a key, where ``os.urandom(16).hex()`` takes 0.35 µs and ``uuid4().hex`` 1.6."""

    def __init__(self) -> None:
        self._pool = ""
        self._at = 0

    def __call__(self) -> str:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(16 * 256).hex(), 0
        key = self._pool[self._at : self._at + 32]
        self._at += 32
        return key


class RemoteHub:
    """The hub over RPC: :meth:`call` sends any ``troupe.api`` request (a ``HubApi``)."""

    def __init__(self) -> None:
        self._conn: WsLinkClient | None = None
        self._connected = trio.Event()
        self._pending: dict[str, _Slot] = {}
        #: Request ids: unique on this client for its life (the hub only echoes them), and
        #: a counter costs nothing where ``uuid4().hex`` cost ~4 µs a call.
        self._request_ids = itertools.count(1)
        #: Idempotency keys for posts that have none: 128 random bits each (see
        #: :class:`_RandomKeys`). Not a prefix and a counter: keys travel to every
        #: recipient, and a participant who could tell this client's next key could post
        #: under it first, and this client's post would be taken for a repeat.
        self._keys = _RandomKeys()
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
            if not early and not self._connected.is_set():
                # (Connected, the send is the call's first checkpoint: waiting on a set
                # event would cost a scheduler round per call.)
                await self._connected.wait()
            if self.closed_because is not None:
                raise ConnectionLost(f"no connection to the hub: {self.closed_because}")
            conn = self._conn
            if conn is None:
                if early:
                    raise ConnectionLost("no connection to the hub")
                # The connection dropped since the wait returned; wait for the next one.
                await trio.lowlevel.checkpoint()
                continue
            request_id = str(next(self._request_ids))
            slot = self._pending[request_id] = _Slot()
            try:
                await conn.send_frame(make(request_id))
                await slot.wait()
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

    async def call(self, request: Request[R]) -> R:
        """Send ``request`` to the hub; return its answer as the request's result type.

        A request that is safe to repeat (``request.repeatable()``) goes again after a
        reconnect; a post gets an idempotency key here when it has none, which makes it so.

        Raises:
          DecodeError: a field does not fit its type, or is not JSON data (JSON would turn
            a NaN into null on the way, which the hub refuses in process).
          NetworkError: what the hub answered with (the subclass its code stands for).
        """
        if isinstance(request, PostEnvelope):
            envelope = request.envelope
            if envelope.idempotency_key is None:
                # Makes the post safe to repeat after a reconnect: exactly once in the WAL.
                key = self._keys()
                envelope = attrs.evolve(envelope, idempotency_key=key)
                request = PostEnvelope(envelope=envelope)  # type: ignore[assignment]
            # The hub's own check, here too: JSON would turn a NaN into null on the way.
            check_envelope(envelope)
        else:
            request = check_record(request, None)  # the frame limit bounds it on the way
        params = unstructure(request)
        tracer = _tracing.ACTIVE
        if tracer is None:
            data = await self._call(request.op, request.repeatable(), "", params)
        else:
            with tracer.rpc_client(request.op) as traceparent:
                data = await self._call(request.op, request.repeatable(), traceparent, params)
        kind = request.result_type
        result: R = None if kind is type(None) else structure(data, kind)  # type: ignore[assignment]
        self._learn(result)
        return result

    def _learn(self, result: object) -> None:
        """Keep the names and sessions an answer tells (for ``name_for``, ``cached_session``)."""
        items = result if isinstance(result, list) else (result,)
        for item in items:
            if isinstance(item, Passport):
                self._names[item.agent_id or ""] = item.name
            elif isinstance(item, SessionMetadata):
                self._sessions[item.session_id] = item
            else:
                return

    async def _call(self, op: str, retry: bool, traceparent: str, params: dict[str, Any]) -> Any:
        answer = await self._exchange(
            lambda rid: RequestFrame(request_id=rid, op=op, params=params, traceparent=traceparent),
            retry=retry,
        )
        if not isinstance(answer, ResponseFrame):
            raise NetworkError(f"unexpected answer to {op!r}: {type(answer).__name__}")
        if not answer.ok:
            raise error_from(answer.error_code, answer.error_message, answer.error_details)
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
            raise error_from(answer.code, answer.message, answer.details)
        if not isinstance(answer, WelcomeFrame):
            raise NetworkError(f"unexpected answer to hello: {type(answer).__name__}")
        return answer

    # -- what is kept here ------------------------------------------------------------------

    def name_for(self, agent_id: str) -> str:
        return self._names.get(agent_id, agent_id)

    async def learn_names(self, agent_ids: Sequence[str]) -> None:
        """Fetch the names of ids not seen yet (``name_for`` is synchronous)."""
        missing = sorted({a for a in agent_ids if a not in self._names})
        if missing:
            names = await self.call(NamesFor(agent_ids=tuple(missing)))
            self._names.update(names)

    def cached_session(self, session_id: str) -> SessionMetadata | None:
        return self._sessions.get(session_id)

    def remember_session(self, metadata: SessionMetadata) -> None:
        """Keep ``metadata`` (a delivery brought it) for ``cached_session``."""
        self._sessions[metadata.session_id] = metadata

    async def stream_chunk(self, chunk: StreamChunk) -> None:
        """Send a chunk, unanswered; dropped when there is no connection (best effort)."""
        conn = self._conn
        if conn is None or not self._connected.is_set() or self.closed_because is not None:
            await trio.lowlevel.checkpoint()
            return
        await conn.send_frame(ChunkFrame(chunk=chunk))
