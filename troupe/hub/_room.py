"""Who waits for room in whose inbox (``overflow="block"``; see ``_backpressure``), and
which connection slot a waiting post holds meanwhile."""

from __future__ import annotations

import contextvars

import trio

from ._rules import InboxLedger


class InboxRoom:
    """Posters waiting for room in agents' inboxes, and the room taken by posts on their way
    to a session actor; one per hub (``HubCore.room``).

    Written only by the posts to capped inboxes (``_backpressure``: they take room, wait for
    it, and give back what they took once their session actor has answered them) and,
    through :meth:`freed`, by the inbox ledger when an agent acknowledges an envelope.
    """

    __slots__ = ("_coming", "_events", "_ledger", "_waiting", "_watchers")

    def __init__(self, ledger: InboxLedger) -> None:
        self._ledger = ledger
        ledger.freed = self.freed
        #: agent id -> an event set (and dropped) when one of its pending envelopes is acked.
        self._events: dict[str, trio.Event] = {}
        #: agent id -> how many posts wait for room in its inbox now.
        self._watchers: dict[str, int] = {}
        #: poster agent id -> how many of its posts wait for room now.
        self._waiting: dict[str, int] = {}
        #: agent id -> how many posts that found room in its inbox are not answered yet: they
        #: count against ``max_pending`` until the ledger counts them (or they are refused).
        self._coming: dict[str, int] = {}

    def coming(self, agent_id: str) -> int:
        """How many posts took room in ``agent_id``'s inbox and were not answered yet."""
        return self._coming.get(agent_id, 0)

    def take(self, agent_ids: list[str]) -> None:
        """A post found room in these agents' inboxes: hold it until :meth:`give_back`."""
        coming = self._coming
        for agent_id in agent_ids:
            coming[agent_id] = coming.get(agent_id, 0) + 1

    def give_back(self, agent_ids: list[str]) -> None:
        """The post that took room in these inboxes was answered: the ledger counts it now
        (it was dispatched) or never will (it was refused). Its waiters look again."""
        coming = self._coming
        for agent_id in agent_ids:
            count = coming[agent_id] - 1
            if count:
                coming[agent_id] = count
            else:
                del coming[agent_id]
            if agent_id in self._watchers:
                self.freed(agent_id)

    def waits(self, agent_id: str) -> bool:
        """Whether a post of ``agent_id`` is waiting for room now."""
        return agent_id in self._waiting

    def waiting(self) -> int:
        """How many posts wait for room now."""
        return sum(self._waiting.values())

    def enter(self, poster_id: str, recipient_id: str) -> None:
        self._waiting[poster_id] = self._waiting.get(poster_id, 0) + 1
        self._watchers[recipient_id] = self._watchers.get(recipient_id, 0) + 1
        self._ledger.watched.add(recipient_id)

    def leave(self, poster_id: str, recipient_id: str) -> None:
        for table, key in ((self._waiting, poster_id), (self._watchers, recipient_id)):
            count = table[key] - 1
            if count:
                table[key] = count
            else:
                del table[key]
        if recipient_id not in self._watchers:
            self._ledger.watched.discard(recipient_id)
            self._events.pop(recipient_id, None)

    def freed_event(self, agent_id: str) -> trio.Event:
        """An event set when ``agent_id`` next acknowledges an envelope (or is reset)."""
        event = self._events.get(agent_id)
        if event is None:
            event = self._events[agent_id] = trio.Event()
        return event

    def freed(self, agent_id: str) -> None:
        """``agent_id`` acknowledged an envelope (the ledger calls this): wake its waiters."""
        event = self._events.pop(agent_id, None)
        if event is not None:
            event.set()


class TakenRoom:
    """The room one post took in capped inboxes (``_backpressure.take_room``), given back
    once, by whoever is last to know where the post is.

    - The session actor gives it back as soon as it has dispatched the post (the inbox
      ledger counts it from then on), or answered it otherwise (a refusal, a repeat).
    - The poster gives it back when its post is settled (the room stays taken across a
      crash and its retry), or when it is cancelled before it asked the actor.
    - A poster cancelled while it asks leaves as :meth:`poster_left` says: if the actor
      has ``handed`` the post to itself, the actor gives the room back once it is done with
      it (``orphaned``); if not, the poster gives it back and the post is ``abandoned``: the
      actor refuses it unseen, so a post can never land without its room.
    """

    __slots__ = ("_agent_ids", "_room", "abandoned", "handed", "orphaned")

    def __init__(self, room: InboxRoom, agent_ids: list[str]) -> None:
        self._room = room
        self._agent_ids = agent_ids
        #: The session actor started on the post (in the attempt under way).
        self.handed = False
        #: Its poster left after the actor started on it: the actor gives the room back.
        self.orphaned = False
        #: Its poster left before the actor started on it, and gave the room back: the
        #: actor must not take the post.
        self.abandoned = False

    def poster_left(self) -> None:
        """The poster was cancelled while it asked the session actor to take the post."""
        if self.handed:
            self.orphaned = True
        else:
            self.abandoned = True
            self.give_back()

    def give_back(self) -> None:
        """Give the room back (once; later calls do nothing)."""
        agent_ids, self._agent_ids = self._agent_ids, []
        if agent_ids:
            self._room.give_back(agent_ids)


class ConnectionSlots:
    """The slots of one connection's requests (``_serve``): at most ``in_flight`` served at
    once, and besides them at most ``max_waiting`` posts waiting for room.

    A post that waits for room gives its in-flight slot back for a waiting one
    (:meth:`RequestSlot.wait`): otherwise ``in_flight`` waiting posts would stop the reading
    of the connection, and with it the receipts of a recipient bound to the same connection,
    the very acks that make the room they wait for.

    A count, not a ``trio.CapacityLimiter`` (0.8 us to take and give back a slot, on every
    request): the connection's reader is the only task that takes slots.
    """

    __slots__ = ("_free", "busy", "in_flight", "max_waiting", "waiting")

    def __init__(self, in_flight: int, max_waiting: int) -> None:
        self.in_flight = in_flight
        #: How many in-flight slots are taken.
        self.busy = 0
        #: Where the reader waits for an in-flight slot while all are taken.
        self._free = trio.lowlevel.ParkingLot()
        self.max_waiting = max_waiting
        #: How many of the connection's posts wait for room now (or went on after waiting).
        self.waiting = 0

    def take_nowait(self) -> RequestSlot | None:
        """An in-flight slot for the next request if one is free (None: all are taken)."""
        if self.busy >= self.in_flight:
            return None
        self.busy += 1
        return RequestSlot(self)

    async def take(self) -> RequestSlot:
        """An in-flight slot for the next request, once one is free (see :meth:`take_nowait`
        for the common case, without a trip through the scheduler: the reader checkpoints
        reading the next frame, and the request's task starts a scheduler round sooner)."""
        while self.busy >= self.in_flight:
            await self._free.park()
        self.busy += 1
        return RequestSlot(self)

    def _give_back(self) -> None:
        self.busy -= 1
        if self._free:
            self._free.unpark()


class RequestSlot:
    """One request's slot on its connection: in flight, or (after :meth:`wait`) waiting."""

    __slots__ = ("_released", "_slots", "_waits")

    def __init__(self, slots: ConnectionSlots) -> None:
        self._slots = slots
        self._waits = False
        self._released = False

    def wait(self) -> bool:
        """Trade the in-flight slot for a waiting one, as the request's post is about to wait
        for room; whether it may wait (False: the connection has ``max_waiting`` posts
        waiting already). The waiting slot is held until :meth:`release`."""
        if self._waits or self._released:
            # (Released: a task started while serving the request, which copied the slot
            # with its context, waits after it ended; there is no slot left to trade.)
            return True
        slots = self._slots
        if slots.waiting >= slots.max_waiting:
            return False
        slots.waiting += 1
        self._waits = True
        slots._give_back()
        return True

    @property
    def max_waiting(self) -> int:
        """How many posts of the connection may wait for room at once."""
        return self._slots.max_waiting

    def release(self) -> None:
        """The request is done: give back the slot it holds (once)."""
        if self._released:
            return
        self._released = True
        if self._waits:
            self._slots.waiting -= 1
        else:
            self._slots._give_back()


#: The connection slot of the request the current task serves, if it serves one (set by
#: ``_serve`` in the request's own task): what a post trades in when it waits for room.
REQUEST_SLOT: contextvars.ContextVar[RequestSlot | None] = contextvars.ContextVar(
    "troupe_request_slot", default=None
)
