"""Per-session inboxes of one identity: bounded, selective, never stolen by another waiter.

Every envelope delivered to an identity is also kept in that session's inbox so code can
wait for it (``wait_for_channel_event``). The reference's waiters consumed and dropped what
did not match, so two waiters could lose each other's envelopes; here a wait takes only the
envelope it matched and leaves the rest queued, in order (selective receive). An inbox keeps
the newest ``capacity`` envelopes (``drop_oldest``): waits look for recent traffic, and an
identity that never waits must not accumulate its history. When a session ends, its inbox is
closed after the closing notice: waiters still get what matches, then an error instead of a
timeout.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from .._errors import MailboxClosed, ProtocolError
from ..mailbox import Mailbox
from ..model import EV_SESSION_CLOSED, EV_SESSION_EXPIRED, Envelope

Predicate = Callable[[Envelope], bool]

#: Envelopes kept per session inbox (the oldest are dropped beyond this).
INBOX_CAPACITY = 256
#: Inboxes of ended sessions kept for late waiters.
ENDED_KEPT = 256

ENDINGS = frozenset({EV_SESSION_CLOSED, EV_SESSION_EXPIRED})


class Disconnected(RuntimeError):
    """Raised when an identity is used, or waited on, after it was disconnected.

    Waiters of the identity are woken with it when it is disconnected (by ``disconnect()``,
    its HubClient's ``close()``, or the end of its connection). The message names the
    identity: ``HumanClient 'bea' (<agent id>) is disconnected``.
    """


@contextmanager
def seed_timeout(timeout: float | None, what: str) -> Iterator[None]:
    """The seeds' ``timeout=`` parameters: trio's deadline, raised as the built-in TimeoutError.

    ``None`` waits for ever; zero or less does not wait (the seed's deadline is then already
    past: ``TimeoutError`` even when a match is queued).
    """
    try:
        with trio.fail_after(math.inf if timeout is None else max(0.0, timeout)):
            yield
    except trio.TooSlowError:
        raise TimeoutError(f"nothing matched in {what} within {timeout}s") from None


async def wait_in(
    box: Mailbox[Envelope],
    predicate: Predicate | None,
    *,
    what: str,
    who: str,
    disconnected: Callable[[], bool],
) -> Envelope:
    """Take the first envelope in ``box`` that ``predicate`` accepts.

    Raises:
      Disconnected: the identity ``who`` (a description) was disconnected.
      ProtocolError: the session ended without a match (``what`` names it).
    """
    try:
        return await box.receive(match=predicate)
    except MailboxClosed:
        if disconnected():
            raise Disconnected(f"{who} is disconnected") from None
        raise ProtocolError(f"{what} ended before a matching envelope arrived") from None


class Inboxes:
    """The per-session inboxes of one identity (``who`` describes it in errors)."""

    def __init__(self, who: str, capacity: int = INBOX_CAPACITY) -> None:
        self._who = who
        self._capacity = capacity
        self._live: dict[str, Mailbox[Envelope]] = {}
        self._ended: OrderedDict[str, Mailbox[Envelope]] = OrderedDict()
        self._disconnected = False

    def __len__(self) -> int:
        return len(self._live)

    def ensure(self, session_id: str) -> Mailbox[Envelope]:
        # Not ``live.get(...) or ended.get(...)``: a Mailbox has a length, so an empty one
        # is falsy and would be replaced (its waiters then never see what arrives).
        box = self._live.get(session_id)
        if box is None:
            box = self._ended.get(session_id)
        if box is None:
            box = Mailbox(self._capacity, "drop_oldest", name=f"inbox:{session_id}")
            self._live[session_id] = box
            if self._disconnected:
                box.close()
        return box

    def put(self, envelope: Envelope) -> None:
        sid = envelope.session_id
        box = self._live.get(sid)
        if box is None:
            if sid in self._ended:
                return  # a replayed duplicate of an ended session
            box = self.ensure(sid)
        if box.closed:
            return
        box.send_nowait(envelope)
        if envelope.event_type in ENDINGS:
            box.close()
            del self._live[sid]
            self._ended[sid] = box
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)

    async def wait(self, session_id: str, predicate: Predicate | None) -> Envelope:
        return await wait_in(
            self.ensure(session_id),
            predicate,
            what=f"session {session_id}",
            who=self._who,
            disconnected=lambda: self._disconnected,
        )

    def discard(self, session_id: str) -> None:
        for boxes in (self._live, self._ended):
            box = boxes.pop(session_id, None)
            if box is not None:
                box.close()

    def close_all(self) -> None:
        """Disconnect: every waiter wakes (after what already matches) with Disconnected."""
        self._disconnected = True
        for box in (*self._live.values(), *self._ended.values()):
            box.close()
