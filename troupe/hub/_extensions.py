"""The hub handle's extension points: its event stream, listeners, and what may be registered.

Rules:

- ``open_events`` / ``events`` subscribe to the event stream (``_events``); listeners
  (``_listeners``) are fed from it, one task each, in the hub's ``extensions`` child.
- Expectation evaluators and violation handlers, auction arbiters and sweepers are
  registered by name, per hub, while it runs. A name that is taken (a built-in's included)
  is refused with ``ValueError`` unless ``replace=True``; a bad argument likewise.
- A sweeper runs ``await fn(*args)`` every ``interval`` seconds of trio's clock (the clock
  the hub's own sweepers sleep on, so a ``MockClock`` drives it). One that raises is logged
  and audited (``sweeper_failed``) and runs again at its next tick.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .._errors import ProtocolError
from ..model import SessionState
from ._arbiters import Arbiter
from ._evaluators import Evaluator
from ._events import DEFAULT_CAPACITY, EventStream
from ._expectations import Handler
from ._hub_base import HubBase
from ._listeners import DRAIN_S, LISTENER_CAPACITY, run_listener

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

log = logging.getLogger("troupe.hub")


class ExtensionState:
    """What the extension calls keep for one hub (on ``Hub._ext``)."""

    def __init__(self) -> None:
        #: The ``extensions`` child's nursery, while the hub runs.
        self.nursery: trio.Nursery | None = None
        #: Listeners added before the child started (``open_hub(listeners=...)``).
        self.waiting: list[tuple[object, EventStream, trio.CancelScope]] = []
        self.listeners: dict[int, tuple[object, trio.CancelScope]] = {}
        self.sweepers: dict[str, trio.CancelScope] = {}

    def closing(self) -> None:
        """Give every listener ``DRAIN_S`` seconds more at most (the hub is closing)."""
        deadline = trio.current_time() + DRAIN_S
        for _, scope in self.listeners.values():
            scope.deadline = min(scope.deadline, deadline)


def _check_name(kind: str, name: object, taken: Iterable[str], replace: bool) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} name must be a non-empty str, got {name!r}")
    if name in taken and not replace:
        raise ValueError(f"{kind} {name!r} is already registered (pass replace=True)")
    return name


def _check_callable(kind: str, name: str, fn: object) -> None:
    if not callable(fn):
        raise ValueError(f"{kind} {name!r} must be callable, got {fn!r}")


class ExtensionCalls(HubBase):
    """The event stream, listeners and registries (a part of :class:`~troupe.hub.Hub`)."""

    _ext: ExtensionState

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
        name = _check_name("evaluator", name, table, replace)
        _check_callable("evaluator", name, evaluator)
        if not isinstance(state, SessionState) or state.terminal:
            raise ValueError(f"evaluator {name!r}: state must be PENDING or ACTIVE, got {state!r}")
        table[name] = (evaluator, state)

    def register_violation_handler(
        self, name: str, handler: Handler, *, replace: bool = False
    ) -> None:
        """Run ``await handler(hub, violation)`` for expectations with ``on_violation=name``.

        A handler that raises is logged, and the violation is tried again at the next tick
        (as when a built-in handler's notice is refused).

        Raises:
          ValueError: the name is taken (unless ``replace``), or ``handler`` is not callable.
        """
        table = self._expectations.handlers
        name = _check_name("violation handler", name, table, replace)
        _check_callable("violation handler", name, handler)
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
        name = _check_name("arbiter", name, table, replace)
        _check_callable("arbiter", name, arbiter)
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
        name = _check_name("sweeper", name, ext.sweepers, replace)
        _check_callable("sweeper", name, fn)
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


async def run_extensions(ext: ExtensionState, *, task_status: trio.TaskStatus[None]) -> None:
    """The hub's ``extensions`` child: a nursery for listeners and custom sweepers."""
    async with trio.open_nursery() as nursery:
        ext.nursery = nursery
        waiting, ext.waiting = ext.waiting, []
        for listener, stream, scope in waiting:
            nursery.start_soon(run_listener, listener, stream, scope)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            ext.nursery = None
            ext.closing()  # the nursery waits for the listeners that long at most
