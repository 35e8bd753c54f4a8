"""Actors: a task that owns some state and a mailbox, and the refs that talk to it.

An actor's task runs ``on_start``, reports ready (trio's ``task_status.started(ref)``), then
handles one message at a time. Let it crash: an exception from ``handle`` ends the task; the
asker whose message caused it gets :class:`ActorDead` chained to the exception, and whoever
started the actor (a nursery, a supervisor) decides what happens next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

import outcome
import trio
from trio.lowlevel import (
    Abort,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from .._errors import ActorDead, MailboxClosed, MailboxFull
from ..mailbox import DeadLetter, Mailbox

M = TypeVar("M")
R = TypeVar("R")
T = TypeVar("T")

log = logging.getLogger("troupe.actors")

#: Capacity of the mailbox ``spawn`` makes when none is given.
DEFAULT_CAPACITY = 1024


class Actor(Generic[M, R]):
    """Base class for actors: override :meth:`handle`; ``on_start`` / ``on_stop`` are optional.

    ``self.ref`` is the actor's own :class:`ActorRef`, set before ``on_start`` runs.
    """

    ref: ActorRef[M, R]

    async def on_start(self) -> None:
        """Run in the actor's task before it takes its first message."""

    async def handle(self, msg: M) -> R:
        """Handle one message; the return value answers an :meth:`ActorRef.ask`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement handle()")

    async def on_stop(self) -> None:
        """Run in the actor's task after an orderly stop (not after a crash or a cancel)."""


class Message(Generic[T]):
    """The marker base of a message that declares the type of its answer, ``T``.

    ``ref.ask(msg)`` of a ``Message[T]`` is typed ``T`` whatever the actor's ``R``, so an
    actor that answers several kinds of request gives each asker its own result type
    (``class Lookup(Message[int])``). A marker only: no fields, no cost at run time.
    """

    __slots__ = ()


class Refused:
    """What ``handle`` returns to refuse an ask: the asker's ``ask`` raises ``error``.

    The actor goes on (a refusal is an answer, not a crash). Returned for a ``tell`` it is
    dropped, as any answer to a tell is.
    """

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Refused({self.error!r})"


class _Ask:
    """An ask in flight: the request, and where its answer goes."""

    __slots__ = ("answer", "msg", "task")

    def __init__(self, msg: object) -> None:
        self.msg = msg
        self.task: Task | None = None
        # Set when the answer arrives before the asker parked (it may still be yielding).
        self.answer: outcome.Outcome[Any] | None = None

    def settle(self, result: outcome.Outcome[Any]) -> None:
        """Deliver the answer (the first one wins; later ones are ignored)."""
        task = self.task
        if task is not None:
            self.task = None
            reschedule(task, result)
        elif self.answer is None:
            self.answer = result

    def abandon(self) -> None:
        """The asker gave up: drop whatever answer comes later."""
        self.task = None
        self.answer = outcome.Value(None)


class Stop:
    """A request to stop after the current message, sent in the system lane.

    ``ActorRef.stop`` sends the shared :data:`STOP`; a supervisor sends an instance of its
    own, so that it can take back exactly its request if the actor never read it.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "STOP"


STOP = Stop()


class ActorRef(Generic[M, R]):
    """The address of an actor: tell it, ask it, stop it.

    A ref handed out by a supervisor stays valid across restarts of that child: messages
    queue in the same mailbox while the actor restarts.
    """

    __slots__ = ("_dead", "_in_flight", "_mailbox", "_restart_pending", "_stopped", "_task", "name")

    def __init__(self, mailbox: Mailbox[Any], name: str) -> None:
        self._mailbox = mailbox
        self.name = name
        self._dead: BaseException | None = None
        self._task: Task | None = None
        self._in_flight: _Ask | None = None
        # Set when the current incarnation has ended; replaced on restart.
        self._stopped = trio.Event()
        # Between incarnations of a supervised child that its supervisor means to restart
        # (a backoff): set once that is settled (restarted, or dead).
        self._restart_pending: trio.Event | None = None
        mailbox._drop_hook = _fail_dropped_ask

    def __repr__(self) -> str:
        state = "dead" if self._dead is not None else "alive"
        return f"<ActorRef {self.name} {state}>"

    @property
    def alive(self) -> bool:
        """False once the actor has stopped for good (it will not be restarted)."""
        return self._dead is None

    @property
    def mailbox(self) -> Mailbox[Any]:
        """The actor's mailbox (the same one across restarts)."""
        return self._mailbox

    def _dead_error(self) -> ActorDead:
        return ActorDead(f"actor {self.name!r} is dead")

    async def tell(self, msg: M) -> None:
        """Send ``msg`` without waiting for it to be handled.

        Waits for room when the mailbox is full and its policy is ``block``.

        Raises:
          ActorDead: the actor is dead.
          MailboxFull: the mailbox is full and its policy is ``reject``.
        """
        if self._dead is not None:
            await trio.lowlevel.checkpoint()
            raise self._dead_error()
        try:
            await self._mailbox.send(msg)
        except MailboxClosed:
            raise self._dead_error() from None

    def tell_nowait(self, msg: M) -> None:
        """Send ``msg`` without blocking.

        Raises:
          ActorDead: the actor is dead.
          MailboxFull: the mailbox is full (``block`` or ``reject`` policy).
        """
        if self._dead is not None:
            raise self._dead_error()
        try:
            self._mailbox.send_nowait(msg)
        except MailboxClosed:
            raise self._dead_error() from None

    @overload
    async def ask(self, msg: Message[T]) -> T: ...

    @overload
    async def ask(self, msg: M) -> R: ...

    async def ask(self, msg: Any) -> Any:
        """Send ``msg`` and wait for the value ``handle`` returns for it.

        Typed: the result type a :class:`Message` declares, else the actor's ``R``.

        Cancelled before the actor took the request, the request is withdrawn: the actor
        never sees it. Cancelled later, the actor finishes it and the answer is dropped.

        Returns:
          What ``handle(msg)`` returned.

        Raises:
          Exception: the ``error`` of a :class:`Refused` that ``handle(msg)`` returned.
          ActorDead: the actor is dead, or died before replying (chained to its crash).
          MailboxFull: the mailbox is full and its policy is ``reject``, or a ``drop_*``
            policy dropped the request.
        """
        if self._dead is not None:
            await trio.lowlevel.checkpoint()
            raise self._dead_error()
        req = _Ask(msg)
        mailbox = self._mailbox
        await checkpoint_if_cancelled()
        try:
            # Without a schedule point when there is room: this task waits for the answer
            # next, which is one (and the ask's cancel point, as the abort below).
            if not mailbox.offer(req):
                await mailbox.send(req)
        except MailboxClosed:
            await cancel_shielded_checkpoint()
            raise self._dead_error() from None
        except MailboxFull:
            await cancel_shielded_checkpoint()
            raise
        if req.answer is not None:
            # Settled as it was queued (a drop_* mailbox dropped it): no wait, so the
            # schedule point is taken here; a caller retrying in a loop lets others run.
            await cancel_shielded_checkpoint()
            return req.answer.unwrap()
        req.task = current_task()

        def abort(_: Any) -> Abort:
            req.abandon()
            # Still queued: take it back, so a cancelled ask has no effect (trio's rule).
            mailbox.withdraw(req)
            return Abort.SUCCEEDED

        return await wait_task_rescheduled(abort)

    async def stop(self) -> None:
        """Ask the actor to stop after the messages it is handling, and wait until it has.

        The stop request travels in the system lane, ahead of queued user messages. A
        supervised ``permanent`` child is restarted after it stops. Called by the actor on
        itself it only requests the stop.

        A supervised child that crashed and waits out its restart backoff is down already:
        the call returns when the backoff is over and the supervisor has acted on the
        request. A ``transient`` or ``temporary`` child is then not restarted (its ref is
        dead); a ``permanent`` one is restarted, and the request is not left to stop the
        new incarnation.
        """
        if self._dead is not None:
            await trio.lowlevel.checkpoint()
            return
        try:
            self._mailbox.send_system(STOP)
        except MailboxClosed:
            await trio.lowlevel.checkpoint()
            return
        if self._task is current_task():
            await trio.lowlevel.checkpoint()
            return
        pending = self._restart_pending
        if self._task is None and pending is not None:
            await pending.wait()
            return
        await self._stopped.wait()

    # -- used by the runner and supervisors ---------------------------------------------

    def _begin_incarnation(self) -> None:
        if self._stopped.is_set():
            self._stopped = trio.Event()
        self._task = current_task()
        self._settle_restart()

    def _await_restart(self) -> None:
        """The incarnation ended and a supervisor will restart it (after a backoff)."""
        if self._restart_pending is None:
            self._restart_pending = trio.Event()

    def _settle_restart(self) -> None:
        pending, self._restart_pending = self._restart_pending, None
        if pending is not None:
            pending.set()

    def _end_incarnation(self) -> None:
        self._task = None
        self._stopped.set()

    def _bury(self, cause: BaseException | None) -> None:
        """Mark the actor dead for good: close its mailbox and fail what is queued."""
        if self._dead is not None:
            return
        self._dead = cause if cause is not None else self._dead_error()
        mailbox = self._mailbox
        mailbox.close()
        for msg in mailbox.take_all():
            if type(msg) is _Ask:
                msg.settle(outcome.Error(self._dead_error()))
            elif type(msg) is not Stop and mailbox._dead_letters is not None:
                mailbox._dead_letters(
                    DeadLetter(message=msg, reason="actor_dead", mailbox=mailbox.name)
                )
        self._stopped.set()
        self._settle_restart()


#: Messages an actor takes in a row without a schedule point between them (when they wait
#: queued; a handler that awaits has its own): bounds how long a busy actor keeps others
#: from running, and how late it notices that it is cancelled.
BURST = 16


def _fail_dropped_ask(msg: object) -> None:
    if type(msg) is _Ask:
        msg.settle(outcome.Error(MailboxFull("the ask was dropped by a full mailbox")))


async def run_actor(
    actor: Actor[Any, Any],
    ref: ActorRef[Any, Any],
    *,
    task_status: trio.TaskStatus[ActorRef[Any, Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one incarnation of ``actor`` on ``ref``'s mailbox until it stops or crashes.

    Returns after an orderly stop; raises what ``handle`` raised after a crash. Does not
    close the mailbox: whoever runs the incarnation decides whether the actor is dead.
    """
    ref._begin_incarnation()
    try:
        actor.ref = ref
        await actor.on_start()
        task_status.started(ref)
        mailbox = ref._mailbox
        handle = actor.handle
        burst = BURST
        while True:
            # Messages queued meanwhile are taken without a schedule point each, up to
            # BURST in a row: a busy actor is done with what waits sooner (and idle again).
            # (Asked before taking: a WouldBlock raised and caught per idle spell cost ~1 us,
            # and stayed alive in this frame, with its traceback, while the actor waited.)
            if burst < BURST and len(mailbox):
                await checkpoint_if_cancelled()  # (not a schedule point)
                msg = mailbox.receive_nowait()
            else:
                # An actor waiting for work keeps neither its last message nor its answer
                # alive: a large envelope would stay in memory until the next message.
                msg = result = None
                msg = await mailbox.receive()
                burst = 0
            burst += 1
            cls = type(msg)
            if cls is _Ask:
                # Cleared only once the ask is settled: if handle() is cancelled instead,
                # the finally below still finds it and fails the asker.
                ref._in_flight = msg
                try:
                    result = await handle(msg.msg)
                except Exception as exc:
                    ref._in_flight = None
                    err = ActorDead(f"actor {ref.name!r} crashed handling this message")
                    err.__cause__ = exc
                    msg.settle(outcome.Error(err))
                    raise
                ref._in_flight = None
                if type(result) is Refused:
                    msg.settle(outcome.Error(result.error))
                else:
                    msg.settle(outcome.Value(result))
            elif cls is Stop:
                break
            else:
                await handle(msg)
        await actor.on_stop()
    finally:
        in_flight = ref._in_flight
        if in_flight is not None:
            # Cancelled mid-handle: the asker must not hang.
            ref._in_flight = None
            in_flight.settle(outcome.Error(ActorDead(f"actor {ref.name!r} was cancelled")))
        ref._end_incarnation()


async def _run_spawned(
    actor: Actor[Any, Any],
    ref: ActorRef[Any, Any],
    *,
    task_status: trio.TaskStatus[ActorRef[Any, Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    cause: BaseException | None = None
    try:
        await run_actor(actor, ref, task_status=task_status)
    except Exception as exc:
        cause = exc
        log.error("actor %r crashed", ref.name, exc_info=exc)
        raise
    finally:
        ref._bury(cause)


def new_ref(
    name: str, mailbox: Mailbox[Any] | None = None, capacity: int = DEFAULT_CAPACITY
) -> ActorRef[Any, Any]:
    """Make a ref (and its mailbox, unless given) for an actor that is not running yet."""
    if mailbox is None:
        mailbox = Mailbox(capacity, "block", name=name)
    elif not mailbox.name:
        mailbox.name = name
    return ActorRef(mailbox, name)


async def spawn(
    nursery: trio.Nursery,
    actor: Actor[M, R],
    *,
    mailbox: Mailbox[Any] | None = None,
    name: str | None = None,
) -> ActorRef[M, R]:
    """Start ``actor`` in ``nursery`` and return its ref once ``on_start`` has run.

    Without a ``mailbox``, the actor gets a ``block`` mailbox of ``DEFAULT_CAPACITY``. A crash
    propagates into ``nursery`` (use a supervisor to restart instead).
    """
    ref: ActorRef[M, R] = new_ref(name or type(actor).__name__, mailbox)
    started: ActorRef[M, R] = await nursery.start(_run_spawned, actor, ref)
    return started


ActorFactory = Callable[[], Actor[Any, Any]]
