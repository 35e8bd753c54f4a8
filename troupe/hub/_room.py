"""Who waits for room in whose inbox (``overflow="block"``; see ``_backpressure``)."""

from __future__ import annotations

import trio

from ._rules import InboxLedger


class InboxRoom:
    """Posters waiting for room in agents' inboxes; one per hub (``HubCore.room``).

    Written only by the posts that wait (``_backpressure.wait_for_room``) and, through
    :meth:`freed`, by the inbox ledger when an agent acknowledges an envelope.
    """

    __slots__ = ("_events", "_ledger", "_waiting", "_watchers")

    def __init__(self, ledger: InboxLedger) -> None:
        self._ledger = ledger
        ledger.freed = self.freed
        #: agent id -> an event set (and dropped) when one of its pending envelopes is acked.
        self._events: dict[str, trio.Event] = {}
        #: agent id -> how many posts wait for room in its inbox now.
        self._watchers: dict[str, int] = {}
        #: poster agent id -> how many of its posts wait for room now.
        self._waiting: dict[str, int] = {}

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
