"""The mailbox's queue and overflow policy, without I/O.

Rules:

- User messages are FIFO and never more than ``capacity`` are queued.
- System messages live in their own lane: never counted against capacity, never refused
  (except after close), always taken before user messages.
- A full queue decides by policy: ``block`` and ``reject`` refuse the new message (the driver
  parks the sender or raises), ``drop_oldest`` evicts the oldest user message to make room,
  ``drop_newest`` discards the new message and keeps the queue as it is.
- ``take`` with a predicate returns the first matching message (system lane first) and leaves
  every other message where it was.
- ``withdraw`` takes back one queued message (that very object, not an equal one), for a
  sender that gave up before the message was received.

This module never imports trio: the driver in ``_mailbox.py`` parks and wakes tasks.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Final, Generic, Literal, TypeAlias, TypeVar

T = TypeVar("T")

Match: TypeAlias = Callable[[T], bool]


class Overflow(enum.Enum):
    """What a full mailbox does with one more user message."""

    BLOCK = "block"
    REJECT = "reject"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"


OverflowName: TypeAlias = Literal["block", "reject", "drop_oldest", "drop_newest"]


class _Nothing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOTHING"


#: Returned by :meth:`MailQueue.take` when no queued message matches.
NOTHING: Final = _Nothing()


class MailQueue(Generic[T]):
    """A bounded FIFO of user messages plus an unbounded system lane."""

    __slots__ = ("_system", "_user", "capacity", "dropped", "high_water", "overflow")

    def __init__(self, capacity: int, overflow: Overflow | OverflowName = Overflow.BLOCK) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"mailbox capacity must be an int >= 1, got {capacity!r}")
        try:
            policy = Overflow(overflow)
        except ValueError:
            names = ", ".join(repr(p.value) for p in Overflow)
            raise ValueError(f"unknown overflow policy {overflow!r}; use one of {names}") from None
        self.capacity = capacity
        self.overflow = policy
        self.dropped = 0
        self.high_water = 0
        self._user: deque[T] = deque()
        # Most mailboxes never see a control message: create the lane on first use.
        self._system: deque[T] | None = None

    def __len__(self) -> int:
        return len(self._user) + (len(self._system) if self._system else 0)

    @property
    def user_queued(self) -> int:
        """How many user messages are queued (the ones capacity counts)."""
        return len(self._user)

    def has_room(self) -> bool:
        """Whether one more user message fits without the overflow policy deciding."""
        return len(self._user) < self.capacity

    def push(self, msg: T) -> Literal["queued", "full"] | tuple[Literal["dropped"], T]:
        """Queue a user message, or say why not.

        Returns ``"queued"``; ``"full"`` when the policy refuses it (``block`` / ``reject``);
        or ``("dropped", victim)`` when a drop policy discarded ``victim`` (the oldest message
        for ``drop_oldest``, ``msg`` itself for ``drop_newest``).
        """
        user = self._user
        if len(user) < self.capacity:
            user.append(msg)
            if len(user) > self.high_water:
                self.high_water = len(user)
            return "queued"
        policy = self.overflow
        if policy is Overflow.DROP_OLDEST:
            victim = user.popleft()
            user.append(msg)
            self.dropped += 1
            return ("dropped", victim)
        if policy is Overflow.DROP_NEWEST:
            self.dropped += 1
            return ("dropped", msg)
        return "full"

    def push_unchecked(self, msg: T) -> None:
        """Queue a user message that was promised room (a parked sender being admitted)."""
        self._user.append(msg)
        if len(self._user) > self.high_water:
            self.high_water = len(self._user)

    def push_system(self, msg: T) -> None:
        """Queue a control message: never refused, never counted against capacity."""
        if self._system is None:
            self._system = deque()
        self._system.append(msg)

    def take(self, match: Match[T] | None = None) -> T | _Nothing:
        """Remove and return the first matching message, system lane first, or ``NOTHING``."""
        system = self._system
        if match is None:
            if system:
                return system.popleft()
            if self._user:
                return self._user.popleft()
            return NOTHING
        if system:
            found = _take_first(system, match)
            if found is not NOTHING:
                return found
        return _take_first(self._user, match)

    def withdraw(self, msg: T) -> bool:
        """Remove ``msg`` (the object itself, not an equal one) from its lane.

        Returns:
          True if it was queued, False if it was not (already taken, or never queued).
        """
        for lane in (self._system, self._user):
            if lane:
                for i, queued in enumerate(lane):
                    if queued is msg:
                        del lane[i]
                        return True
        return False

    def take_all(self) -> list[T]:
        """Remove and return everything queued, system lane first."""
        out = list(self._system or ())
        out.extend(self._user)
        if self._system:
            self._system.clear()
        self._user.clear()
        return out


def _take_first(lane: deque[T], match: Match[T]) -> T | _Nothing:
    for i, msg in enumerate(lane):
        if match(msg):
            del lane[i]
            return msg
    return NOTHING
