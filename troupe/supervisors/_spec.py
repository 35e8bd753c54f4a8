"""The records a supervisor is configured with and reports through."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from ..actors import ActorRef
from ..mailbox import Mailbox
from ._policy import RESTART_TYPES, RestartType


@attrs.frozen
class ChildSpec:
    """How to start, restart and stop one child.

    ``start`` is either a factory returning a fresh :class:`Actor` (the child gets an
    :class:`ActorRef` that stays valid across restarts, over one mailbox), or an async
    function following trio's ``task_status`` protocol (``start(task_status=...)``).

    Args:
      id: unique among the supervisor's children.
      restart: ``"permanent"`` (always restarted), ``"transient"`` (only after a crash) or
        ``"temporary"`` (never).
      shutdown_s: how long an actor child may take to stop after its stop message before it
        is cancelled. Function children are cancelled at once.
      mailbox: makes the actor child's mailbox (once; it is kept across restarts).

    Raises:
      ValueError: an unknown restart type, or a negative ``shutdown_s``.
    """

    id: str
    start: Callable[..., Any]
    restart: RestartType = attrs.field(default="permanent", kw_only=True)
    shutdown_s: float = attrs.field(default=5.0, kw_only=True)
    mailbox: Callable[[], Mailbox[Any]] | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.restart not in RESTART_TYPES:
            raise ValueError(
                f"child {self.id!r}: unknown restart type {self.restart!r}; use one of "
                + ", ".join(RESTART_TYPES)
            )
        if self.shutdown_s < 0:
            raise ValueError(f"child {self.id!r}: shutdown_s must be >= 0")

    @property
    def kind(self) -> Literal["actor", "function"]:
        """``"function"`` when ``start`` is an async function, else ``"actor"``."""
        return "function" if inspect.iscoroutinefunction(self.start) else "actor"


@attrs.frozen(kw_only=True)
class ChildInfo:
    """One row of :meth:`Supervisor.which_children`."""

    id: str
    kind: Literal["actor", "function"]
    restart: RestartType
    running: bool
    restarts: int
    ref: ActorRef[Any, Any] | None


@attrs.frozen(kw_only=True)
class SupervisorStatistics:
    """A snapshot of a supervisor (trio's ``statistics()`` convention)."""

    strategy: str
    children: int
    running: int
    restarts: int
    restarts_by_child: Mapping[str, int]
