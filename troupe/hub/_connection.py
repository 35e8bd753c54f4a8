"""The connection actor: one per connected endpoint (a LocalLink, a WebSocket).

It owns the connection's outbound frames (it is their only writer), the identities bound to
it, and per (agent, session) two marks: ``sent`` (the highest seq notified, to drop
duplicate deliveries) and ``acked`` (the cursor, advanced by receipts, persisted). Replay
and catch-up read the WAL after a mark and notify what the agent may see, in WAL order.

Over a transport that carries batches (an endpoint with ``send_texts``: the WebSocket), the
actor does not write each frame as it handles a message: it encodes it into its outbox and
writes the outbox, in order, once its mailbox is drained (or ``MAX_BATCH_BYTES`` wait), so
the deliveries and replies of one wakeup travel in as few messages as the transport's limit
allows. Receipts come in batches too (:class:`Receipts`): each (agent, session) cursor
advances once per batch, to the batch's highest ack.

In process (a LocalLink), while the actor is idle a dispatch notifies from its own task
(:meth:`ConnectionActor.notify_now`). Receipts are settled by whoever reads them
(:meth:`ConnectionActor.receipts_now`: in process the client's task as it sends one, over a
WebSocket the connection's reader): an acked delivery then costs this actor no scheduler
step in process, and a receipt none over a WebSocket. (Deliveries over a WebSocket still go
through the actor: handed to the writer's queue from the dispatching task, they went out in
more, smaller messages, and a stream through ``troupe serve`` ran ~10% slower for it in
the one quiet measurement taken.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import trio

from .._errors import DecodeError, IdentityInUse, MailboxClosed, StoreError
from ..actors import Actor, ActorRef, Message, Refused
from ..api import Endpoint
from ..mailbox import DeadLetter
from ..model import (
    EV_CHANNEL_INVITE_ACK,
    EV_CHANNEL_INVITE_REJECT,
    Envelope,
    ErrorFrame,
    Frame,
    NotifyFrame,
    ReceiptFrame,
    SessionMetadata,
    SessionStatus,
    is_substantive,
)
from ._core import HubCore
from ._delivery import held_back, recipients_of
from ._lanes import ChunkOut
from ._routes import CatchUp, Deliver, Routes
from ._rules import accepts_inbound

log = logging.getLogger("troupe.hub.connections")


#: Pongs and refusals that may wait for a connection that does not read them; beyond that,
#: pings go unanswered and bad frames unrefused (the heartbeat drops such a peer anyway).
MAX_CONTROL_QUEUED = 64
#: Bytes of encoded replies that may wait for a connection that does not read them; while
#: more wait, the hub reads no further requests from it (see ``wait_outbound_room``).
MAX_OUTBOUND_BYTES = 4 << 20
#: In process, frames the actor writes in a row without a schedule point (a replay of a long
#: backlog is one message: without this it would hold the hub for all of it).
UNYIELDED_FRAMES = 64
#: Bytes of encoded frames the actor gathers in its outbox before writing them, even if more
#: messages wait in its mailbox: bounds the outbox's memory and a delivery's wait.
MAX_BATCH_BYTES = 256 << 10


@attrs.frozen
class Bind(Message[None]):
    """Bind ``agent_id`` to this connection; with ``since`` not None, replay what it missed.

    ``welcome`` (a HelloFrame's answer) is sent after the binding and before any replay.
    """

    agent_id: str
    since: dict[str, int] | None = None
    welcome: Frame | None = None
    #: The bind proved the identity with a key: it may take the identity from another live
    #: connection (which is told why and closed). Without it such a bind is refused.
    takeover: bool = False


@attrs.frozen
class Receipts(Message[None]):
    """Receipts the reader read in one message (one, or a batch's), in order."""

    frames: tuple[ReceiptFrame, ...]


@attrs.frozen
class SendOut(Message[None]):
    """Send a frame in order with the deliveries (replies to the client's requests).

    ``control``: queued by the reader in the system lane (a pong, a refusal), and counted
    against ``MAX_CONTROL_QUEUED``. ``frame`` may be the frame's wire text already (made by
    :meth:`ConnectionActor.reply`); ``size`` is then counted in the outbound bytes.
    """

    frame: Frame | str
    control: bool = False
    size: int = 0


@attrs.frozen
class Evict(Message[None]):
    """Another connection took ``agent_id`` over: say so to the client, and close."""

    agent_id: str
    message: str


@attrs.frozen
class Unbind(Message[None]):
    """``agent_id`` was unregistered: drop its binding to this connection, if it has one.

    Sent by the hub actor in the system lane (never blocked by a connection that does not
    read), so the binding goes before any delivery queued behind it.
    """

    agent_id: str


@attrs.frozen(eq=False)
class Flush(Message[None]):
    """Persist the cursors now, then set ``done`` (if given)."""

    done: trio.Event | None = None


ConnectionMsg = Deliver | CatchUp | Bind | Unbind | Receipts | SendOut | Flush | Evict | ChunkOut


def visible_to(
    core: HubCore, envelope: Envelope, agent_id: str, metadata: SessionMetadata | None = None
) -> bool:
    """Whether a dispatch of ``envelope`` would reach ``agent_id`` (audience and inbound),
    by ``metadata`` (default: the session's entry in the directory)."""
    if envelope.event_type in (EV_CHANNEL_INVITE_ACK, EV_CHANNEL_INVITE_REJECT):
        return False
    if metadata is None:
        entry = core.directory.sessions.get(envelope.session_id)
        if entry is None:
            return False
        metadata = entry.metadata
    if agent_id not in recipients_of(metadata, envelope):
        return False
    if held_back(metadata, envelope, agent_id):
        return False
    if agent_id == envelope.sender_id:
        return True
    rule = core.registry.rule(agent_id)
    return rule is not None and accepts_inbound(rule, core.registry.name_for(envelope.sender_id))


class ConnectionActor(Actor[ConnectionMsg, Refused | None]):
    """Delivers to one endpoint; temporary child of the hub's connection supervisor."""

    def __init__(
        self,
        core: HubCore,
        endpoint: Endpoint,
        routes: Routes,
        *,
        max_outbound_bytes: int = MAX_OUTBOUND_BYTES,
    ) -> None:
        self.core = core
        self.endpoint = endpoint
        #: The connections' tables: this connection binds its identities and releases them.
        self.routes = routes
        self.agents: set[str] = set()
        self.sent: dict[tuple[str, str], int] = {}
        self.acked: dict[tuple[str, str], int] = {}
        self.dirty: set[tuple[str, str]] = set()
        #: Receipts the reader queued in the system lane and this actor has not handled.
        self.receipts_queued: set[tuple[str, str, int]] = set()
        #: Pongs and refusals the reader queued in the system lane, not yet sent.
        self.control_queued = 0
        #: Substantive envelopes notified and not yet receipted (for the inbox ledger).
        self.outstanding: set[tuple[str, str, int]] = set()
        #: Where a delayed cursor flush waits (set by whoever runs the actor).
        self.timers: trio.Nursery | None = None
        self.flush_armed = False
        #: Bytes of encoded replies queued and not yet sent; the reader waits while they are
        #: at ``max_outbound_bytes``.
        self.outbound_bytes = 0
        self.max_outbound_bytes = max_outbound_bytes
        self._room = trio.Event()
        #: Frames travel as objects (a LocalLink): a session's status is sent as it is.
        self.objects = bool(getattr(endpoint, "carries_objects", False))
        #: Per session, the last published status and its wire form (the state dumped,
        #: the metadata left out when this connection sent the same metadata before).
        self.wire_status: dict[str, tuple[SessionStatus, SessionStatus]] = {}
        #: Frames encoded and not yet written, when the endpoint takes batches (else None);
        #: their bytes, and those of them counted in ``outbound_bytes``.
        self._send_texts = getattr(endpoint, "send_texts", None)
        self._outbox: list[str] | None = [] if self._send_texts is not None else None
        self._outbox_bytes = 0
        self._outbox_counted = 0
        #: A reply is being written by its request's task (see :meth:`send_reply`).
        self._replying = False
        #: Frames written without a checkpoint since the last one (see :meth:`_send`).
        self._unyielded = 0
        #: Writes a frame at once if the transport has room (whether it did): in process
        #: only, where frames travel as objects unbatched (see :meth:`notify_now`).
        self._send_nowait: Callable[[Frame], bool] | None = (
            getattr(endpoint, "send_frame_nowait", None)
            if self.objects and self._outbox is None
            else None
        )

    def owns(self, agent_id: str) -> bool:
        return agent_id in self.agents and self.routes.bindings.get(agent_id) is self.ref

    async def handle(self, msg: ConnectionMsg) -> Refused | None:
        # A store that fails must not take the connection down (and every identity bound to
        # it): a bind is refused to whoever asked, anything else is logged (a missed
        # delivery is replayed on the next reconnect, an unsaved cursor saved next flush).
        result: Refused | None = None
        try:
            await self._handle(msg)
        except IdentityInUse as exc:
            result = Refused(exc)  # (only a Bind raises it)
        except StoreError as exc:
            if isinstance(msg, Bind):
                result = Refused(exc)
            else:
                log.warning("connection %s: %s failed: %s", self.endpoint.endpoint_id, msg, exc)
        try:
            await self._after(msg)
        except StoreError as exc:
            log.warning("connection %s: saving cursors failed: %s", self.endpoint.endpoint_id, exc)
        if self._outbox and len(self.ref.mailbox) == 0:
            await self.flush_outbox()
        return result

    @property
    def notifies_now(self) -> bool:
        """Whether a dispatch may notify through :meth:`notify_now` (in process)."""
        return self._send_nowait is not None

    def notify_now(self, envelope: Envelope, agent_id: str) -> bool:
        """Notify ``agent_id`` of a fresh dispatch from the dispatching task, without a
        ``Deliver`` and its scheduler step here; whether it was handled (else tell one).

        Only in process (the transport takes a frame without waiting) and while this actor
        is idle: it waits on an empty mailbox, so nothing it was handed is still to be
        written before this frame, and nothing it does is interrupted (no checkpoint here).
        What it does is what handling the ``Deliver`` would have done.
        """
        send = self._send_nowait
        if send is None or self._replying or not self.ref.mailbox.receiving:
            return False
        if not self.owns(agent_id):
            return False  # (the Deliver is dropped when handled, as for any other)
        session_id = envelope.session_id
        key = (agent_id, session_id)
        if envelope.seq <= self.sent.get(key, 0):
            return True  # already notified: a catch-up overlap
        frame = NotifyFrame(
            envelope=envelope, recipient_id=agent_id, session=self._status(session_id), fresh=True
        )
        # Marked before it is handed over (the client may settle it in the same breath),
        # and unmarked if it was not taken.
        previous = self.sent.get(key)
        self.sent[key] = envelope.seq
        triple = (agent_id, session_id, envelope.seq)
        counted = is_substantive(envelope.event_type)
        if counted:
            self.outstanding.add(triple)
        if send(frame):
            return True
        # The client's buffer is full: the actor writes it, waiting.
        if previous is None:
            del self.sent[key]
        else:
            self.sent[key] = previous
        if counted:
            self.outstanding.discard(triple)
        return False

    async def send_reply(self, out: SendOut) -> None:
        """Send a reply :meth:`reply` made: written by the caller's task when nothing waits
        to be written before it (this actor idle, its mailbox and outbox empty), else
        queued to this actor. Either way it goes out in order with the deliveries: the
        transport writes frames in the order they are handed to it, and the actor is idle
        only while it waits on an empty mailbox (a message handed to it counts as work).

        One such write at a time: while it waits (a peer that does not read), the next
        replies go to the actor. Each caller waiting on its own write would hold its
        request's in-flight slot: once all were held the hub would read nothing more from
        that connection, and a client that sends its requests before reading the answers
        would wait on it forever (until the ping timeout dropped it).
        """
        if self._outbox is None or self._outbox or self._replying or not self.ref.mailbox.receiving:
            await self.ref.tell(out)
            return
        self._replying = True
        try:
            await self.endpoint.send_frame(out.frame)
        except DecodeError as exc:
            log.error("connection %s: not sent: %s", self.endpoint.endpoint_id, exc)
        finally:
            self._replying = False
            self._sent(out.size)

    async def _send(self, frame: Frame | str, size: int = 0) -> None:
        """Send ``frame`` in order with the others: into the outbox when the endpoint takes
        batches, else now. ``size``: bytes of it counted in ``outbound_bytes``.

        Raises:
          DecodeError: the transport cannot carry the frame (nothing was queued).
        """
        outbox = self._outbox
        if outbox is None:
            send_nowait = self._send_nowait
            if send_nowait is not None and not isinstance(frame, str) and send_nowait(frame):
                # In process, with room: no checkpoint, so the actor is idle again sooner, for
                # notify_now; but one every UNYIELDED_FRAMES, so a replay of a long backlog
                # (one message) does not hold the hub for all of it.
                self._sent(size)
                self._unyielded += 1
                if self._unyielded >= UNYIELDED_FRAMES:
                    self._unyielded = 0
                    await trio.lowlevel.checkpoint()
                return
            try:
                await self.endpoint.send_frame(frame)
            finally:
                self._sent(size)
            return
        try:
            text = frame if isinstance(frame, str) else self.endpoint.encode(frame)
        except DecodeError:
            self._sent(size)
            raise
        if not isinstance(text, str):  # (nothing to send, or an endpoint without wire text)
            if text is not None:
                await self.flush_outbox()
                await self.endpoint.send_frame(text)
            self._sent(size)
            return
        outbox.append(text)
        self._outbox_bytes += len(text)
        self._outbox_counted += size
        if self._outbox_bytes >= MAX_BATCH_BYTES:
            await self.flush_outbox()
        else:
            await trio.lowlevel.checkpoint()

    async def flush_outbox(self) -> None:
        """Write what the outbox holds, in order, in as few messages as the transport allows."""
        if not self._outbox:
            return
        assert self._send_texts is not None
        texts, self._outbox = self._outbox, []
        counted, self._outbox_bytes, self._outbox_counted = self._outbox_counted, 0, 0
        try:
            await self._send_texts(texts)
        finally:
            self._sent(counted)

    async def _handle(self, msg: ConnectionMsg) -> None:
        match msg:
            case Deliver(envelope, recipient_id, redelivery):
                if self.owns(recipient_id):
                    sent = await self._notify(
                        envelope, recipient_id, counted=True, fresh=not redelivery
                    )
                    if redelivery and not sent and is_substantive(envelope.event_type):
                        self.core.ledger.done(recipient_id)  # dispatch counted it again
            case CatchUp(recipient_id, session_id, counted, hinted):
                if counted or hinted:  # from then on a missed dispatch queues another one
                    self.core.catch_ups.handled(self.ref.name, recipient_id, session_id)
                if self.owns(recipient_id):
                    await self._replay(
                        recipient_id, session_id, 0, counted=counted, after_sent=hinted
                    )
            case Bind(agent_id, since, welcome, takeover):
                await self._bind(agent_id, since, welcome, takeover)
            case Receipts(frames):
                # No checkpoint of its own: the actor's loop takes one per burst of messages.
                self._receipts(frames)
            case SendOut(frame, control, size):
                if control:
                    self.control_queued -= 1
                try:
                    await self._send(frame, size)
                except DecodeError as exc:
                    # A refusal or an acceptance the transport cannot carry (answers are
                    # replaced by the transport itself): not worth the connection.
                    log.error("connection %s: not sent: %s", self.endpoint.endpoint_id, exc)
            case Unbind(agent_id):
                self._unbind(agent_id)
                await trio.lowlevel.checkpoint()
            case Evict(agent_id, message):
                await self._send(ErrorFrame(code=IdentityInUse.code, message=message))
                await self.flush_outbox()
                log.warning("connection %s: %s", self.endpoint.endpoint_id, message)
                await self.endpoint.aclose()
            case ChunkOut(frame, lane):
                lane.queued -= 1
                if self.owns(frame.recipient_id):
                    await self._send(frame)
            case Flush(done):
                self.flush_armed = False
                await self.flush_outbox()
                await self.flush_cursors()
                if done is not None:
                    done.set()

    async def _after(self, msg: ConnectionMsg) -> None:
        if self.dirty and not self.flush_armed and len(self.ref.mailbox) == 0:
            if not self._arm_flush():
                await self.flush_cursors()

    def _arm_flush(self) -> bool:
        """Save the cursors after ``cursor_flush_interval`` (acks that come meanwhile share
        the write, and the store's commit); False if they are saved at once (interval 0)."""
        interval = self.core.config.cursor_flush_interval
        if interval <= 0 or self.timers is None:
            return False
        if not self.flush_armed:
            self.flush_armed = True
            self.timers.start_soon(self._flush_later, interval)
        return True

    def receipt_now(self, frame: Frame) -> bool:
        """Settle a receipt in the transport's task (in process: the client's, as it sends
        it), without the reader's step and a ``Receipts`` message here; whether it was taken
        (else the reader reads it, as any frame). See :meth:`receipts_now`."""
        if type(frame) is not ReceiptFrame or not self._arm_flush():
            return False
        if self.admit_receipt(frame):
            self._receipts((frame,))
        return True

    def receipts_now(self, frames: tuple[ReceiptFrame, ...]) -> bool:
        """Settle receipts the reader admitted (:meth:`admit_receipt`) in its own task,
        without a ``Receipts`` message and this actor's step; whether it did (else the
        reader queues them here).

        Only while cursors are saved later (``cursor_flush_interval`` > 0): settling a
        receipt then never waits. It changes only what :meth:`_receipts` changes, which the
        actor never holds across a wait (:meth:`flush_cursors` saves the ack it read and
        leaves a cursor acked further meanwhile for the next flush).
        """
        if not self._arm_flush():
            return False
        self._receipts(frames)
        return True

    async def _flush_later(self, delay: float) -> None:
        await trio.sleep(delay)
        try:
            self.ref.mailbox.send_system(Flush())
        except MailboxClosed:
            pass  # the connection ended; serve_endpoint saved the cursors

    async def on_stop(self) -> None:
        self.core.catch_ups.forget(self.ref.name)
        await self.flush_outbox()
        await self.flush_cursors()

    def _status(self, session_id: str) -> SessionStatus | None:
        """The session's published status as this connection sends it with a delivery."""
        entry = self.core.directory.sessions.get(session_id)
        status = entry.status if entry is not None else None
        if status is None or self.objects or entry is None:
            return status
        cached = self.wire_status.get(session_id)
        if cached is not None and cached[0] is status:
            return cached[1]
        state = status.state
        if state is not None and entry.stype is not None:
            state = entry.stype.dump_state(state)
        # Metadata changes rarely and is most of a status's bytes (and decoding time).
        sent = cached[0].metadata if cached is not None else None
        metadata = None if status.metadata is sent else status.metadata
        wire = SessionStatus(metadata=metadata, state=state, last_seq=status.last_seq)
        self.wire_status[session_id] = (status, wire)
        return wire

    async def _notify(
        self,
        envelope: Envelope,
        agent_id: str,
        *,
        counted: bool,
        fresh: bool = False,
        with_status: bool = True,
    ) -> bool:
        """Send ``envelope`` unless it was sent already; whether it was sent now.

        ``fresh``: handed over by the dispatch of its own post (not read from the WAL).
        ``with_status``: with the session's status as this node published it.
        """
        key = (agent_id, envelope.session_id)
        if envelope.seq <= self.sent.get(key, 0):
            return False  # already notified: a re-dispatch after a crash, or a catch-up overlap
        self.sent[key] = envelope.seq
        if is_substantive(envelope.event_type):
            self.outstanding.add((agent_id, envelope.session_id, envelope.seq))
            if not counted:
                rule = self.core.registry.rule(agent_id)
                if rule is not None:
                    self.core.ledger.add(agent_id, rule.limits.inbox)
        status = self._status(envelope.session_id) if with_status else None
        frame = NotifyFrame(envelope=envelope, recipient_id=agent_id, session=status, fresh=fresh)
        try:
            try:
                await self._send(frame)
            except DecodeError:
                if status is None:
                    raise
                # Too big for a frame with the status (the envelope is near the limit): sent
                # without, the client asks the hub; the next status carries the metadata.
                self.wire_status.pop(envelope.session_id, None)
                await self._send(attrs.evolve(frame, session=None))
        except DecodeError as exc:
            # This transport cannot carry it (a WAL written before the hub checked what it
            # admits, say). Crashing would only bring it back with the next replay, forever:
            # it is skipped (the mark above stays), as a dead letter.
            self._undeliverable(envelope, agent_id, exc)
        return True

    def _undeliverable(self, envelope: Envelope, agent_id: str, exc: DecodeError) -> None:
        log.error(
            "connection %s: envelope seq %d of session %s cannot be delivered to %s: %s",
            self.endpoint.endpoint_id,
            envelope.seq,
            envelope.session_id,
            agent_id,
            exc,
        )
        triple = (agent_id, envelope.session_id, envelope.seq)
        if triple in self.outstanding:
            self.outstanding.discard(triple)
            self.core.ledger.done(agent_id)
        self.core.dead_letters(
            DeadLetter(message=envelope, reason="undeliverable", mailbox=agent_id)
        )
        self.core.audit(
            "delivery_failed",
            agent_id=agent_id,
            session_id=envelope.session_id,
            seq=envelope.seq,
            error=str(exc)[:500],
        )

    async def _replay(
        self, agent_id: str, session_id: str, since: int, *, counted: bool, after_sent: bool = False
    ) -> None:
        """Notify ``agent_id`` of every envelope of the session after its marks (``counted``
        or ``after_sent``: after what was sent too).

        In a cluster, a session this node does not serve is another node's: what it may see
        is decided by the metadata in the store, not by this node's (maybe stale) entry.
        """
        core = self.core
        key = (agent_id, session_id)
        start = max(
            since, self.acked.get(key, 0), self.sent.get(key, 0) if counted or after_sent else 0
        )
        metadata: SessionMetadata | None = None
        cluster = core.cluster
        if cluster is not None and cluster.routes and not cluster.serves(session_id):
            metadata = await core.store.get_session(session_id)
            if metadata is None:
                return
        for envelope in await core.store.read(session_id, since=start):
            if visible_to(core, envelope, agent_id, metadata):
                # (Another node's session: this node's status of it may be stale, so none
                # goes with it; the client asks for the session when it needs it.)
                await self._notify(
                    envelope, agent_id, counted=counted, with_status=metadata is None
                )

    def reply(self, frame: Frame) -> SendOut | None:
        """A reply to queue, encoded now and counted in the outbound bytes (None: nothing
        can be sent for it). Whoever queues it must send it to this actor."""
        out = self.endpoint.encode(frame)
        if out is None:
            return None
        size = len(out) if isinstance(out, str) else 0
        self.outbound_bytes += size
        return SendOut(out, size=size)

    def _sent(self, size: int) -> None:
        if size:
            self.outbound_bytes -= size
            if self.outbound_bytes < self.max_outbound_bytes:
                self._room.set()

    @property
    def outbound_full(self) -> bool:
        """Whether ``max_outbound_bytes`` of replies wait for the client."""
        return self.outbound_bytes >= self.max_outbound_bytes

    async def wait_outbound_room(self) -> None:
        """Return once fewer than ``max_outbound_bytes`` of replies wait for the client."""
        while self.outbound_bytes >= self.max_outbound_bytes:
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()
        await trio.lowlevel.checkpoint()

    def _claim(self, agent_id: str, takeover: bool) -> None:
        """Make sure no other live connection holds ``agent_id`` (or take it, with a key).

        A connection whose transport is closed (the client went away and the hub has not
        torn the connection down yet) holds nothing: a reconnecting client re-binds at once.

        Raises:
          IdentityInUse: another live connection holds the identity and ``takeover`` is off.
        """
        core = self.core
        previous = self.routes.bindings.get(agent_id)
        if previous is None or previous is self.ref:
            return
        holder: ConnectionActor | None = core.connections.get(previous.name.removeprefix("conn:"))
        if holder is None or not previous.alive or not holder.endpoint.alive:
            if holder is not None:
                holder.agents.discard(agent_id)
            return
        name = core.registry.name_for(agent_id)
        if not takeover:
            raise IdentityInUse(
                f"agent {name!r} ({agent_id}) is bound to another live connection "
                f"({holder.endpoint.endpoint_id}); close that one first, or bind with the "
                "identity's API key to take it over (a dropped connection is let go within "
                "the hub's ping interval + ping timeout)"
            )
        # From now on the old connection cannot act for the identity, whatever it sends.
        holder.agents.discard(agent_id)
        message = (
            f"agent {name!r} ({agent_id}) was taken over by another connection that "
            "presented its key; this connection is closed"
        )
        try:
            previous.mailbox.send_system(Evict(agent_id, message))
        except MailboxClosed:
            pass  # it is ending anyway

    async def _bind(
        self,
        agent_id: str,
        since: dict[str, int] | None,
        welcome: Frame | None,
        takeover: bool = False,
    ) -> None:
        core = self.core
        cursors = await core.store.load_cursors(agent_id)
        # After the read, with no await before the binding: two binds cannot both pass.
        self._claim(agent_id, takeover)
        for session_id, seq in cursors.items():
            key = (agent_id, session_id)
            # (Not below an ack settled meanwhile, by a receipt for an earlier binding.)
            self.acked[key] = max(seq, self.acked.get(key, 0))
        previous = self.routes.bind(agent_id, self.ref)
        self.agents.add(agent_id)
        if previous is not self.ref:
            core.ledger.reset(agent_id)
        if core.cluster is not None:
            core.cluster.bound(agent_id, since is not None)  # where hints find it
        if welcome is not None:
            await self._send(welcome)
        if since is None:
            # No replay asked: what was already sent or acked is the starting mark.
            for entry in core.directory.of_agent(agent_id):
                key = (agent_id, entry.session_id)
                self.sent[key] = max(self.sent.get(key, 0), entry.last_seq)
            return
        for entry in core.directory.of_agent(agent_id):
            key = (agent_id, entry.session_id)
            self.sent.pop(key, None)
            floor = max(since.get(entry.session_id, 0), self.acked.get(key, 0))
            # Sessions not loaded since the hub started (closed ones, mostly) publish no
            # last_seq: ask the store for it rather than read their whole WAL.
            last = entry.last_seq or await core.store.last_seq(entry.session_id)
            if last > floor:
                await self._replay(agent_id, entry.session_id, floor, counted=False)

    def admit_receipt(self, frame: ReceiptFrame) -> bool:
        """Whether a receipt can change anything, and is not queued already (the reader asks).

        Receipts bypass the request budget and travel in the unbounded system lane, so the
        reader lets through only those that settle a delivery this connection sent and that
        is not acked yet, once each: a client cannot grow the hub's memory with receipts.
        """
        triple = (frame.recipient_id, frame.session_id, frame.seq)
        key = triple[:2]
        if triple in self.receipts_queued or frame.recipient_id not in self.agents:
            return False
        if not 0 < frame.seq <= self.sent.get(key, 0):
            return False
        if triple not in self.outstanding and frame.seq <= self.acked.get(key, 0):
            return False
        self.receipts_queued.add(triple)
        return True

    def admit_control(self) -> bool:
        """Whether the reader may queue one more pong or refusal (at most MAX_CONTROL_QUEUED)."""
        if self.control_queued >= MAX_CONTROL_QUEUED:
            return False
        self.control_queued += 1
        return True

    def _receipts(self, frames: tuple[ReceiptFrame, ...]) -> None:
        """Settle each receipt's delivery; advance each cursor once, to its highest ack."""
        highest: dict[tuple[str, str], int] = {}
        for frame in frames:
            agent_id, session_id, seq = frame.recipient_id, frame.session_id, frame.seq
            self.receipts_queued.discard((agent_id, session_id, seq))
            if agent_id not in self.agents or not session_id or seq <= 0:
                continue
            if (agent_id, session_id, seq) in self.outstanding:
                self.outstanding.discard((agent_id, session_id, seq))
                self.core.ledger.done(agent_id)
            if frame.status != "ack":
                self.core.audit(
                    "delivery_nacked",
                    agent_id=agent_id,
                    session_id=session_id,
                    seq=seq,
                    reason=frame.reason,
                )
                continue
            key = (agent_id, session_id)
            if seq > highest.get(key, 0):
                highest[key] = seq
        for key, seq in highest.items():
            if seq > self.acked.get(key, 0):
                self.acked[key] = seq
                self.dirty.add(key)

    async def flush_cursors(self) -> None:
        """Save the cursors acked since the last flush, in one write (each in its own, they
        took one commit each, one after the other: a connection acking 16 sessions was
        busy for 16 commits, and its deliveries waited)."""
        registry = self.core.registry
        flushed = [(key, self.acked[key]) for key in sorted(self.dirty)]
        cursors = [(agent, session, seq) for (agent, session), seq in flushed if agent in registry]
        if cursors:
            await self.core.store.save_cursors(cursors)
        for key, seq in flushed:
            # Only once saved: a flush that failed leaves them for the next one, and so
            # does an ack settled while this one was being saved (see receipts_now).
            if self.acked.get(key) == seq:
                self.dirty.discard(key)
                self._forget_if_done(key)

    def _forget_if_done(self, key: tuple[str, str]) -> None:
        """Drop the marks of a session that ended and whose every envelope was acked.

        The store keeps the cursor, so a later replay still starts after it; without this a
        long-lived connection would hold two marks for every session it ever saw.
        """
        entry = self.core.directory.sessions.get(key[1])
        if (
            entry is not None
            and entry.metadata.state.terminal
            and self.acked.get(key, 0) >= entry.last_seq > 0
        ):
            self.acked.pop(key, None)
            self.sent.pop(key, None)
            self.wire_status.pop(key[1], None)

    def _unbind(self, agent_id: str) -> None:
        """Drop ``agent_id``'s binding if it is this connection's (it was unregistered).

        The identity stays in ``agents`` (what the connection was bound to, for the checks
        of its requests, which then find no such agent); ``owns`` is false from now on.
        """
        if self.routes.release(agent_id, self.ref) and self.core.cluster is not None:
            self.core.cluster.released(agent_id)

    def release(self) -> None:
        """Drop this connection's bindings (it is closing)."""
        cluster = self.core.cluster
        for agent_id in self.agents:
            if self.routes.release(agent_id, self.ref):
                self.core.ledger.reset(agent_id)
                if cluster is not None:
                    cluster.released(agent_id)
        self.agents.clear()


@attrs.define
class Caller:
    """Who calls over a connection: its actor (with the identities bound to it) and ref.

    The hub checks a request's declared ``acting`` identity and ``owner`` against it
    (``Hub.call``); in process there is no caller (the hub's owner is trusted).
    """

    actor: ConnectionActor
    ref: ActorRef[Any, Any]

    @property
    def agents(self) -> set[str]:
        """The identities bound to this connection."""
        return self.actor.agents
