"""Serving one endpoint: its connection actor plus a reader for the frames it sends.

The reader never delivers anything itself: receipts and replies go through the connection
actor (the endpoint's only writer). The reader never waits on anything that may wait on the
client: receipts and pongs travel in the actor's system lane (never blocked), and hellos and
requests (posts among them) run in other tasks (a request in one of the connection's
:class:`Workers`). Otherwise a client busy acking a long replay could deadlock with the
connection actor blocked sending it that replay. A connection serves at most
``MAX_IN_FLIGHT`` requests at once, so a flood from one client cannot starve the others;
and while ``MAX_OUTBOUND_BYTES`` of its replies wait unsent (it does not read them), no more
of its requests are read: its memory is bounded in bytes, and TCP pushes back on it. (Over a
WebSocket, frames handed to the connection's writer are counted as sent: the bound is that
plus the writer's ``MAX_QUEUED_BYTES``, and one outbox or reply past it.)

A post waiting for room in an inbox (``overflow="block"``) gives its in-flight slot back
while it waits, for one of the connection's ``MAX_WAITING_POSTS`` waiting slots; past those,
a post that would wait is refused with ``InboxFull`` at once. The reader never stops for
waiting posts: the receipts that make the room may come on this very connection, from an
identity bound to it (one client, several identities), behind the posts.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from .._errors import AuthError, NetworkError, NotFoundError, StoreError
from ..actors import ActorRef, spawn
from ..api import Endpoint
from ..mailbox import Mailbox
from ..model import (
    AcceptFrame,
    ChunkFrame,
    ErrorFrame,
    Frame,
    HelloFrame,
    InvalidFrame,
    PingFrame,
    PongFrame,
    ReceiptFrame,
    RequestFrame,
    SendFrame,
    WelcomeFrame,
)
from ._connection import Bind, Caller, ConnectionActor, Flush, Receipts, SendOut
from ._room import REQUEST_SLOT, ConnectionSlots, RequestSlot
from ._routes import Routes
from ._rpc import error_code, error_details, handle_request
from ._rules import TokenBucket

if TYPE_CHECKING:
    from ._hub import Hub

log = logging.getLogger("troupe.hub.connections")

MAX_IN_FLIGHT = 64
#: Posts of one connection that may wait for room in inboxes at once, besides the requests
#: in flight; the next one that would wait is refused with ``InboxFull``.
MAX_WAITING_POSTS = 256
#: How long a closing connection waits for its cursors to be saved.
FLUSH_TIMEOUT_S = 5.0
#: Requests (posts, RPCs, hellos, pings) a connection may send per second, sustained and in a
#: burst; beyond that the hub stops reading from it for a while (backpressure on that
#: connection only). Receipts are not counted.
FRAMES_PER_SECOND = 5000
FRAME_BURST = 10000


def error_frame(
    exc: Exception,
    *,
    request_id: str = "",
    envelope_id: str | None = None,
    hub: Hub | None = None,
) -> ErrorFrame:
    return ErrorFrame(
        code=error_code(exc),
        message=str(exc),
        envelope_id=envelope_id,
        request_id=request_id,
        details=None if hub is None else error_details(exc, hub),
    )


async def serve_endpoint(
    hub: Hub,
    endpoint: Endpoint,
    routes: Routes,
    *,
    task_status: trio.TaskStatus[ActorRef[Any, Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until the client closes the endpoint (or the hub shuts down)."""
    core = hub.core
    actor = ConnectionActor(core, endpoint, routes)
    slots = ConnectionSlots(MAX_IN_FLIGHT, MAX_WAITING_POSTS)
    flood = TokenBucket(FRAMES_PER_SECOND * 60, FRAME_BURST, trio.current_time())
    try:
        async with trio.open_nursery() as nursery:
            mailbox: Mailbox[Any] = Mailbox(core.config.client_mailbox, "block")
            actor.timers = nursery
            ref = await spawn(nursery, actor, mailbox=mailbox, name=f"conn:{endpoint.endpoint_id}")
            routes.attach(endpoint.endpoint_id, actor, direct=actor.notifies_now)
            task_status.started(ref)
            workers = Workers(nursery, hub, Caller(actor, ref))
            frames = endpoint.frames()
            # In process, the client's receipts are settled as it sends them, while this
            # reader waits (see LocalLink); otherwise, and for other frames, read below.
            take_directly = getattr(endpoint, "take_directly", None)
            if take_directly is not None:
                take_directly(actor.receipt_now)
            try:
                async for item in frames:
                    if isinstance(item, list):
                        # A batch: its receipts reach the actor as one message (one cursor
                        # advance per session), the rest one by one, as if sent alone.
                        receipts = tuple(
                            f for f in item if type(f) is ReceiptFrame and actor.admit_receipt(f)
                        )
                        if receipts and not actor.receipts_now(receipts):
                            ref.mailbox.send_system(Receipts(receipts))
                        batch = [f for f in item if type(f) is not ReceiptFrame]
                    else:
                        batch = [item]
                    for frame in batch:
                        # Receipts answer the hub's own deliveries (bounded by them), so
                        # they do not spend the budget: it limits what a client asks.
                        if not isinstance(frame, ReceiptFrame) and not flood.take(
                            trio.current_time()
                        ):
                            # Over its budget: this connection waits; the others are not
                            # read by this task, so they do not.
                            await trio.sleep(flood.wait_for_token())
                            flood.take(trio.current_time())
                        if (
                            type(frame) is RequestFrame
                            and not actor.outbound_full
                            and (slot := slots.take_nowait()) is not None
                        ):
                            # The common case, as _on_frame does it, without its coroutine.
                            workers.run(frame, slot)
                        else:
                            await _on_frame(hub, actor, ref, frame, nursery, slots, workers)
            finally:
                if take_directly is not None:
                    take_directly(None)
                # A reader cancelled mid-frame closes its generator now, not whenever the
                # garbage collector gets to it (maybe after the run: a ResourceWarning).
                aclose = getattr(frames, "aclose", None)
                if aclose is not None:
                    await aclose()
            # The client closed. The receipts it sent are in the actor's system lane, ahead
            # of this flush: persist every ack it got to send before the connection ends.
            flushed = trio.Event()
            ref.mailbox.send_system(Flush(flushed))
            with trio.move_on_after(FLUSH_TIMEOUT_S):
                await flushed.wait()
            nursery.cancel_scope.cancel()
    finally:
        routes.detach(endpoint.endpoint_id, actor)
        # The actor is gone (this task is its only user now): save what it was acked but
        # had not saved yet, also when the hub is closing.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + FLUSH_TIMEOUT_S
            await actor.flush_cursors()
        actor.release()
        with trio.CancelScope(shield=True):
            await endpoint.aclose()


async def _on_frame(
    hub: Hub,
    actor: ConnectionActor,
    ref: ActorRef[Any, Any],
    frame: Frame,
    nursery: trio.Nursery,
    slots: ConnectionSlots,
    workers: Workers,
) -> None:
    match frame:
        case ReceiptFrame():
            if actor.admit_receipt(frame) and not actor.receipts_now((frame,)):
                ref.mailbox.send_system(Receipts((frame,)))
        case PingFrame(nonce=nonce):
            if actor.admit_control():
                ref.mailbox.send_system(SendOut(PongFrame(nonce=nonce), control=True))
        case HelloFrame():
            if actor.outbound_full:
                await actor.wait_outbound_room()
            nursery.start_soon(_hello, hub, ref, frame)
        case SendFrame():
            if actor.outbound_full:
                await actor.wait_outbound_room()
            slot = slots.take_nowait() or await slots.take()
            nursery.start_soon(_send, hub, actor, ref, frame, slot)
        case RequestFrame():
            # A client that does not read its replies is not read either.
            if actor.outbound_full:
                await actor.wait_outbound_room()
            slot = slots.take_nowait() or await slots.take()
            workers.run(frame, slot)
        case ChunkFrame(chunk=chunk, recipient_id=""):
            # Best effort and unanswered; forwarding never waits, so the reader does it.
            if chunk.sender_id not in actor.agents:
                hub.core.streams.refused += 1
            else:
                try:
                    hub.stream_chunk(chunk)
                except NetworkError as exc:
                    log.debug("chunk from %s refused: %s", chunk.sender_id, exc)
        case InvalidFrame(reason=reason, request_id=request_id):
            error = ErrorFrame(code="bad_frame", message=reason, request_id=request_id)
            if actor.admit_control():
                ref.mailbox.send_system(SendOut(error, control=True))
        case _:
            # In the system lane, as for undecodable frames: a blocking tell could hold
            # the reader while the actor waits on this client.
            refusal = ErrorFrame(
                code="bad_frame",
                message=f"a client may not send {type(frame).__name__}",
                request_id=getattr(frame, "request_id", ""),
            )
            if actor.admit_control():
                ref.mailbox.send_system(SendOut(refusal, control=True))


async def _hello(hub: Hub, ref: ActorRef[Any, Any], frame: HelloFrame) -> None:
    core = hub.core
    try:
        await hub.learn_agent(frame.name, fresh=True)  # a cluster's (nothing otherwise)
        record = core.registry.resolve(frame.name)
        passport = record.passport
        claim_passport = passport
        scheme = frame.auth_scheme or passport.auth.scheme
        await hub.auth.get(scheme, agent=passport.name).validate(claim_passport, frame.auth_claim)
    except (NotFoundError, AuthError, StoreError) as exc:
        await ref.tell(SendOut(error_frame(exc, request_id=frame.request_id)))
        return
    assert passport.agent_id is not None
    welcome = WelcomeFrame(
        endpoint_id=actor_endpoint_id(ref),
        hub_time=core.now_iso(),
        agent_id=passport.agent_id,
        request_id=frame.request_id,
    )
    # A claim that a key proved may take the identity from another live connection; an
    # anonymous one ("none") may not.
    takeover = (scheme or "none") != "none"
    try:
        await ref.ask(Bind(passport.agent_id, frame.since, welcome, takeover))
    except (NetworkError, StoreError) as refused:
        await ref.tell(SendOut(error_frame(refused, request_id=frame.request_id)))


def actor_endpoint_id(ref: ActorRef[Any, Any]) -> str:
    return ref.name.removeprefix("conn:")


class Workers:
    """The tasks that serve a connection's requests: each runs one at a time, and waits for
    the next one when it is done, instead of ending.

    A task per request cost its start and its end (a coroutine, a task, a copy of the
    context: ~4.5 µs of the ~7 a trivial task takes, against ~2.5 to wake a waiting one).
    There are as many as the most requests served at once (``MAX_IN_FLIGHT``, and the posts
    waiting for room, which keep theirs); they end with the connection.
    """

    __slots__ = ("_caller", "_hub", "_idle", "_nursery", "_queue")

    def __init__(self, nursery: trio.Nursery, hub: Hub, caller: Caller) -> None:
        self._nursery = nursery
        self._hub = hub
        self._caller = caller
        self._queue: deque[tuple[RequestFrame, RequestSlot]] = deque()
        self._idle: list[trio.lowlevel.Task] = []

    def run(self, frame: RequestFrame, slot: RequestSlot) -> None:
        """Serve ``frame`` (holding ``slot``) in a waiting task, or in a new one."""
        self._queue.append((frame, slot))
        if self._idle:
            trio.lowlevel.reschedule(self._idle.pop())
        else:
            self._nursery.start_soon(self._work)

    async def _work(self) -> None:
        queue, idle = self._queue, self._idle
        task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            while queue:
                frame, slot = queue.popleft()
                await _request(self._hub, self._caller, frame, slot)
                del frame, slot  # (an idle worker holds no request: posts may be large)
            idle.append(task)
            await trio.lowlevel.wait_task_rescheduled(abort)


async def _request(hub: Hub, caller: Caller, frame: RequestFrame, slot: RequestSlot) -> None:
    # In this task only, for this request only (a worker serves the next one after it): a
    # post_envelope that waits for room trades it.
    token = REQUEST_SLOT.set(slot)
    try:
        # Also here, not only in the reader: the requests read before the client stopped
        # reading do not all add their answers to what already waits.
        if caller.actor.outbound_full:
            await caller.actor.wait_outbound_room()
        out = caller.actor.reply(await handle_request(hub, caller, frame))
        if out is not None:
            await caller.actor.send_reply(out)
    finally:
        slot.release()
        REQUEST_SLOT.reset(token)


async def _send(
    hub: Hub,
    actor: ConnectionActor,
    ref: ActorRef[Any, Any],
    frame: SendFrame,
    slot: RequestSlot,
) -> None:
    REQUEST_SLOT.set(slot)  # in this task only: a post that waits for room trades it
    try:
        if frame.envelope.sender_id not in actor.agents:
            reply: Frame = ErrorFrame(
                code="access_denied",
                message=f"this connection is not bound to agent {frame.envelope.sender_id!r}",
                request_id=frame.request_id,
            )
        else:
            try:
                accepted = await hub.post(frame.envelope)
            except (NetworkError, StoreError) as exc:
                reply = error_frame(exc, request_id=frame.request_id, hub=hub)
            else:
                reply = AcceptFrame(
                    envelope_id=accepted.envelope_id,
                    seq=accepted.seq,
                    request_id=frame.request_id,
                )
        out = actor.reply(reply)
        if out is not None:
            await actor.send_reply(out)
    finally:
        slot.release()
