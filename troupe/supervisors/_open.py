"""Opening supervisors: ``open_supervisor`` and ``open_dynamic_supervisor``.

Both check their arguments before any nursery opens (a mistake is a bare ``ValueError``),
run a :class:`Supervisor` in a nursery of its own, stop its children when the block is
left, and raise :class:`RestartIntensityExceeded` bare out of the block when it gave up.
An error that leaves the block alone (the body's, or a child's that failed to start) is
raised bare too, not in the group of one the nursery wraps it in.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import NoReturn

import trio

from .._errors import RestartIntensityExceeded
from ._policy import STRATEGIES, Backoff, RestartWindow, Strategy
from ._supervisor import GiveUpHook, Supervisor


@asynccontextmanager
async def _open(
    *,
    strategy: Strategy,
    max_restarts: int,
    within_s: float,
    backoff: tuple[float, float] | None,
    per_child: bool,
    on_give_up: GiveUpHook | None,
    name: str,
    seed: int | None,
) -> AsyncIterator[Supervisor]:
    # Check the arguments before the nursery opens, so a mistake is a bare ValueError and
    # not one wrapped in an ExceptionGroup.
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of " + ", ".join(STRATEGIES))
    RestartWindow(max_restarts, within_s)
    policy = Backoff(*backoff) if backoff is not None else None
    try:
        async with trio.open_nursery() as nursery:
            sup = Supervisor(
                nursery,
                strategy=strategy,
                max_restarts=max_restarts,
                within_s=within_s,
                backoff=policy,
                per_child=per_child,
                on_give_up=on_give_up,
                name=name,
                rng=random.Random(seed),
            )
            nursery.start_soon(sup._control, name=f"{name}:control")
            try:
                yield sup
            finally:
                await sup.close()
                sup._cancel_everything()
    except ExceptionGroup as group:
        # The nursery wraps whatever left the block (the body's error, a child that failed
        # to start) in a group of one: raise that error as it was raised. Several errors at
        # once stay a group.
        if len(group.exceptions) == 1:
            _reraise(group.exceptions[0])
        raise
    if sup._failed:
        raise RestartIntensityExceeded(
            f"supervisor {name!r}: more than {max_restarts} restarts in {within_s}s"
        ) from sup.failure


def _reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` again as it was: its traceback grows, its cause and context stay.

    (A plain ``raise`` in an ``except`` block would make the group its ``__context__``.)
    """
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


def open_supervisor(
    strategy: Strategy = "one_for_one",
    max_restarts: int = 3,
    within_s: float = 5.0,
    backoff: tuple[float, float] | None = None,
    *,
    name: str = "supervisor",
    seed: int | None = None,
) -> AbstractAsyncContextManager[Supervisor]:
    """Open a supervisor; leaving the block stops its children in reverse start order.

    Args:
      strategy: on a crash restart only that child (``one_for_one``), every child
        (``one_for_all``), or that child and those started after it (``rest_for_one``).
      max_restarts: more restarts than this within ``within_s`` seconds and the
        supervisor stops every child and raises :class:`RestartIntensityExceeded`.
      within_s: the length of the intensity window, in seconds of trio's clock.
      backoff: ``(min_s, max_s)`` for exponential backoff with jitter between restarts;
        ``None`` restarts at once.
      name: shown in logs and errors.
      seed: seeds the backoff jitter, for reproducible runs.

    Returns:
      An async context manager yielding the :class:`Supervisor`.

    Raises:
      ValueError: an unknown strategy, or nonsense limits or backoff (on entering).
      RestartIntensityExceeded: out of the block, bare, with the last crash as its cause.
      Exception: what the body raised, bare (several errors at once: an ExceptionGroup).
    """
    return _open(
        strategy=strategy,
        max_restarts=max_restarts,
        within_s=within_s,
        backoff=backoff,
        per_child=False,
        on_give_up=None,
        name=name,
        seed=seed,
    )


def open_dynamic_supervisor(
    max_restarts: int = 3,
    within_s: float = 5.0,
    backoff: tuple[float, float] | None = None,
    *,
    on_give_up: GiveUpHook | None = None,
    name: str = "dynamic-supervisor",
    seed: int | None = None,
) -> AbstractAsyncContextManager[Supervisor]:
    """Open a supervisor for many children started on demand (sessions, connections).

    Each child has its own restart intensity: a child that crashes more than
    ``max_restarts`` times in ``within_s`` seconds is given up on alone (its ref dies and
    ``on_give_up(child_id, last_crash)`` runs in the supervisor's nursery) while its
    siblings keep running. Shutdown stops all children concurrently.

    Args:
      max_restarts: per child, the restarts allowed within ``within_s`` seconds.
      within_s: the length of each child's intensity window.
      backoff: ``(min_s, max_s)`` for exponential backoff with jitter between restarts.
      on_give_up: awaited with the child's id and its last crash when it is given up on.
      name: shown in logs and errors.
      seed: seeds the backoff jitter, for reproducible runs.

    Returns:
      An async context manager yielding the :class:`Supervisor`.

    Raises:
      ValueError: nonsense limits or backoff (on entering).
      Exception: what the body raised, bare (several errors at once: an ExceptionGroup).
    """
    return _open(
        strategy="one_for_one",
        max_restarts=max_restarts,
        within_s=within_s,
        backoff=backoff,
        per_child=True,
        on_give_up=on_give_up,
        name=name,
        seed=seed,
    )
