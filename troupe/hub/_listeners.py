"""Listener objects: the reference's ``on_*`` hooks, fed from the hub's event stream.

Rules:

- A listener is any object; the hub calls the hooks it has (sync or async), with the
  reference's names and ``session`` for its ``channel``: ``on_event(event)`` for every
  event first, then ``on_agent_event(agent_id, kind, payload)``,
  ``on_session_event(session_id, kind, payload)``, ``on_envelope_posted(envelope)``,
  ``on_envelope_rejected(session_id, sender_id, event_type, code, message)``,
  ``on_dispatch_failed(session_id, seq, recipient_id, reason)``,
  ``on_expectation_fired(session_id, violation)``, ``on_turn_failed(session_id, agent_id,
  envelope_id, exc_type, exc_message)``, ``on_task_event(task_id, kind, payload)``,
  ``on_inbox_pressure(agent_id, pending, cap)`` and troupe's ``on_missed(count)``.
  ``HubListener`` has them all as no-ops, to subclass.
- Each listener has its own subscription (``LISTENER_CAPACITY`` events) and task: a slow
  listener misses events (``on_missed``), it never slows the hub or another listener.
- A hook that raises is logged (``troupe.hub.listeners``) and the listener goes on with the
  next event; it never crashes the hub. (Not audited: a listener that failed on every
  record would otherwise feed itself a new one each time.)
- Listeners run in the hub's ``extensions`` child. When the hub closes, their streams end
  and each gets up to ``DRAIN_S`` seconds to handle what it still holds (a hook still
  running then is cancelled); a removed listener stops at once.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Final

import trio

from ..model import Envelope, TaskState
from ._events import (
    AgentRegistered,
    AgentUnregistered,
    Audited,
    DispatchFailed,
    EnvelopeAccepted,
    EnvelopeRejected,
    EventStream,
    ExpectationViolated,
    ExpectationViolation,
    HubEvent,
    Missed,
    SessionActorCrashed,
    SessionActorRestarted,
    SessionClosed,
    SessionCreated,
    SessionOpened,
    TaskChanged,
    TurnFailed,
)

log = logging.getLogger("troupe.hub.listeners")

#: Events one listener may have unhandled before it misses the newest.
LISTENER_CAPACITY: Final = 4096
#: Seconds a listener may take, when the hub closes, to handle what it has buffered.
DRAIN_S: Final = 1.0


class HubListener:
    """A listener with every hook as a no-op: subclass it and override what you need."""

    async def on_event(self, event: HubEvent) -> None:
        """Every event, before its specific hook."""

    async def on_agent_event(self, agent_id: str, kind: str, payload: dict[str, Any]) -> None:
        """``registered`` / ``unregistered`` (payload: ``name``)."""

    async def on_session_event(self, session_id: str, kind: str, payload: dict[str, Any]) -> None:
        """``created``, ``opened``, ``closed`` / ``expired`` (``reason``), ``actor_crashed``
        (``exc_type``, ``exc_message``, ``restarting``), ``actor_restarted`` (``last_seq``)."""

    async def on_envelope_posted(self, envelope: Envelope) -> None:
        """An envelope was appended to its session's WAL."""

    async def on_envelope_rejected(
        self, session_id: str, sender_id: str, event_type: str, code: str, message: str
    ) -> None:
        """A post was refused (nothing was appended): the error's ``code`` and ``message``."""

    async def on_dispatch_failed(
        self, session_id: str, seq: int, recipient_id: str, reason: str
    ) -> None:
        """An envelope of the WAL could not be delivered to ``recipient_id`` (skipped)."""

    async def on_expectation_fired(self, session_id: str, violation: ExpectationViolation) -> None:
        """A timed expectation fired."""

    async def on_turn_failed(
        self, session_id: str, agent_id: str, envelope_id: str, exc_type: str, exc_message: str
    ) -> None:
        """An agent's turn raised."""

    async def on_task_event(self, task_id: str, kind: str, payload: dict[str, Any]) -> None:
        """``observed``, then each new state (``running``, ...; a final one, ``completed``,
        ``failed``, ``cancelled`` or ``expired``, once)."""

    async def on_inbox_pressure(self, agent_id: str, pending: int, cap: int) -> None:
        """An agent's unreceipted deliveries crossed a mark towards its inbox cap."""

    async def on_missed(self, count: int) -> None:
        """This listener was too slow: ``count`` events were dropped."""


def _calls(event: HubEvent) -> tuple[str, tuple[Any, ...]] | None:
    """The specific hook for ``event`` and its arguments."""
    match event:
        case AgentRegistered(agent_id=agent_id, name=name):
            return "on_agent_event", (agent_id, "registered", {"name": name})
        case AgentUnregistered(agent_id=agent_id, name=name):
            return "on_agent_event", (agent_id, "unregistered", {"name": name})
        case SessionCreated():
            payload = {
                "manifest_type": event.manifest_type,
                "manifest_version": event.manifest_version,
                "creator_id": event.creator_id,
                "participants": event.participants,
            }
            return "on_session_event", (event.session_id, "created", payload)
        case SessionOpened(session_id=sid):
            return "on_session_event", (sid, "opened", {})
        case SessionClosed(session_id=sid, state=state, reason=reason):
            return "on_session_event", (sid, state, {"reason": reason})
        case SessionActorCrashed():
            payload = {
                "exc_type": event.exc_type,
                "exc_message": event.exc_message,
                "restarting": event.restarting,
            }
            return "on_session_event", (event.session_id, "actor_crashed", payload)
        case SessionActorRestarted(session_id=sid, last_seq=last_seq):
            return "on_session_event", (sid, "actor_restarted", {"last_seq": last_seq})
        case EnvelopeAccepted(envelope=envelope):
            return "on_envelope_posted", (envelope,)
        case EnvelopeRejected():
            args = (event.session_id, event.sender_id, event.event_type)
            return "on_envelope_rejected", (*args, event.code, event.message)
        case DispatchFailed(session_id=sid, seq=seq, recipient_id=rid, reason=reason):
            return "on_dispatch_failed", (sid, seq, rid, reason)
        case ExpectationViolated(violation=violation):
            return "on_expectation_fired", (violation.session_id, violation)
        case TurnFailed():
            args = (event.session_id, event.agent_id, event.envelope_id)
            return "on_turn_failed", (*args, event.exc_type, event.exc_message)
        case TaskChanged():
            payload = {
                "owner_id": event.owner_id,
                "session_id": event.session_id,
                "capability": event.capability,
                "previous": event.previous,
                "reason": event.reason,
            }
            if event.change == "moved" and TaskState(event.state).terminal:
                return None  # its "terminated" event follows: one call per outcome
            kind = "observed" if event.change == "observed" else event.state
            return "on_task_event", (event.task_id, kind, payload)
        case Audited(kind="inbox_pressure", data=data):
            return "on_inbox_pressure", (data["agent_id"], data["pending"], data["max_pending"])
        case Missed(count=count):
            return "on_missed", (count,)
    return None


async def _call(listener: object, hook: str, args: tuple[Any, ...]) -> None:
    fn: Callable[..., Any] | None = getattr(listener, hook, None)
    if fn is None:
        return
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        log.exception("listener %r: %s raised", listener, hook, exc_info=exc)


async def deliver(listener: object, event: HubEvent) -> None:
    """Call ``listener``'s hooks for ``event`` (see the module docstring)."""
    await _call(listener, "on_event", (event,))
    try:
        call = _calls(event)
    except (KeyError, ValueError) as exc:  # an audit record without the fields a hook takes
        log.warning("listener %r: no hook for %r: %r", listener, event, exc)
        return
    if call is not None:
        await _call(listener, *call)


async def run_listener(
    listener: object,
    stream: EventStream,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Feed ``listener`` from ``stream`` until the stream ends or ``scope`` is cancelled.

    ``scope`` is shielded: the hub closing ends the stream, and the listener handles what
    it holds, within ``DRAIN_S`` of the moment its ``extensions`` child is stopped.
    """
    task_status.started()
    try:
        with scope:  # shielded: cancelled by remove_listener, or DRAIN_S after the close
            async for event in stream:
                await deliver(listener, event)
    finally:
        stream.close()
