"""Supervisors: a nursery plus a restart policy for its children (OTP, on trio).

The decisions (intensity, restart types, backoff) are in ``_policy.py``. Here, each child
incarnation is a task under the supervisor's nursery; it reports how it ended to the
supervisor's control task, which restarts it (and its siblings, per the strategy) or gives up.

Rules:

- A ready child runs in a shielded cancel scope of its own: only the supervisor cancels it,
  so a cancel from outside (a timeout around the block, Ctrl-C) still gets the orderly
  shutdown, one child at a time in reverse start order, each bounded by its ``shutdown_s``.
  Until it is ready it is cancelled with whoever is starting it, as with ``nursery.start``.
- Shutdown first cancels the control task, so no restart is half-done or begun under it.
- ``one_for_one`` restarts run in a task per child: one child's backoff delays no other.
  ``one_for_all`` and ``rest_for_one`` restart a group, one group at a time.
- An ``ActorRef.stop()`` that reaches a child while it is down, waiting to be restarted, is
  an orderly exit already made: when the restart is due the request is taken back, and the
  child is restarted only if its restart type says so after an orderly exit. The caller
  waits until then.
"""

from __future__ import annotations

import inspect
import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from .._errors import MailboxClosed
from ..actors import Actor, ActorRef
from ..actors._actor import STOP, Stop, new_ref, run_actor
from ._policy import Backoff, RestartWindow, Strategy, should_restart
from ._spec import ChildInfo, ChildSpec, SupervisorStatistics

log = logging.getLogger("troupe.supervisors")

GiveUpHook = Callable[[str, BaseException | None], Awaitable[None]]
#: ``on_crash(child_id, error, restarting)``; see :attr:`Supervisor.on_crash`.
CrashHook = Callable[[str, Exception, bool], object]
#: ``on_exit(child_id)``; see :attr:`Supervisor.on_exit`.
ExitHook = Callable[[str], object]


class _Starting:
    """A child being started: its ``task_status`` until ready, and the starter waiting.

    The child runs in the supervisor's nursery from the start (``start_soon``: no nursery
    of its own per start, as ``nursery.start`` opens, nor a move into the supervisor's
    once ready), in its own shielded scope, and still keeps trio's ``nursery.start`` rule:
    until it is ready it is cancelled with whoever is starting it (the starter's cancel
    is forwarded to the child's scope, and the starter waits for the child to exit); an
    error before that is raised by the starter, not in the supervisor.
    """

    __slots__ = ("_abort_cancel", "_child", "_task", "done")

    def __init__(self, child: _Child) -> None:
        self._child = child
        self._task: Task | None = None
        self._abort_cancel: Callable[[], Any] | None = None
        #: Whether the child reported ready (``started``).
        self.done = False

    def started(self, value: Any = None) -> None:
        """Report the child ready to whoever is starting it."""
        if self.done:
            raise RuntimeError("called 'started' twice on the same task status")
        self.done = True
        if self._abort_cancel is not None:
            return  # its starter was cancelled: it waits for the child's exit (``exited``)
        task, self._task = self._task, None
        if task is not None:
            reschedule(task, outcome.Value(None))

    def exited(self, error: BaseException | None) -> None:
        """The child ended (``error``: what it raised before it was ready, if anything);
        wakes a starter still waiting (it was cancelled, or the child was never ready)."""
        self.done = True
        task, self._task = self._task, None
        if task is None:
            return
        if self._abort_cancel is not None:
            # The starter was cancelled: it raises its Cancelled, as nursery.start does.
            reschedule(task, outcome.capture(self._abort_cancel))
        elif error is not None:
            reschedule(task, outcome.Error(error))
        else:
            reschedule(
                task,
                outcome.Error(
                    RuntimeError(f"child {self._child.spec.id!r} exited before it was ready")
                ),
            )

    async def wait(self) -> None:
        """Wait until the child is ready; raise what it raised before that."""
        if self.done:  # (ready, or gone, before the starter got here: not possible today)
            await trio.lowlevel.checkpoint()
            return
        self._task = current_task()

        def abort(raise_cancel: Callable[[], Any]) -> Abort:
            # Cancel the child and wait for it to exit (its exit reschedules us).
            self._abort_cancel = raise_cancel
            self._child.scope.cancel()
            return Abort.FAILED

        await wait_task_rescheduled(abort)


def _make_actor(spec: ChildSpec) -> Actor[Any, Any]:
    """Call an actor child's factory and check that it made an actor."""
    actor = spec.start()
    if not isinstance(actor, Actor):
        if inspect.iscoroutine(actor):
            actor.close()  # never awaited: close it so Python does not warn about it
        raise TypeError(
            f"child {spec.id!r}: start() returned {actor!r}, not an Actor; a function "
            "child must be an async def that takes task_status"
        )
    return actor


class _Child:
    __slots__ = (
        "done",
        "generation",
        "kind",
        "ref",
        "restarts",
        "running",
        "scope",
        "spec",
        "stopping",
        "window",
    )

    def __init__(self, spec: ChildSpec, window: RestartWindow | None) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.ref: ActorRef[Any, Any] | None = None
        # The first incarnation's (each later one gets its own: _start_incarnation).
        self.scope = trio.CancelScope(shield=True)
        self.done = trio.Event()
        self.running = False
        self.stopping = False
        self.restarts = 0
        self.generation = 0
        self.window = window


_Report = tuple[_Child, int, Exception | None]


class Supervisor:
    """Starts children, watches them and restarts them per its strategy.

    Made by :func:`open_supervisor` / :func:`open_dynamic_supervisor`, which run it. Set
    :attr:`on_crash` to hear of every crash (an audit log, a metric).
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        strategy: Strategy,
        max_restarts: int,
        within_s: float,
        backoff: Backoff | None,
        per_child: bool,
        on_give_up: GiveUpHook | None,
        name: str,
        rng: random.Random,
    ) -> None:
        self.name = name
        self.strategy = strategy
        self._nursery = nursery
        self._max_restarts = max_restarts
        self._within_s = within_s
        self._window = RestartWindow(max_restarts, within_s)
        self._backoff = backoff
        self._per_child = per_child
        self._on_give_up = on_give_up
        #: Called with the child's id, its error and whether it is restarted, each time a
        #: running child crashes, before anything is done about it (a restart, a give-up).
        #: It runs synchronously, inside the supervisor, so it must not block; an
        #: error it raises is logged and ignored. Set it before starting children.
        self.on_crash: CrashHook | None = None
        #: Called with the child's id each time a child ends without a crash and is not
        #: restarted: it stopped itself (an orderly exit of a ``transient`` or ``temporary``
        #: child) or was stopped (``terminate_child``, the supervisor's shutdown). It runs
        #: in the child's task once it is no longer running, before any other task runs;
        #: after an exit of its own the child is forgotten already, so a child with the
        #: same id may be started from then on. Like ``on_crash`` it must not block, and an
        #: error it raises is logged and ignored.
        self.on_exit: ExitHook | None = None
        self._rng = rng
        self._children: dict[str, _Child] = {}
        self._restarts = 0
        # Set as soon as shutdown is decided: no more starts or restarts from then on.
        self._closing = False
        # Set when close() begins; set() when it is done (later callers wait for it).
        self._shutdown: trio.Event | None = None
        self._control_scope = trio.CancelScope()
        # Every running incarnation's scope: they are shielded, so the nursery's own cancel
        # does not reach them; the supervisor cancels what is left explicitly.
        self._live: set[trio.CancelScope] = set()
        self.failure: BaseException | None = None
        self._failed = False
        send, recv = trio.open_memory_channel[_Report](math.inf)
        self._report_send = send
        self._report_recv = recv

    # -- public ----------------------------------------------------------------------------

    async def start_child(self, spec: ChildSpec) -> ActorRef[Any, Any] | None:
        """Start a child and return once it is ready.

        Args:
          spec: what to start and how to restart it.

        Returns:
          The child's :class:`ActorRef` for an actor child, ``None`` for a function child.

        Raises:
          ValueError: a child with this id already exists.
          RuntimeError: the supervisor is shutting down.
          Exception: whatever the child raised before it was ready (it is not restarted).
        """
        if self._closing:
            raise RuntimeError(f"supervisor {self.name!r} is shutting down")
        if spec.id in self._children:
            raise ValueError(f"supervisor {self.name!r} already has a child {spec.id!r}")
        window = RestartWindow(self._max_restarts, self._within_s) if self._per_child else None
        child = _Child(spec, window)
        if child.kind == "actor":
            child.ref = new_ref(spec.id, spec.mailbox() if spec.mailbox is not None else None)
        self._children[spec.id] = child
        ok = False
        try:
            await self._start_incarnation(child)
            ok = True
        finally:
            if not ok:
                self._forget(child, None)
        return child.ref

    async def terminate_child(self, child_id: str) -> None:
        """Stop a child (orderly for actors, within ``shutdown_s``) and forget it.

        Its ref is dead afterwards; it is not restarted. Does nothing for an unknown id.

        Args:
          child_id: the ``ChildSpec.id`` of the child.
        """
        child = self._children.get(child_id)
        if child is None:
            await trio.lowlevel.checkpoint()
            return
        # Forget first: a restart already under way for it sees that and does not start it.
        self._forget(child, None, bury=False)
        await self._stop(child)
        self._forget(child, None)

    def which_children(self) -> list[ChildInfo]:
        """The children, in start order.

        Returns:
          One :class:`ChildInfo` per child.
        """
        return [
            ChildInfo(
                id=c.spec.id,
                kind=c.kind,
                restart=c.spec.restart,
                running=c.running,
                restarts=c.restarts,
                ref=c.ref,
            )
            for c in self._children.values()
        ]

    def __contains__(self, child_id: str) -> bool:
        return child_id in self._children

    def __len__(self) -> int:
        return len(self._children)

    def statistics(self) -> SupervisorStatistics:
        """A snapshot of the children and their restarts.

        Returns:
          A frozen :class:`SupervisorStatistics`.
        """
        return SupervisorStatistics(
            strategy=self.strategy,
            children=len(self._children),
            running=sum(1 for c in self._children.values() if c.running),
            restarts=self._restarts,
            restarts_by_child={c.spec.id: c.restarts for c in self._children.values()},
        )

    @property
    def state(self) -> str:
        """``"failed"`` (it gave up), ``"stopping"``, ``"restarting"`` (a child is down
        and will be restarted) or ``"running"``."""
        if self._failed:
            return "failed"
        if self._closing:
            return "stopping"
        if any(not c.running for c in self._children.values()):
            return "restarting"
        return "running"

    def cancel(self) -> None:
        """Stop every child in reverse start order, then end the supervisor's block."""
        if not self._closing:
            self._closing = True
            self._nursery.start_soon(self._close_then_cancel, name=f"{self.name}:shutdown")

    # -- children's tasks ------------------------------------------------------------------

    async def _start_incarnation(self, child: _Child) -> None:
        child.generation += 1
        child.stopping = False
        if child.generation > 1:
            child.scope = trio.CancelScope(shield=True)
            child.done = trio.Event()
        starting = _Starting(child)
        self._nursery.start_soon(
            self._run_child, child, starting, name=f"{self.name}/{child.spec.id}"
        )
        await starting.wait()

    async def _run_child(self, child: _Child, starting: _Starting) -> None:
        # Shielded from the start: until it is ready, only its starter's cancel (forwarded
        # by _Starting) or the supervisor reaches it; once ready, only the supervisor.
        scope = child.scope
        done = child.done
        generation = child.generation
        child.running = True
        self._live.add(scope)
        crash: Exception | None = None
        early: BaseException | None = None
        try:
            with scope:
                try:
                    if child.ref is not None:
                        await run_actor(_make_actor(child.spec), child.ref, task_status=starting)
                    else:
                        await child.spec.start(task_status=starting)
                except Exception as exc:
                    if not starting.done:
                        early = exc  # not ready yet: the starter gets the error
                    else:
                        crash = exc
        finally:
            self._live.discard(scope)
            child.running = False
            done.set()
            ready = starting.done
            starting.exited(early)
        if early is not None or not ready:
            return  # never ready: its starter raises, nothing ended
        if scope.cancelled_caught or child.stopping:
            self._crashed(child, crash, restarting=False)
            if self._closing or self._children.get(child.spec.id) is not child:
                self._exited(child, crash)  # (else a sibling stopped to restart with a group)
            return
        if not should_restart(child.spec.restart, crashed=crash is not None):
            # Forget it now, not when the control task reads a report: a start_child with
            # the same id right after this exit (a session started again) must succeed.
            self._exit_for_good(child, crash)
            self._exited(child, crash)
            return
        self._report(child, generation, crash)

    def _report(self, child: _Child, generation: int, crash: Exception | None) -> None:
        """Tell the control task that an incarnation ended and is to be restarted."""
        if child.ref is not None:
            child.ref._await_restart()  # an ActorRef.stop() from now on waits for the restart
        self._report_send.send_nowait((child, generation, crash))

    async def _stop(self, child: _Child) -> None:
        if not child.running:
            await trio.lowlevel.checkpoint()
            return
        child.stopping = True
        if child.ref is not None and child.spec.shutdown_s > 0:
            request = Stop()
            try:
                child.ref.mailbox.send_system(request)
            except MailboxClosed:
                pass
            else:
                with trio.move_on_after(child.spec.shutdown_s):
                    await child.done.wait()
                # Unread (the actor was stuck, or crashed first): the next incarnation must
                # not find it and stop at once.
                child.ref.mailbox.withdraw(request)
        if not child.done.is_set():
            child.scope.cancel()
            await child.done.wait()

    def _forget(self, child: _Child, cause: BaseException | None, *, bury: bool = True) -> None:
        if self._children.get(child.spec.id) is child:
            del self._children[child.spec.id]
        if bury and child.ref is not None:
            child.ref._bury(cause)

    def _is_current(self, child: _Child) -> bool:
        return not self._closing and self._children.get(child.spec.id) is child

    # -- the control task ------------------------------------------------------------------

    async def _control(self) -> None:
        with self._control_scope:
            async with trio.open_nursery() as restarts:
                async for child, generation, crash in self._report_recv:
                    if child.generation != generation or not self._is_current(child):
                        # From an incarnation already replaced or dropped.
                        self._crashed(child, crash, restarting=False)
                        continue
                    delay = self._decide(child, crash)
                    if delay is None:
                        continue
                    if self.strategy == "one_for_one":
                        restarts.start_soon(self._restart, child, delay)
                    else:
                        await self._restart(child, delay)

    def _exit_for_good(self, child: _Child, crash: Exception | None) -> None:
        cid = child.spec.id
        if crash is not None:
            log.error("%s: child %r crashed", self.name, cid, exc_info=crash)
        # A normal exit (a client that disconnected, a session that closed) is routine: not
        # worth a line in an application's INFO log.
        log.log(
            logging.INFO if crash is not None else logging.DEBUG,
            "%s: child %r exited and is not restarted (%s)",
            self.name,
            cid,
            child.spec.restart,
        )
        self._crashed(child, crash, restarting=False)
        self._forget(child, crash)

    def _decide(self, child: _Child, crash: Exception | None) -> float | None:
        """Log the crash and apply the policy; return the delay before restarting, or None.

        Only exits that lead to a restart get here (``_exit_for_good`` handles the others).
        """
        cid = child.spec.id
        if crash is not None:
            log.error("%s: child %r crashed", self.name, cid, exc_info=crash)
        window = child.window if child.window is not None else self._window
        if window.record_crash(trio.current_time()) == "give_up":
            self._crashed(child, crash, restarting=False)
            self._give_up(child, crash)
            return None
        self._crashed(child, crash, restarting=True)
        child.restarts += 1
        self._restarts += 1
        if self._backoff is None:
            return 0.0
        return self._backoff.delay(window.recent, self._rng)

    def _crashed(self, child: _Child, crash: Exception | None, *, restarting: bool) -> None:
        """Tell ``on_crash`` about a crash (an exit without one is not reported)."""
        if crash is None or self.on_crash is None:
            return
        try:
            self.on_crash(child.spec.id, crash, restarting)
        except Exception as exc:
            log.error("%s: on_crash failed for child %r", self.name, child.spec.id, exc_info=exc)

    def _exited(self, child: _Child, crash: Exception | None) -> None:
        """Tell ``on_exit`` about a child that ended without a crash, for good."""
        if crash is not None or self.on_exit is None:
            return
        try:
            self.on_exit(child.spec.id)
        except Exception as exc:
            log.error("%s: on_exit failed for child %r", self.name, child.spec.id, exc_info=exc)

    async def _restart(self, child: _Child, delay: float) -> None:
        if delay:
            await trio.sleep(delay)
        if not self._is_current(child):
            return  # terminated or shutting down while we waited
        for c in await self._stop_siblings(child):
            if not self._is_current(c):
                continue
            if self._stop_asked_while_down(c) and not should_restart(c.spec.restart, crashed=False):
                self._exit_for_good(c, None)
                self._exited(c, None)
                continue
            log.info("%s: restarting child %r (restart %d)", self.name, c.spec.id, c.restarts)
            try:
                await self._start_incarnation(c)
            except Exception as exc:
                # It crashed before it was ready: that counts as a crash like any other.
                self._report(c, c.generation, exc)

    def _stop_asked_while_down(self, child: _Child) -> bool:
        """Take back the ``ActorRef.stop()`` requests sent while ``child`` was down.

        The child stopped already, so they are done: a child that is not restarted after an
        orderly exit stays down, and the next incarnation must not find them and stop at once.
        """
        asked = False
        if child.ref is not None:
            while child.ref.mailbox.withdraw(STOP):
                asked = True
        return asked

    async def _stop_siblings(self, child: _Child) -> list[_Child]:
        """Stop the siblings the strategy restarts with ``child``; return all to restart."""
        if self.strategy == "one_for_one":
            return [child]
        children = list(self._children.values())
        if self.strategy == "one_for_all":
            group = children
        else:
            group = children[children.index(child) :]
        for sibling in reversed(group):
            if sibling is not child:
                await self._stop(sibling)
                if sibling.ref is not None:
                    sibling.ref._await_restart()
        restart = []
        for c in group:
            if c is not child and c.spec.restart == "temporary":
                self._forget(c, None)
            else:
                restart.append(c)
        return restart

    def _give_up(self, child: _Child, crash: Exception | None) -> None:
        cid = child.spec.id
        if self._per_child:
            log.error(
                "%s: child %r crashed more than %d times in %ss; giving up on it",
                self.name,
                cid,
                self._max_restarts,
                self._within_s,
            )
            self._forget(child, crash)
            if self._on_give_up is not None:
                self._nursery.start_soon(self._on_give_up, cid, crash)
            return
        log.error(
            "%s: more than %d restarts in %ss (last: child %r); giving up",
            self.name,
            self._max_restarts,
            self._within_s,
            cid,
        )
        self._failed = True
        self.failure = crash
        self.cancel()

    # -- shutdown --------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every child, in reverse start order (all at once for a dynamic supervisor).

        Shielded from outside cancellation: the wait is bounded by the children's
        ``shutdown_s`` (function children are cancelled at once). A second call waits for
        the first one to finish.
        """
        with trio.CancelScope(shield=True):
            if self._shutdown is not None:
                await self._shutdown.wait()
                return
            self._shutdown = trio.Event()
            self._closing = True
            self._control_scope.cancel()
            children = list(self._children.values())
            try:
                if self._per_child:
                    async with trio.open_nursery() as nursery:
                        for child in children:
                            nursery.start_soon(self._stop, child)
                else:
                    for child in reversed(children):
                        await self._stop(child)
            finally:
                for child in children:
                    self._forget(child, None)
                self._shutdown.set()

    def _cancel_everything(self) -> None:
        """Cancel every task that is still running, children included (they are shielded)."""
        for scope in list(self._live):
            scope.cancel()
        self._nursery.cancel_scope.cancel()

    async def _close_then_cancel(self) -> None:
        await self.close()
        self._cancel_everything()
