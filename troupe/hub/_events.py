"""The hub's event stream: frozen records of what happens in a hub, for whoever subscribes.

Rules:

- The events are the audit log's facts (``HubCore.audit`` hands each record here too), plus
  two the audit log does not keep: every envelope appended to a WAL (``EnvelopeAccepted``,
  published by the session actor that appended it) and every refused post
  (``EnvelopeRejected``, published by ``Hub.post``). The kinds with a record of their own
  are below; every other audit kind arrives as ``Audited(kind, data)``.
- Publishing reads one attribute when nobody subscribes: records are built only for a
  subscriber, once per event whatever the number of subscribers.
- Each subscriber has its own bounded buffer (``capacity``, default ``DEFAULT_CAPACITY``).
  A full buffer drops the newest events, never slows the hub and never blocks the
  publisher; the subscriber then reads ``Missed(count)`` at the place of the gap, and
  ``statistics().missed`` counts every event it lost.
- A stream ends (``trio.EndOfChannel``; an ``async for`` stops) when the hub closes, once
  its buffer is drained. Closing the stream (its ``async with``, or ``aclose()``)
  unsubscribes it; so does dropping a stream nobody holds any more.
- ``types`` keeps only events of those record types (``Missed`` always comes through).
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Final, Self, TypeAlias

import attrs
import trio

from .._errors import NetworkError, NotOwner, StoreError
from ..model import Envelope

log = logging.getLogger("troupe.hub.events")


@attrs.frozen(kw_only=True)
class ExpectationViolation:
    """One expectation that fired in one session, as ``check_expectations`` reports it."""

    session_id: str
    expectation: str
    on_violation: str
    violators: tuple[str, ...]
    detail: dict[str, Any]


#: Events one subscriber may hold unread before the newest are dropped.
DEFAULT_CAPACITY: Final = 1024
#: The longest error message an ``EnvelopeRejected`` keeps (as the audit log's errors).
REJECTED_MESSAGE_CHARS: Final = 500


@attrs.frozen(kw_only=True)
class AgentRegistered:
    """An identity was registered (``at``: the hub clock, in seconds)."""

    at: float
    agent_id: str
    name: str


@attrs.frozen(kw_only=True)
class AgentUnregistered:
    """An identity was unregistered."""

    at: float
    agent_id: str
    name: str


@attrs.frozen(kw_only=True)
class SessionCreated:
    """A session was created (PENDING; its invites go out next)."""

    at: float
    session_id: str
    manifest_type: str
    manifest_version: int
    creator_id: str
    participants: tuple[str, ...]


@attrs.frozen(kw_only=True)
class SessionOpened:
    """A session became ACTIVE (its invitees acked)."""

    at: float
    session_id: str


@attrs.frozen(kw_only=True)
class SessionClosed:
    """A session ended: ``state`` is ``"closed"`` or ``"expired"``, ``reason`` says why."""

    at: float
    session_id: str
    state: str
    reason: str


@attrs.frozen(kw_only=True)
class EnvelopeAccepted:
    """An envelope was durably appended to its session's WAL (the hub's notices too).

    The envelope is the stamped one, shared, not copied (records are immutable).
    """

    at: float
    envelope: Envelope

    @property
    def session_id(self) -> str:
        return self.envelope.session_id

    @property
    def seq(self) -> int:
        seq = self.envelope.seq
        assert seq is not None
        return seq

    @property
    def sender_id(self) -> str:
        return self.envelope.sender_id

    @property
    def event_type(self) -> str:
        return self.envelope.event_type


@attrs.frozen(kw_only=True)
class EnvelopeRejected:
    """A post was refused (nothing was appended): who sent which event type to which
    session, and the error's ``code`` and ``message`` (at most ``REJECTED_MESSAGE_CHARS``).
    The envelope's data is not kept."""

    at: float
    session_id: str
    sender_id: str
    event_type: str
    code: str
    message: str


@attrs.frozen(kw_only=True)
class DispatchFailed:
    """An envelope of the WAL could not be delivered to ``recipient_id`` (its connection
    cannot carry it): it was skipped, as a dead letter."""

    at: float
    session_id: str
    seq: int
    recipient_id: str
    reason: str


@attrs.frozen(kw_only=True)
class SessionActorCrashed:
    """A session's actor crashed; ``restarting`` is False when the hub gave up on it (the
    session is then closed with reason ``crashed``)."""

    at: float
    session_id: str
    exc_type: str
    exc_message: str
    restarting: bool


@attrs.frozen(kw_only=True)
class SessionActorRestarted:
    """A session's actor was restarted after a crash and recovered up to ``last_seq``."""

    at: float
    session_id: str
    last_seq: int


@attrs.frozen(kw_only=True)
class TaskChanged:
    """A task was first observed (``change="observed"``), changed state (``"moved"``) or
    ended (``"terminated"``); ``state`` is its state now, ``previous`` the one before."""

    at: float
    task_id: str
    owner_id: str
    change: str
    state: str
    previous: str | None = None
    session_id: str | None = None
    capability: str | None = None
    reason: str | None = None


@attrs.frozen(kw_only=True)
class ExpectationViolated:
    """A timed expectation fired (its handler has run)."""

    at: float
    violation: ExpectationViolation


@attrs.frozen(kw_only=True)
class TurnFailed:
    """An agent reported that its turn raised (``report_turn_failure``)."""

    at: float
    session_id: str
    agent_id: str
    envelope_id: str
    exc_type: str
    exc_message: str


@attrs.frozen(kw_only=True)
class Audited:
    """Any other audit record (``kind`` and its fields): ``resume_set``, ``invite_acked``,
    ``poison_envelope``, ``inbox_pressure``, ``sweeper_failed``, ... ."""

    at: float
    kind: str
    data: Mapping[str, Any]


@attrs.frozen
class Missed:
    """The subscriber was too slow: ``count`` events were dropped here."""

    count: int


HubEvent: TypeAlias = (
    AgentRegistered
    | AgentUnregistered
    | SessionCreated
    | SessionOpened
    | SessionClosed
    | EnvelopeAccepted
    | EnvelopeRejected
    | DispatchFailed
    | SessionActorCrashed
    | SessionActorRestarted
    | TaskChanged
    | ExpectationViolated
    | TurnFailed
    | Audited
    | Missed
)


@attrs.frozen(kw_only=True)
class EventStreamStatistics:
    """One subscriber's buffer: ``buffered`` unread events (of ``capacity``), ``missed``
    events dropped since it subscribed, ``closed`` once it will yield nothing new."""

    buffered: int
    capacity: int
    missed: int
    closed: bool


def _text(value: object) -> str:
    """A field of a refused envelope, which may be of the wrong type (that may be why)."""
    return value if isinstance(value, str) else f"<{type(value).__name__}>"


def _code(exc: Exception) -> str:
    """The code ``exc`` travels under on the wire (as ``troupe.hub._rpc.error_code``)."""
    if isinstance(exc, NetworkError | NotOwner):
        return exc.code
    return "store_error" if isinstance(exc, StoreError) else "error"


# -- from audit records ----------------------------------------------------------------------


def _violation(at: float, f: dict[str, Any]) -> ExpectationViolated:
    return ExpectationViolated(
        at=at,
        violation=ExpectationViolation(
            session_id=f["session_id"],
            expectation=f["expectation"],
            on_violation=f["on_violation"],
            violators=tuple(f["violators"]),
            detail=f["detail"],
        ),
    )


def _task(change: str) -> Callable[[float, dict[str, Any]], TaskChanged]:
    def make(at: float, f: dict[str, Any]) -> TaskChanged:
        return TaskChanged(
            at=at,
            task_id=f["task_id"],
            owner_id=f["owner_id"],
            change=change,
            state=f.get("state") or f.get("to") or f["outcome"],
            previous=f.get("from"),
            session_id=f.get("session_id"),
            capability=f.get("capability"),
            reason=f.get("reason"),
        )

    return make


def _closed(state: str) -> Callable[[float, dict[str, Any]], SessionClosed]:
    return lambda at, f: SessionClosed(
        at=at, session_id=f["session_id"], state=state, reason=f["reason"]
    )


#: audit kind -> its event record, from the audit record's fields (picked by name: a field
#: added to an audit record later does not break its event).
_FROM_AUDIT: Final[dict[str, Callable[[float, dict[str, Any]], HubEvent]]] = {
    "agent_registered": lambda at, f: AgentRegistered(
        at=at, agent_id=f["agent_id"], name=f["name"]
    ),
    "agent_unregistered": lambda at, f: AgentUnregistered(
        at=at, agent_id=f["agent_id"], name=f["name"]
    ),
    "session_created": lambda at, f: SessionCreated(
        at=at,
        session_id=f["session_id"],
        manifest_type=f["manifest_type"],
        manifest_version=f["manifest_version"],
        creator_id=f["creator_id"],
        participants=tuple(f["participants"]),
    ),
    "session_opened": lambda at, f: SessionOpened(at=at, session_id=f["session_id"]),
    "session_closed": _closed("closed"),
    "session_expired": _closed("expired"),
    "session_actor_crashed": lambda at, f: SessionActorCrashed(
        at=at,
        session_id=f["session_id"],
        exc_type=f["exc_type"],
        exc_message=f["exc_message"],
        restarting=f["restarting"],
    ),
    "session_actor_restarted": lambda at, f: SessionActorRestarted(
        at=at, session_id=f["session_id"], last_seq=f["last_seq"]
    ),
    "task_observed": _task("observed"),
    "task_state_changed": _task("moved"),
    "task_terminated": _task("terminated"),
    "expectation_violated": _violation,
    "delivery_failed": lambda at, f: DispatchFailed(
        at=at,
        session_id=f["session_id"],
        seq=f["seq"],
        recipient_id=f["agent_id"],
        reason=f["error"],
    ),
    "turn_failed": lambda at, f: TurnFailed(
        at=at,
        session_id=f["session_id"],
        agent_id=f["agent_id"],
        envelope_id=f["envelope_id"],
        exc_type=f["exc_type"],
        exc_message=f["exc_message"],
    ),
}


# -- subscribers -----------------------------------------------------------------------------


class _Gap:
    """Where a subscriber's buffer overflowed, and how many events it lost there."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 1


class _Sink:
    """One subscriber's buffer, as the publisher sees it."""

    __slots__ = ("capacity", "closed", "lot", "missed", "queue", "size", "types")

    def __init__(self, capacity: int, types: frozenset[type] | None) -> None:
        self.capacity = capacity
        self.types = types
        self.queue: deque[HubEvent | _Gap] = deque()
        self.size = 0  # events in ``queue`` (gaps not counted)
        self.missed = 0
        self.closed = False
        self.lot = trio.lowlevel.ParkingLot()

    def push(self, event: HubEvent) -> None:
        if self.types is not None and type(event) not in self.types:
            return
        queue = self.queue
        if self.size < self.capacity:
            queue.append(event)
            self.size += 1
        else:
            self.missed += 1
            tail = queue[-1] if queue else None
            if isinstance(tail, _Gap):
                tail.count += 1
            else:
                queue.append(_Gap())
        if self.lot:
            self.lot.unpark()

    def end(self) -> None:
        self.closed = True
        self.lot.unpark_all()


class EventStream:
    """A subscription to a hub's events (see the module docstring).

    Read it with ``async for event in stream`` or ``await stream.receive()``; leave it with
    ``async with`` or ``aclose()``.
    """

    def __init__(self, bus: EventBus, sink: _Sink) -> None:
        self._sink = sink
        self._own_close = False
        self._detach = weakref.finalize(self, bus.unsubscribe, sink)

    def receive_nowait(self) -> HubEvent:
        """The next event, without waiting.

        Raises:
          trio.WouldBlock: nothing is buffered.
          trio.EndOfChannel: the hub closed and everything buffered was read.
          trio.ClosedResourceError: this stream was closed.
        """
        if self._own_close:
            raise trio.ClosedResourceError("this event stream was closed")
        sink = self._sink
        if not sink.queue:
            if sink.closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        item = sink.queue.popleft()
        if isinstance(item, _Gap):
            return Missed(item.count)
        sink.size -= 1
        return item

    async def receive(self) -> HubEvent:
        """The next event, waiting for one (see :meth:`receive_nowait` for the errors)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        sink = self._sink
        while True:
            # Asked before taking, so that a waiting subscriber holds no WouldBlock (and its
            # traceback) while it is parked.
            if sink.queue or sink.closed or self._own_close:
                event = self.receive_nowait()  # (or EndOfChannel, ClosedResourceError)
                await trio.lowlevel.cancel_shielded_checkpoint()
                return event
            await sink.lot.park()

    def statistics(self) -> EventStreamStatistics:
        sink = self._sink
        return EventStreamStatistics(
            buffered=sink.size,
            capacity=sink.capacity,
            missed=sink.missed,
            closed=sink.closed or self._own_close,
        )

    def close(self) -> None:
        """Unsubscribe; what is buffered is dropped (idempotent)."""
        self._own_close = True
        sink = self._sink
        sink.queue.clear()
        sink.size = 0
        sink.lot.unpark_all()
        self._detach()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> HubEvent:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class EventBus:
    """The publishing side of a hub's events (one per hub, on ``HubCore.events``)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        #: Replaced, never mutated: a publish iterates it while nothing can change it.
        self.subscribers: tuple[_Sink, ...] = ()
        self.closed = False

    def subscribe(
        self, *, types: Iterable[type] | None = None, capacity: int = DEFAULT_CAPACITY
    ) -> EventStream:
        """A new stream that receives every event published from now on.

        Raises:
          ValueError: ``capacity`` is not a positive int, or ``types`` names a class that is
            not an event record.
        """
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        kept = None
        if types is not None:
            kept = frozenset(types)
            unknown = sorted(
                t.__name__ if isinstance(t, type) else repr(t) for t in kept - EVENT_TYPES
            )
            if unknown:
                raise ValueError(f"not event types: {', '.join(unknown)}")
            kept |= {Missed}
        sink = _Sink(capacity, kept)
        if self.closed:
            sink.end()
        else:
            self.subscribers = (*self.subscribers, sink)
        return EventStream(self, sink)

    def unsubscribe(self, sink: _Sink) -> None:
        self.subscribers = tuple(s for s in self.subscribers if s is not sink)

    def publish(self, event: HubEvent) -> None:
        for sink in self.subscribers:
            sink.push(event)

    def audited(self, kind: str, fields: dict[str, Any]) -> None:
        """Publish the event of an audit record (``HubCore.audit`` calls this)."""
        at = self._now()
        make = _FROM_AUDIT.get(kind)
        event: HubEvent | None = None
        if make is not None:
            try:
                event = make(at, fields)
            except (KeyError, TypeError) as exc:
                # A record whose fields changed: still published, as a plain one.
                log.warning("events: audit record %s did not fit its event: %r", kind, exc)
        if event is None:
            event = Audited(at=at, kind=kind, data=MappingProxyType(fields))
        self.publish(event)

    def accepted(self, envelope: Envelope) -> None:
        """Publish ``EnvelopeAccepted`` (the session actor calls this after an append)."""
        self.publish(EnvelopeAccepted(at=self._now(), envelope=envelope))

    def rejected(self, envelope: Envelope, exc: Exception) -> None:
        """Publish ``EnvelopeRejected`` for a refused post (nothing when nobody subscribes)."""
        if not self.subscribers:
            return
        self.publish(
            EnvelopeRejected(
                at=self._now(),
                session_id=_text(envelope.session_id),
                sender_id=_text(envelope.sender_id),
                event_type=_text(envelope.event_type),
                code=_code(exc),
                message=str(exc)[:REJECTED_MESSAGE_CHARS],
            )
        )

    def close(self) -> None:
        """End every stream (the hub is closing); subscribing afterwards gets an ended one."""
        self.closed = True
        subscribers, self.subscribers = self.subscribers, ()
        for sink in subscribers:
            sink.end()


#: Every record type a stream may yield.
EVENT_TYPES: Final[frozenset[type]] = frozenset(
    {
        AgentRegistered,
        AgentUnregistered,
        SessionCreated,
        SessionOpened,
        SessionClosed,
        EnvelopeAccepted,
        EnvelopeRejected,
        DispatchFailed,
        SessionActorCrashed,
        SessionActorRestarted,
        TaskChanged,
        ExpectationViolated,
        TurnFailed,
        Audited,
        Missed,
    }
)
