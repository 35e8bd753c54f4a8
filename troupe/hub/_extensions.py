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
from collections.abc import Iterable
from typing import TYPE_CHECKING

import trio

from ._events import EventStream
from ._listeners import DRAIN_S, run_listener

if TYPE_CHECKING:
    pass

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


def check_name(kind: str, name: object, taken: Iterable[str], replace: bool) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} name must be a non-empty str, got {name!r}")
    if name in taken and not replace:
        raise ValueError(f"{kind} {name!r} is already registered (pass replace=True)")
    return name


def check_callable(kind: str, name: str, fn: object) -> None:
    if not callable(fn):
        raise ValueError(f"{kind} {name!r} must be callable, got {fn!r}")


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
