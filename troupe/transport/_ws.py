"""WebSocket transport (websockets, driven from trio): JSON text messages, frames or batches.

A message is one frame (a JSON object tagged by ``kind``) or a batch: a JSON array of frames,
in order, which the reader hands on as a list (see ``decode_frames``). Frames queued at once
travel as one batch, never an array inside an array: the hub's connection actor sends what it
drained from its mailbox in one go (:meth:`_WsEnd.send_texts`), and frames sent while another
is being written (receipts from several sessions, concurrent posts, the answers to them) queue
and go out together as the next message. A batch never exceeds the receiving end's limit: a
frame too large to share a message goes alone.

Each connection has a writer task (:meth:`_WsEnd.start_writer`). A frame sent alone (nothing
queued or being written, and the last message read was not a batch: a lone RPC) is written
by its sender at once; otherwise it is queued and its sender goes on without waiting for the
write, so the frames of the tasks that run together share a message (a stream of posts went
from ~2.3 frames per message to ~6, and the hub's scheduler steps per post from 12 to 9).
A sender waits only while more than ``MAX_QUEUED_BYTES`` are queued (a peer that does not
read): that, the hub's outbound bytes and TCP are the backpressure. A close writes what was
queued before it (within the close timeout).

Server: :func:`serve_ws` accepts connections and attaches each to the hub as an endpoint;
client: :class:`WsLink` makes :class:`WsLinkClient` connections for ``HubClient``.

Limits and liveness:

- A frame to the hub may be at most ``MAX_FRAME_BYTES`` (1 MiB + 64 KiB: the largest
  envelope the hub admits, plus framing) of JSON (a client refuses
  to send a larger one with ``DecodeError``). A larger one, malformed JSON
  or an unknown ``kind`` is answered with ``ErrorFrame(code="bad_frame")`` and the
  connection keeps serving. Messages beyond ``HARD_LIMIT_BYTES`` (8 MiB) make the protocol
  close the connection (close code 1009).
- Both ends ping every ``ping_interval`` seconds and drop a peer that has not answered
  within ``ping_timeout``; the hub then releases that connection's bindings. A closing
  handshake may take ``CLOSE_TIMEOUT`` seconds; then the TCP stream is cut.

Connections (the server):

- At most ``max_connections`` (``MAX_CONNECTIONS``) at once, and at most
  ``max_connections_per_address`` (``MAX_CONNECTIONS_PER_ADDRESS``) from one IP address,
  counted from the TCP accept to the close of the socket (handshakes included). One more is
  closed at once, before anything is read from it; the client sees the connection close
  during its handshake and retries with backoff.
- The opening handshake (TLS included) must finish within ``handshake_timeout``
  (``HANDSHAKE_TIMEOUT`` seconds); a peer that closes or drops the TCP connection during it
  is let go at once (its socket closed), not when the timeout expires.
- Refusals and failed accepts (``EMFILE``: out of file descriptors) are not logged one by
  one: one line per ``FLOOD_LOG_INTERVAL`` seconds says how many there were and why.

The connections are driven by :mod:`._wsdriver`, a trio driver of the ``websockets``
package's sans-I/O protocol with no task of its own: a connection is read in the task that
consumes its frames (:meth:`_WsEnd.frames`: the hub's reader, the client's), which answers
pings as it parses; it is written under one lock, behind which pongs, pings and close frames
queue while a send is under way. Until issue 15 item 5 the driver was trio-websocket (with
wsproto, a reader task and a channel per connection); measured in the same run, interleaved,
this one costs 181 instead of 246 µs of CPU per RPC and 213 instead of 263 µs per streamed
envelope (2026-12-07). trio-websocket remains the tests' and benchmarks' independent client
and server.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import ssl
import urllib.parse
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio
from websockets.uri import parse_uri

from .._errors import DecodeError
from ..model import (
    MAX_ENVELOPE_BYTES,
    Frame,
    InvalidFrame,
    ResponseFrame,
    batch_overhead,
    decode_frames,
    encode_batch,
    encode_frame,
)
from ._wsdriver import WebSocket, WebSocketClosed, accept, connect

if TYPE_CHECKING:
    from ..api import LocalHub

log = logging.getLogger("troupe.transport.ws")

#: Room for a frame's own fields around the largest envelope (kind, request id, op, ...).
FRAME_OVERHEAD_BYTES = 64 << 10
#: The largest frame the hub reads: any envelope the hub admits (``MAX_ENVELOPE_BYTES``),
#: plus its framing, so what is accepted in process can also be posted over the wire.
MAX_FRAME_BYTES = MAX_ENVELOPE_BYTES + FRAME_OVERHEAD_BYTES
HARD_LIMIT_BYTES = 8 << 20
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
#: Seconds a closing handshake may take before the connection is cut.
CLOSE_TIMEOUT = 2.0
#: Bytes of frames a connection queues for its writer; beyond that, senders wait for room.
MAX_QUEUED_BYTES = 1 << 20
#: Connections the server holds at once (handshakes included), in total and per IP address.
MAX_CONNECTIONS = 512
MAX_CONNECTIONS_PER_ADDRESS = 64
#: Seconds a client has, from the TCP accept, to finish the opening handshake (TLS included).
HANDSHAKE_TIMEOUT = 5.0
#: Refused connections and failed accepts are summed up in one log line per this many seconds.
FLOOD_LOG_INTERVAL = 10.0
#: accept(2) errors that say the process or system is out of a resource (trio's own list).
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: How long the accept loop waits after one of those.
_ACCEPT_RETRY_S = 0.1


def _size(message: str | bytes) -> int:
    """The message's size in bytes (a text message's UTF-8 length)."""
    if isinstance(message, bytes) or len(message) * 4 <= MAX_FRAME_BYTES:
        return len(message)  # (a short text's exact size does not matter: it fits)
    return len(message.encode())


def _decode(message: str | bytes, limit: int) -> Frame | list[Frame]:
    """A frame or a batch of them (bad ones as :class:`InvalidFrame`), or an InvalidFrame
    saying why the message is neither."""
    size = _size(message)
    if size > limit:
        return InvalidFrame(reason=f"frame of {size} bytes exceeds the {limit}-byte limit")
    try:
        return decode_frames(message)
    except DecodeError as exc:
        return InvalidFrame(reason=str(exc), request_id=_request_id_of(message))


class _Batch:
    """Frames waiting to go out as one message."""

    __slots__ = ("size", "texts")

    def __init__(self, text: str, size: int) -> None:
        self.texts = [text]
        self.size = size


def _request_id_of(message: str | bytes) -> str:
    """Best effort: the ``request_id`` of a frame that did not decode, to echo it back."""
    try:
        # orjson, as the decoder: json.loads recurses per nesting level and raised
        # RecursionError on 1000 nested arrays, which ended the connection's reader.
        data = orjson.loads(message)
    except orjson.JSONDecodeError:
        return ""
    value = data.get("request_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


class _WsEnd:
    """Frames over one WebSocket connection (both ends use it)."""

    def __init__(self, ws: WebSocket, endpoint_id: str, *, remote: str = "") -> None:
        self._ws = ws
        self._endpoint_id = endpoint_id
        #: The peer's address, for logs.
        self.remote = remote
        self.closed = trio.Event()
        #: A task is writing (the writer, or a sender writing its own frame).
        self._writing = False
        #: Frames waiting to be written, one message per batch, in order; their bytes.
        self._queued: deque[_Batch] = deque()
        self._queued_bytes = 0
        #: The writer task while it waits for frames (None: it is not waiting).
        self._writer: trio.lowlevel.Task | None = None
        #: Whether a writer task runs for this connection (see :meth:`start_writer`).
        self._has_writer = False
        #: Senders waiting for the queue to shrink, and for it to empty (a close).
        self._room = trio.lowlevel.ParkingLot()
        self._drained = trio.lowlevel.ParkingLot()
        #: The last message read carried one frame (or none was read yet): the peer is not
        #: sending batches, so the answers are not expected in bursts either.
        self._lone = True

    @property
    def endpoint_id(self) -> str:
        return self._endpoint_id

    @property
    def alive(self) -> bool:
        """Whether the connection may still carry frames (no close seen on either side)."""
        return self._ws.open and not self.closed.is_set()

    #: The largest message the other end accepts.
    send_limit = HARD_LIMIT_BYTES
    #: The largest message this end decodes (a larger one becomes an InvalidFrame).
    receive_limit = MAX_FRAME_BYTES

    def encode(self, frame: Frame) -> str | None:
        """The text to send for ``frame`` (None: nothing can be sent for it).

        A frame over ``send_limit`` is not sent (the peer would close the connection, and
        a retried request would close it again and again): see :meth:`_oversized`.
        """
        try:
            text = encode_frame(frame)
        except DecodeError as exc:
            text = self._unencodable(frame, exc)
        size = _size(text)
        if size > self.send_limit:
            return self._oversized(frame, size)
        return text

    async def send_frame(self, frame: Frame | str) -> None:
        """Send a frame (or the text :meth:`encode` made of one); silently dropped once the
        connection is closed.

        Alone (nothing being written or queued, and the peer not sending batches), the frame is
        written at once in the caller's task: a lone request or answer waits for nobody.
        Otherwise it is queued behind what is, joining the last message while the peer's
        limit allows, and the call returns without waiting for the write: the connection's
        writer (:meth:`start_writer`) writes the queue, so the frames of tasks that run
        together (posts answered at once, receipts, replies, deliveries) travel in one
        message, and their senders do not wait on the socket. While more than
        ``MAX_QUEUED_BYTES`` wait to be written (a peer that does not read), a sender waits
        for room; cancelled while it waits, its frame stays queued and goes all the same.
        """
        text = self.encode(frame) if not isinstance(frame, str) else frame
        if text is None:
            await trio.lowlevel.checkpoint()
            return
        if not self._writing and not self._queued and (not self._has_writer or self._lone):
            # Its own frame only, where a writer task runs: what others queue meanwhile is
            # the writer's (a sender cancelled while writing it would lose it, and a sender
            # would write for as long as others kept queueing).
            await self._write_now(text, own=0 if self._has_writer else None)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        self._enqueue(text)
        await self._queued_now()

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send encoded frames (from :meth:`encode`) in order, in as few messages as the
        peer's limit allows, as :meth:`send_frame` sends one."""
        await trio.lowlevel.checkpoint_if_cancelled()
        before = len(self._queued)
        for text in texts:
            self._enqueue(text)
        if not self._writing and (not self._has_writer or (self._lone and not before)):
            # (With a writer task, only when the queue held nothing of others': this task
            # writes the batches it made, and leaves what is queued meanwhile to the writer.)
            await self._write_now(None, own=len(self._queued) if self._has_writer else None)
            return
        await self._queued_now()

    def _enqueue(self, text: str) -> None:
        """Queue one encoded frame: into the last message if the peer's limit allows."""
        size = _size(text)
        last = self._queued[-1] if self._queued else None
        if (
            last is not None
            and last.size + size + batch_overhead(len(last.texts) + 1) <= self.send_limit
        ):
            last.texts.append(text)
            last.size += size
        else:
            self._queued.append(_Batch(text, size))
        self._queued_bytes += size

    async def _queued_now(self) -> None:
        """What a sender does once its frames are queued: hand them to the writer (and wait
        while the queue is over ``MAX_QUEUED_BYTES``), or without one, see them written."""
        if not self._has_writer:
            await self._until_written()  # (a sender writes, the others wait for it)
            return
        self._wake_writer()
        while self._queued_bytes > MAX_QUEUED_BYTES and self._has_writer and self.alive:
            await self._room.park()

    async def _write_now(self, first: str | None, *, own: int | None = None) -> None:
        """Write ``first``, then the first ``own`` queued batches (the caller's own) in this
        task; ``own`` None: everything queued, and what is queued meanwhile (the writer
        task, or a sender on a connection without one)."""
        self._writing = True
        try:
            if first is not None:
                await self._send_message(first)
            await self._write_queue(own)
        finally:
            self._writing = False
            if self._queued:
                self._wake_writer()  # (cancelled with frames queued: the writer's now)
            if self._drained:
                self._drained.unpark_all()

    async def _write_queue(self, limit: int | None = None) -> None:
        """Write the queued batches (the first ``limit`` of them), one message each (the
        caller is the one writing)."""
        while self._queued and (limit is None or limit > 0):
            if limit is not None:
                limit -= 1
            batch = self._queued.popleft()  # (out of the queue: nothing joins it any more)
            self._queued_bytes -= batch.size
            if self._room and self._queued_bytes <= MAX_QUEUED_BYTES:
                self._room.unpark_all()
            await self._send_message(encode_batch(batch.texts))

    def _wake_writer(self) -> None:
        """Reschedule the writer task if it waits for frames."""
        writer = self._writer
        if writer is not None:
            self._writer = None
            trio.lowlevel.reschedule(writer)

    def start_writer(self, nursery: trio.Nursery) -> None:
        """Run the connection's writer in ``nursery`` (the connection's own): it writes
        what senders queue. Without it each sender writes (or waits for) its own frame."""
        self._has_writer = True
        nursery.start_soon(self._write_queued)

    async def _write_queued(self) -> None:
        """The writer: write what senders queued, until cancelled."""
        try:
            while True:
                if not self._queued or self._writing:
                    self._writer = trio.lowlevel.current_task()

                    def abort(_: Any) -> trio.lowlevel.Abort:
                        self._writer = None
                        return trio.lowlevel.Abort.SUCCEEDED

                    await trio.lowlevel.wait_task_rescheduled(abort)
                    continue
                await self._write_now(None)
        finally:
            self._has_writer = False
            self._writer = None
            self._room.unpark_all()
            self._drained.unpark_all()

    async def _until_written(self) -> None:
        """Return once nothing is queued or being written."""
        while self._queued or self._writing:
            if not self._writing and not self._has_writer:
                await self._write_now(None)
            else:
                await self._drained.park()

    async def _send_message(self, message: str) -> None:
        try:
            await self._ws.send_message(message)
        except WebSocketClosed:
            await trio.lowlevel.checkpoint()

    def _oversized(self, frame: Frame, size: int) -> str | None:
        """What to send instead of a frame over the limit (None: nothing)."""
        raise NotImplementedError

    def _unencodable(self, frame: Frame, exc: DecodeError) -> str:
        """What to send instead of a frame JSON cannot carry (too deep, not JSON data).

        An answer becomes an error answer, so the call does not wait forever; anything else
        raises: a connection actor skips such a delivery as a dead letter.
        """
        if not isinstance(frame, ResponseFrame):
            raise exc
        log.warning(
            "%s: the answer to request %s cannot be encoded: %s", self, frame.request_id, exc
        )
        return encode_frame(
            ResponseFrame(
                request_id=frame.request_id,
                ok=False,
                error_code="protocol_error",
                error_message=f"the answer cannot be sent as JSON: {exc}",
            )
        )

    async def frames(self) -> AsyncGenerator[Frame | list[Frame], None]:
        """Decoded frames until the connection closes (garbage as InvalidFrame); a list for
        each batch, its frames in order. The connection is read in the caller's task."""
        receive, limit = self._ws.receive, self.receive_limit
        while (message := await receive()) is not None:
            decoded = _decode(message, limit)
            self._lone = type(decoded) is not list
            yield decoded

    async def aclose(self, *, within: float | None = None) -> None:
        """Close with a handshake if the peer completes it within ``within`` seconds
        (default ``CLOSE_TIMEOUT``); past that the TCP stream is cut.

        Unbounded, a peer that reads nothing would hold the close forever: our close frame
        waits behind writes stuck on the peer's full buffers. What was queued before the
        close is written first, within the same time.
        """
        try:
            with trio.move_on_after(CLOSE_TIMEOUT if within is None else within):
                try:
                    if self._ws.open:
                        await self._until_written()
                finally:
                    # Also past the time (cancelled): the driver then cuts the stream.
                    await self._ws.aclose()
        finally:
            self.closed.set()

    async def keepalive(self, interval: float, pong_within: float) -> None:
        """Ping every ``interval`` s; close the connection if a pong takes over ``pong_within``."""
        while not self.closed.is_set():
            await trio.sleep(interval)
            with trio.move_on_after(pong_within) as waited:
                answered = await self._ws.ping()
                if answered is None:
                    return  # closed
                await answered.wait()
            if waited.cancelled_caught:
                log.warning("peer %s did not answer a ping in %ss; dropping it", self, pong_within)
                await self.aclose(within=0)  # it does not answer: no handshake to wait for
                return


class WsEndpoint(_WsEnd):
    """The hub's end of a WebSocket connection."""

    def __repr__(self) -> str:
        return f"<WsEndpoint {self._endpoint_id} {self.remote}>"

    def _oversized(self, frame: Frame, size: int) -> str | None:
        why = f"{size} bytes, over the {self.send_limit}-byte limit of a frame to a client"
        if isinstance(frame, ResponseFrame):
            log.warning("%s: the answer to request %s is %s", self, frame.request_id, why)
            refusal = ResponseFrame(
                request_id=frame.request_id,
                ok=False,
                error_code="protocol_error",
                error_message=f"the answer is {why}: ask for less (read_wal with since and "
                "until, a smaller limit)",
            )
            return encode_frame(refusal)
        # A delivery: raised, so the connection actor skips it as a dead letter (with the
        # hub's max_envelope_bytes below the frame limit, only an old WAL's envelope can be).
        raise DecodeError(f"a {type(frame).__name__} of {why}", record=type(frame).__name__)


@attrs.define
class ConnectionLimits:
    """Count connections in total and per address; decide whether one more may come in."""

    max_total: int
    max_per_address: int
    total: int = 0
    by_address: dict[str, int] = attrs.field(factory=dict)

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; or say why it is refused (not counted)."""
        if self.total >= self.max_total:
            return f"at the limit of {self.max_total} connections"
        held = self.by_address.get(address, 0)
        if held >= self.max_per_address:
            return f"at the limit of {self.max_per_address} connections from one address"
        self.total += 1
        self.by_address[address] = held + 1
        return None

    def release(self, address: str) -> None:
        self.total -= 1
        held = self.by_address[address] - 1
        if held:
            self.by_address[address] = held
        else:
            del self.by_address[address]


@attrs.define
class FloodLog:
    """Sums up refusals and failed accepts: one log line per interval, not one per event."""

    counts: dict[str, int] = attrs.field(factory=dict)
    addresses: set[str] = attrs.field(factory=set)

    def note(self, why: str, address: str = "") -> None:
        self.counts[why] = self.counts.get(why, 0) + 1
        if address:
            self.addresses.add(address)

    def summary(self, interval: float) -> str | None:
        """The line to log for the last ``interval`` seconds (None: nothing happened); resets."""
        if not self.counts:
            return None
        total = sum(self.counts.values())
        reasons = "; ".join(f"{n} {why}" for why, n in sorted(self.counts.items()))
        who = f" from {len(self.addresses)} address(es)" if self.addresses else ""
        self.counts.clear()
        self.addresses.clear()
        return f"{total} connection(s) refused or not accepted in {interval:g}s{who}: {reasons}"


@attrs.frozen
class WsServer:
    """What :func:`serve_ws` hands to ``task_status.started``."""

    #: The bound port (the first listener's, with ``port=0``).
    port: int
    limits: ConnectionLimits


def _peer_address(stream: trio.SocketStream) -> str:
    try:
        return str(ipaddress.ip_address(stream.socket.getpeername()[0]))
    except (OSError, ValueError, IndexError):
        return "?"


async def serve_ws(
    hub: LocalHub,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    ssl_context: ssl.SSLContext | None = None,
    ping_interval: float = PING_INTERVAL,
    ping_timeout: float = PING_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    flood_log_interval: float = FLOOD_LOG_INTERVAL,
    task_status: trio.TaskStatus[WsServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``hub`` over WebSocket until cancelled (``await nursery.start(serve_ws, hub)``).

    ``task_status.started`` gets a :class:`WsServer` once it listens (its ``port`` is the
    bound port, useful with ``port=0``). The limits are described in the module docstring.

    Raises:
      ValueError: a limit is not positive.
      OSError: the address cannot be bound.
    """
    if max_connections < 1 or max_connections_per_address < 1 or handshake_timeout <= 0:
        raise ValueError(
            "max_connections, max_connections_per_address and handshake_timeout must be "
            f"positive, got {max_connections}, {max_connections_per_address}, {handshake_timeout}"
        )
    limits = ConnectionLimits(max_connections, max_connections_per_address)
    flood = FloodLog()

    async def serve_one(stream: trio.SocketStream, address: str) -> None:
        # ``outer``: the outermost layer made so far, closed on the way out (also when the
        # TLS context refuses to wrap the socket).
        outer: trio.abc.Stream = stream
        try:
            if ssl_context is not None:
                outer = trio.SSLStream(stream, ssl_context, server_side=True, https_compatible=True)
            ws: WebSocket | None = None
            # The peer leaving mid-handshake ends it at once (the read sees the end of the
            # stream); one that takes too long is let go at the timeout.
            with trio.move_on_after(handshake_timeout):
                ws = await accept(outer, max_size=HARD_LIMIT_BYTES)
            if ws is None:
                return
            try:
                async with trio.open_nursery() as nursery:
                    endpoint = WsEndpoint(ws, uuid.uuid4().hex, remote=address)
                    nursery.start_soon(endpoint.keepalive, ping_interval, ping_timeout)
                    endpoint.start_writer(nursery)
                    await hub.attach_endpoint(endpoint)
                    await endpoint.closed.wait()
                    nursery.cancel_scope.cancel()
            except Exception as exc:
                # An error nobody expected in one connection's tasks (a bug) is that
                # connection's: it is cut below, and the server goes on serving the others.
                log.error("connection from %s failed; it is closed", address, exc_info=exc)
        finally:
            try:
                await trio.aclose_forcefully(outer)
            finally:
                limits.release(address)

    async def accept_loop(listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    flood.note(f"accept() failed with {errno.errorcode[exc.errno]}")
                    await trio.sleep(_ACCEPT_RETRY_S)
                    continue
                address = _peer_address(stream)
                refused = limits.admit(address)
                if refused is not None:
                    flood.note(refused, address)
                    await trio.aclose_forcefully(stream)
                    continue
                nursery.start_soon(serve_one, stream, address)

    async def report_floods() -> None:
        while True:
            await trio.sleep(flood_log_interval)
            line = flood.summary(flood_log_interval)
            if line is not None:
                log.warning("%s", line)

    listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(accept_loop, listener, nursery)
        nursery.start_soon(report_floods)
        bound: int = listeners[0].socket.getsockname()[1]
        task_status.started(WsServer(bound, limits))


def _parse_url(url: str, ssl_context: ssl.SSLContext | None) -> tuple[str, int, str]:
    """``ws[s]://host[:port][/path][?query]`` as (host, port, resource).

    Raises:
      ValueError: not a ws: or wss: URL, no host, or an SSL context for a ws: URL.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"a hub URL starts with ws: or wss:, got {url!r}")
    if parts.scheme == "ws" and ssl_context is not None:
        raise ValueError(f"an SSL context needs a wss: URL, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in hub URL {url!r}")
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, resource


class WsLinkClient(_WsEnd):
    """The client's end of a WebSocket connection, made by :meth:`WsLink.client`."""

    send_limit = MAX_FRAME_BYTES
    # The hub's answers and deliveries may be larger than what it accepts (a page of the
    # WAL, an envelope posted in process): up to what the protocol lets through.
    receive_limit = HARD_LIMIT_BYTES

    def __repr__(self) -> str:
        return f"<WsLinkClient {self._endpoint_id}>"

    def _oversized(self, frame: Frame, size: int) -> str | None:
        raise DecodeError(
            f"a {type(frame).__name__} of {size} bytes exceeds the hub's "
            f"{MAX_FRAME_BYTES}-byte frame limit",
            record=type(frame).__name__,
        )


class WsLink:
    """A link factory for a hub served over WebSocket: ``HubClient(WsLink(url))``.

    Args:
      url: ``ws://host:port`` (or ``wss://``).
      auth: API keys by agent name, presented when an identity registers (if its passport
        has no auth of its own) and when it re-binds after a reconnect (``ApiKeyAuth``).
      ping_interval / ping_timeout: heartbeat; a hub that stops answering is dropped and the
        client reconnects.
      connect_timeout: seconds one connection attempt may take.

    Raises:
      ValueError: ``url`` is not a ``ws:`` or ``wss:`` URL with a host (or ``ssl_context``
        is given for a ``ws:`` URL).
    """

    def __init__(
        self,
        url: str,
        *,
        auth: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ping_interval: float = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
        connect_timeout: float = 10.0,
    ) -> None:
        _parse_url(url, ssl_context)  # a bad URL is the caller's mistake: say so now
        self.url = url
        self.auth = dict(auth or {})
        self.ssl_context = ssl_context
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.connect_timeout = connect_timeout

    def __repr__(self) -> str:
        return f"WsLink({self.url!r})"

    def claim_for(self, name: str) -> tuple[str, dict[str, Any]]:
        """The auth scheme and claim this link presents for agent ``name``."""
        token = self.auth.get(name)
        return ("api_key", {"token": token}) if token is not None else ("none", {})

    async def connect(self, nursery: trio.Nursery) -> WsLinkClient:
        """Open one connection; its heartbeat and its writer run in ``nursery``.

        The writer waits for frames until it is cancelled: cancel ``nursery`` (or leave it
        to a caller's cancel) once the connection is closed, or the nursery does not end.

        Raises:
          OSError, HandshakeFailed: the hub could not be reached (or what answered there
            refused the WebSocket handshake).
        """
        host, port, _ = _parse_url(self.url, self.ssl_context)
        with trio.fail_after(self.connect_timeout):
            tcp = await trio.open_tcp_stream(host, port)
            # Closed on the way out unless the handshake completed, whatever stopped it: a
            # TLS context that refuses to wrap the socket (ssl.SSLError, a host name TLS
            # cannot carry) too. ``stream`` is the outermost layer made so far.
            stream: trio.abc.Stream = tcp
            handshaken = False
            try:
                if self.ssl_context is not None or self.url.startswith("wss:"):
                    context = self.ssl_context or ssl.create_default_context()
                    stream = trio.SSLStream(
                        tcp, context, server_hostname=host, https_compatible=True
                    )
                try:
                    ws = await connect(stream, parse_uri(self.url), max_size=HARD_LIMIT_BYTES)
                except ConnectionResetError as exc:
                    failure = exc.__cause__  # (the stream's failure, if it failed)
                    if failure is not None and isinstance(failure.__cause__, ssl.SSLError):
                        raise ConnectionResetError(f"the hub at {self.url}: {exc}") from exc
                    # A hub that refuses the connection (at its limit) closes it unanswered.
                    raise ConnectionResetError(
                        f"the hub at {self.url} closed the connection during the handshake "
                        "(it may be at its connection limit)"
                    ) from exc
                handshaken = True
            finally:
                if not handshaken:
                    await trio.aclose_forcefully(stream)
        client = WsLinkClient(ws, uuid.uuid4().hex, remote=self.url)
        nursery.start_soon(client.keepalive, self.ping_interval, self.ping_timeout)
        client.start_writer(nursery)
        return client
