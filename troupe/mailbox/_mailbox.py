"""A bounded mailbox for one actor, driven by trio's low-level parking.

The queue and its overflow policy live in ``_queue.py``; this module parks and wakes tasks.
A message sent while a receiver is parked is handed to it directly (no queueing), the way
trio's memory channels do; that is what keeps a hop at one scheduler step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs
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

from .._errors import MailboxClosed, MailboxFull
from ._queue import NOTHING, MailQueue, Match, Overflow, OverflowName, _Nothing

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A message a mailbox could not deliver, and why.

    ``reason`` is ``"drop_oldest"`` or ``"drop_newest"`` (overflow policies), or
    ``"actor_dead"`` (queued for an actor that stopped for good).
    """

    message: Any
    reason: str
    mailbox: str = ""


DeadLetterSink = Callable[[DeadLetter], None]


class DeadLetterBuffer:
    """A dead-letter sink that keeps the last ``maxlen`` letters and counts them all by reason.

    Pass one to several mailboxes (``Mailbox(..., dead_letters=buf)``) and read ``letters`` /
    ``counts`` to observe what was dropped.
    """

    def __init__(self, maxlen: int = 1000) -> None:
        self.letters: deque[DeadLetter] = deque(maxlen=maxlen)
        self.counts: dict[str, int] = {}

    def __call__(self, letter: DeadLetter) -> None:
        self.letters.append(letter)
        self.counts[letter.reason] = self.counts.get(letter.reason, 0) + 1

    @property
    def total(self) -> int:
        """How many letters arrived in all (also those no longer kept)."""
        return sum(self.counts.values())


@attrs.frozen(kw_only=True)
class MailboxStatistics:
    """A snapshot of a mailbox (trio's ``statistics()`` convention)."""

    queued: int
    capacity: int
    overflow: str
    dropped: int
    waiting_senders: int
    waiting_receivers: int
    high_water: int
    closed: bool


class Mailbox(Generic[T]):
    """A bounded, closable mailbox with a system lane and selective receive.

    Args:
      capacity: how many user messages may be queued (system messages do not count).
      overflow: what a full mailbox does: ``"block"`` parks the sender until there is room
        (backpressure), ``"reject"`` raises :class:`MailboxFull`, ``"drop_oldest"`` evicts the
        oldest queued message, ``"drop_newest"`` discards the message being sent.
      dead_letters: called with a :class:`DeadLetter` for every message dropped.
      name: shown in errors and dead letters.
    """

    __slots__ = ("_closed", "_dead_letters", "_drop_hook", "_q", "_receivers", "_senders", "name")

    def __init__(
        self,
        capacity: int,
        overflow: Overflow | OverflowName = "block",
        *,
        dead_letters: DeadLetterSink | None = None,
        name: str = "",
    ) -> None:
        self._q: MailQueue[T] = MailQueue(capacity, overflow)
        self._closed = False
        self._receivers: dict[Task, Match[T] | None] = {}
        self._senders: dict[Task, T] = {}
        self._dead_letters = dead_letters
        # Set by the actor layer: fails an ask whose request was dropped, so it never hangs.
        self._drop_hook: Callable[[T], None] | None = None
        self.name = name

    def __repr__(self) -> str:
        return f"<Mailbox {self.name or hex(id(self))} {len(self._q)}/{self._q.capacity}>"

    @property
    def capacity(self) -> int:
        """How many user messages may be queued."""
        return self._q.capacity

    @property
    def overflow(self) -> Overflow:
        """What a full mailbox does with one more user message."""
        return self._q.overflow

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __len__(self) -> int:
        return len(self._q)

    @property
    def receiving(self) -> bool:
        """Whether a task waits in :meth:`receive` (so nothing it would take is queued, and
        no message was handed to it that it has not started on)."""
        return bool(self._receivers)

    # -- sending -------------------------------------------------------------------------

    def _hand_to_receiver(self, msg: T) -> bool:
        """Give ``msg`` to the first parked receiver that wants it; True if one took it."""
        for task, match in self._receivers.items():
            if match is not None:
                try:
                    wanted = match(msg)
                except Exception as exc:
                    # The predicate belongs to the receiver: its error is the receiver's.
                    del self._receivers[task]
                    reschedule(task, outcome.Error(exc))
                    return self._hand_to_receiver(msg)
                if not wanted:
                    continue
            del self._receivers[task]
            reschedule(task, outcome.Value(msg))
            return True
        return False

    def _place(self, msg: T) -> bool:
        """Deliver or queue ``msg``; False when the policy refuses it (full)."""
        if self._closed:
            raise MailboxClosed(f"mailbox {self.name!r} is closed")
        if self._receivers and self._hand_to_receiver(msg):
            return True
        result = self._q.push(msg)
        if result == "queued":
            return True
        if result == "full":
            return False
        victim = result[1]
        self._drop(victim, self._q.overflow.value)
        return True

    def _drop(self, victim: T, reason: str) -> None:
        if self._drop_hook is not None:
            self._drop_hook(victim)
        if self._dead_letters is not None:
            self._dead_letters(DeadLetter(message=victim, reason=reason, mailbox=self.name))

    def send_nowait(self, msg: T) -> None:
        """Queue ``msg`` or hand it to a waiting receiver, without blocking.

        Raises:
          MailboxFull: the mailbox is full and its policy is ``block`` or ``reject``.
          MailboxClosed: the mailbox was closed.
        """
        if not self._place(msg):
            raise MailboxFull(f"mailbox {self.name!r} is full ({self._q.capacity} messages queued)")

    def offer(self, msg: T) -> bool:
        """Queue ``msg`` or hand it to a waiting receiver without waiting; False (nothing
        done) when it would have to wait for room (``block`` policy, full).

        :meth:`send` without its schedule point, for a sender that waits right after anyway
        (an ask waits for its answer) and so checkpoints there.

        Raises:
          MailboxFull: the mailbox is full and its policy is ``reject``.
          MailboxClosed: the mailbox was closed.
        """
        if self._place(msg):
            return True
        if self._q.overflow is not Overflow.BLOCK:
            raise MailboxFull(f"mailbox {self.name!r} is full ({self._q.capacity} messages queued)")
        return False

    async def send(self, msg: T) -> None:
        """Queue ``msg``; under the ``block`` policy wait for room first.

        Raises:
          MailboxFull: the mailbox is full and its policy is ``reject``.
          MailboxClosed: the mailbox was closed (also while this call was waiting for room).
        """
        await checkpoint_if_cancelled()
        if self._place(msg):
            await cancel_shielded_checkpoint()
            return
        if self._q.overflow is not Overflow.BLOCK:
            await cancel_shielded_checkpoint()
            raise MailboxFull(f"mailbox {self.name!r} is full ({self._q.capacity} messages queued)")
        task = current_task()
        self._senders[task] = msg

        def abort(_: Any) -> Abort:
            del self._senders[task]
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def send_system(self, msg: T) -> None:
        """Queue a control message: never blocked, never counted, received before user ones.

        Raises:
          MailboxClosed: the mailbox was closed.
        """
        if self._closed:
            raise MailboxClosed(f"mailbox {self.name!r} is closed")
        if self._receivers and self._hand_to_receiver(msg):
            return
        self._q.push_system(msg)

    # -- receiving -----------------------------------------------------------------------

    def _admit_senders(self) -> None:
        """Move parked senders' messages in while there is room (FIFO among senders)."""
        senders = self._senders
        while senders and self._q.has_room():
            task = next(iter(senders))
            msg = senders.pop(task)
            if not (self._receivers and self._hand_to_receiver(msg)):
                self._q.push_unchecked(msg)
            reschedule(task, outcome.Value(None))

    def _take(self, match: Match[T] | None) -> T | _Nothing:
        """Take the first (matching) message, then let parked senders fill the room it left."""
        msg = self._q.take(match)
        if msg is NOTHING:
            if match is not None and self._senders:
                return self._take_from_sender(match)
            return NOTHING
        if self._senders:
            self._admit_senders()
        return msg

    def _take_from_sender(self, match: Match[T]) -> T | _Nothing:
        """Take the first matching message still held by a sender parked on a full queue.

        Nothing queued matched, so this is the first match in send order; without it a
        selective receiver waiting for a message stuck behind backpressure would never wake.
        """
        for task, msg in self._senders.items():
            if match(msg):
                del self._senders[task]
                reschedule(task, outcome.Value(None))
                return msg
        return NOTHING

    def receive_nowait(self, match: Match[T] | None = None) -> T:
        """Take the first message (the first matching ``match``), system lane first.

        Args:
          match: a predicate; messages it rejects stay queued in their order.

        Returns:
          The message.

        Raises:
          trio.WouldBlock: nothing (matching) is queued.
          MailboxClosed: the mailbox is closed and holds nothing (matching).
        """
        msg = self._take(match)
        if msg is NOTHING:
            if self._closed:
                raise MailboxClosed(f"mailbox {self.name!r} is closed")
            raise trio.WouldBlock
        return msg  # type: ignore[return-value]

    async def receive(self, match: Match[T] | None = None) -> T:
        """Wait for and take the first message, or the first one ``match`` accepts.

        Args:
          match: a predicate; messages it rejects stay queued in their order. System
            messages are offered to it first.

        Returns:
          The message.

        Raises:
          MailboxClosed: the mailbox is closed and holds nothing (matching).
        """
        await checkpoint_if_cancelled()
        msg = self._take(match)
        if msg is not NOTHING:
            await cancel_shielded_checkpoint()
            return msg  # type: ignore[return-value]
        if self._closed:
            await cancel_shielded_checkpoint()
            raise MailboxClosed(f"mailbox {self.name!r} is closed")
        task = current_task()
        self._receivers[task] = match

        def abort(_: Any) -> Abort:
            del self._receivers[task]
            return Abort.SUCCEEDED

        return await wait_task_rescheduled(abort)  # type: ignore[no-any-return]

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Refuse further sends; receivers drain what is queued, then get MailboxClosed.

        Senders still waiting for room get :class:`MailboxClosed`. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        for task in self._receivers:
            reschedule(task, outcome.Error(MailboxClosed(f"mailbox {self.name!r} is closed")))
        self._receivers.clear()
        for task in self._senders:
            reschedule(task, outcome.Error(MailboxClosed(f"mailbox {self.name!r} is closed")))
        self._senders.clear()

    def withdraw(self, msg: T) -> bool:
        """Take back ``msg`` (that very object) if it is still queued.

        For a sender that gave up before the message was received (a cancelled ask).

        Returns:
          True if it was queued and is now gone; False if a receiver already has it.
        """
        if not self._q.withdraw(msg):
            return False
        if self._senders:
            self._admit_senders()
        return True

    def take_all(self) -> list[T]:
        """Remove and return every queued message (system lane first), without waiting."""
        out = self._q.take_all()
        if self._senders:
            self._admit_senders()
        return out

    def statistics(self) -> MailboxStatistics:
        """A snapshot of the mailbox.

        Returns:
          A frozen :class:`MailboxStatistics`; ``queued`` counts both lanes.
        """
        q = self._q
        return MailboxStatistics(
            queued=len(q),
            capacity=q.capacity,
            overflow=q.overflow.value,
            dropped=q.dropped,
            waiting_senders=len(self._senders),
            waiting_receivers=len(self._receivers),
            high_water=q.high_water,
            closed=self._closed,
        )
