"""Routing deliveries to identities: per (identity, session) in WAL order, acked after.

Each (identity, session) with deliveries waiting has one task draining them in order;
different sessions are handled concurrently. After an envelope is handled the hub gets a
receipt (``ack``, or ``nack`` if the handler raised), which advances that identity's cursor:
on a reconnect the hub replays what was not acked, and the router drops what it already
handled (re-acking it), so a handler never sees a duplicate. An envelope that was nacked is
handled again when it is replayed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

import trio

from ..model import Envelope, Frame, ReceiptFrame
from ._identity import Identity
from ._inbox import ENDED_KEPT, ENDINGS

log = logging.getLogger("troupe.client")

SendFrame = Callable[[Frame], Awaitable[None]]


class Router:
    """The delivery side of one HubClient."""

    def __init__(self, clients: dict[str, Identity], send: SendFrame) -> None:
        self._clients = clients
        self._send = send
        self.nursery: trio.Nursery | None = None
        #: (identity, session) -> highest seq routed to a handler / fully handled.
        self._routed: dict[tuple[str, str], int] = {}
        self._handled: dict[tuple[str, str], int] = {}
        #: Sessions that ended, with the last seq handled (the oldest forgotten first).
        self._ended: OrderedDict[tuple[str, str], int] = OrderedDict()
        #: (identity, session, seq) handled with a nack: a replay of it is handled again.
        self._nacked: set[tuple[str, str, int]] = set()
        #: Deliveries waiting per (identity, session); each has one task draining it.
        self._queues: dict[tuple[str, str], deque[Envelope]] = {}
        #: The delivery each drain has handed to its identity and not yet receipted, and
        #: those of them handled with an ack (their receipt is being sent): what
        #: :meth:`flush` acks when the client closes.
        self._inflight: dict[tuple[str, str], Envelope] = {}
        self._settled: set[tuple[str, str]] = set()

    def marks(self) -> int:
        """How many live (identity, session) marks are kept (ended sessions not counted)."""
        return len(self._routed)

    def route(self, envelope: Envelope, recipient_id: str) -> None:
        assert self.nursery is not None
        identity = self._clients.get(recipient_id)
        if identity is None:
            self.nursery.start_soon(
                self._receipt, envelope, recipient_id, "nack", "no such identity on this client"
            )
            return
        key = (recipient_id, envelope.session_id)
        retry = (recipient_id, envelope.session_id, envelope.seq)
        ended = self._ended.get(key)
        if ended is not None and envelope.seq <= ended:
            # A session that ended here, replayed (its last receipts were lost): re-ack.
            self.nursery.start_soon(self._receipt, envelope, recipient_id, "ack", "")
            return
        if retry in self._nacked:
            self._nacked.discard(retry)  # it failed before: handle it again
        elif envelope.seq <= self._routed.get(key, 0):
            if envelope.seq <= self._handled.get(key, 0):
                # Handled before (its receipt was lost): ack again, do not handle twice.
                self.nursery.start_soon(self._receipt, envelope, recipient_id, "ack", "")
            return
        self._routed[key] = max(envelope.seq, self._routed.get(key, 0))
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self.nursery.start_soon(self._drain, key, queue)
        queue.append(envelope)

    async def _drain(self, key: tuple[str, str], queue: deque[Envelope]) -> None:
        """Hand the session's deliveries, in order, to whoever holds the identity now.

        The handle is looked up for each envelope: an identity attached again on this client
        takes over what is queued. With no connected handle left, the rest is not acked (the
        hub replays it) and its marks are taken back, so that a replay routes it again.
        """
        agent_id, session_id = key
        try:
            while queue:
                envelope = queue[0]
                identity = self._clients.get(agent_id)
                if identity is None or identity.disconnected:
                    break
                status, reason = "ack", ""
                self._inflight[key] = envelope
                try:
                    await identity.receive(envelope)
                except Exception as exc:
                    log.exception("%s failed to handle %s", identity, envelope.envelope_id)
                    status, reason = "nack", f"{type(exc).__name__}: {exc}"
                    self._nacked.add((agent_id, session_id, envelope.seq))
                queue.popleft()
                self._handled[key] = max(envelope.seq, self._handled.get(key, 0))
                if envelope.event_type in ENDINGS and status == "ack":
                    self._forget_session(key)
                if status == "ack":
                    self._settled.add(key)
                await self._receipt(envelope, agent_id, status, reason)
                self._inflight.pop(key, None)
                self._settled.discard(key)
        finally:
            self._inflight.pop(key, None)
            self._settled.discard(key)
            if queue:
                queue.clear()
                self._routed[key] = self._handled.get(key, 0)
            del self._queues[key]

    async def flush(self) -> None:
        """Ack the deliveries handed over whose receipt is not sent yet (``close()``).

        Those handled already (their drain is sending the receipt), and those an identity
        holds (a person's: queued for them to take) although its handling (a callback) is
        still running. Without this a client closed right after taking an envelope lost
        that receipt, and the hub replayed the envelope to the next connection. A receipt
        sent twice is ignored by the hub.
        """
        for key, envelope in list(self._inflight.items()):
            identity = self._clients.get(key[0])
            if key in self._settled or (identity is not None and identity._holds(envelope)):
                await self._receipt(envelope, key[0], "ack", "")

    def _forget_session(self, key: tuple[str, str]) -> None:
        """A session ended: keep one number for it (bounded), not its live marks."""
        self._ended[key] = self._handled.pop(key, 0)
        self._routed.pop(key, None)
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    async def _receipt(
        self, envelope: Envelope, recipient_id: str, status: str, reason: str
    ) -> None:
        await self._send(
            ReceiptFrame(
                envelope_id=envelope.envelope_id,
                status=status,
                recipient_id=recipient_id,
                session_id=envelope.session_id,
                seq=envelope.seq,
                reason=reason,
            )
        )
