"""A trio driver of the ``websockets`` package's sans-I/O protocol: messages over a stream.

The protocol (``websockets.client.ClientProtocol`` / ``websockets.server.ServerProtocol``)
turns bytes received into events and events sent into bytes; this module moves the bytes.
It has no task of its own:

- **Reading** happens in the task that asks for a message (:meth:`WebSocket.receive`): it
  reads the stream, feeds the protocol, and keeps the messages one read completed for the
  next calls. Pings are answered and pongs matched as they are parsed. No reader task, no
  channel: a consumer that stops asking stops reading (and answering pings), as one whose
  channel is full would.
- **Writing** goes through one lock around the stream's send. A sender writes what the
  protocol has queued, its own frame and whatever was queued while it wrote; the reader's
  pongs and close frames, a ping, a close frame are queued behind a send under way, not
  written by a second task.
- A write cut short (cancelled, or the stream failed) leaves the stream in an unknown state:
  the connection is then broken, its stream closed, and nothing more goes through it.

Closing: :meth:`WebSocket.aclose` sends a close frame (behind a send under way), waits for
the peer's (the task reading waits for it, or this one reads), then closes the stream; the
caller bounds the wait by cancelling it.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import trio
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import WebSocketURI

from .._errors import ConnectionLost, HandshakeFailed

#: Bytes asked of the stream per read.
RECEIVE_BYTES = 1 << 16


class _ProtocolLog(logging.LoggerAdapter[logging.Logger]):
    """The protocol's log, its per-connection INFO lines ("connection open", "connection
    closed") demoted to DEBUG: a server has thousands of connections, and ``troupe serve``
    logs at INFO."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


_PROTOCOL_LOG = _ProtocolLog(logging.getLogger("troupe.transport.ws.protocol"))

_TEXT, _BINARY, _CONT, _PONG = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PONG
_OPEN = State.OPEN


class _WriteLock:
    """One writer at a time: what ``trio.Lock`` gives here, without its owner checks and
    statistics (0.49 us to take and release, on every message; this takes 0.1 us).

    A waiter woken by :meth:`release` takes the lock when it runs unless another task took
    it first (then it waits again): every taker here sends at once and releases.
    """

    __slots__ = ("_held", "_waiting")

    def __init__(self) -> None:
        self._held = False
        self._waiting = trio.lowlevel.ParkingLot()

    def locked(self) -> bool:
        return self._held

    def acquire_nowait(self) -> None:
        if self._held:
            raise trio.WouldBlock
        self._held = True

    async def acquire(self) -> None:
        """Wait for the lock (a checkpoint only when it is held)."""
        while self._held:
            await self._waiting.park()
        self._held = True

    def release(self) -> None:
        self._held = False
        if self._waiting:
            self._waiting.unpark()


class WebSocketClosed(ConnectionLost):
    """Raised by a send or a ping once the connection can no longer carry frames."""

    def __init__(self, why: str = "the WebSocket connection is closed") -> None:
        super().__init__(why)


class WebSocket:
    """One WebSocket connection over a trio stream, driven by a ``websockets`` protocol.

    Made by :func:`connect` or :func:`accept` (the opening handshake is theirs). Text
    messages are received as their UTF-8 bytes (what a JSON decoder takes as it is).
    """

    def __init__(self, stream: trio.abc.Stream, protocol: ClientProtocol | ServerProtocol):
        self.stream = stream
        self._protocol = protocol
        #: Messages read and not yet returned by receive(), in order.
        self._messages: deque[bytes] = deque()
        self._fragments: list[bytes] = []
        #: The opening handshake's request (server) or response (client), once parsed.
        self._handshake: deque[Request | Response] = deque()
        #: Pings sent and not answered yet, by payload (in the order they were sent).
        self._pings: dict[bytes, trio.Event] = {}
        self._ping_count = 0
        self._send_lock = _WriteLock()
        #: Bytes taken from the protocol, not written yet (a writer was cancelled first).
        self._unsent: list[bytes] = []
        self._reading = False
        #: The stream failed or a write was cut short: nothing more goes through it.
        self._broken = False
        #: The peer's end of the stream was read (EOF).
        self._eof = False
        #: Why the stream failed (a read or a write raised), if it did.
        self.failure: BaseException | None = None
        #: Set once nothing more will be received: the peer's close frame, the end of the
        #: stream, a protocol failure (a message over ``max_size``: close code 1009).
        self.ended = trio.Event()
        #: Set once the peer is done: its close frame or the end of the stream was read (or
        #: the stream failed). A close waits for it.
        self._peer_done = trio.Event()

    @property
    def open(self) -> bool:
        """Whether messages may still be sent and received (no close on either side)."""
        return self._protocol.state is _OPEN and not self._broken and not self.ended.is_set()

    @property
    def close_code(self) -> int | None:
        """The code of the peer's close frame (None: none received)."""
        close = self._protocol.close_rcvd
        return None if close is None else int(close.code)

    # -- receiving -------------------------------------------------------------------------

    async def receive(self) -> bytes | None:
        """The next message (a text message's UTF-8 bytes, or a binary one's), or None once
        the connection has ended. Reads in the caller's task (one caller at a time).

        A message already read (several arrive in one read) is returned without a schedule
        point; cancellation is checked all the same.
        """
        messages = self._messages
        if messages:
            await trio.lowlevel.checkpoint_if_cancelled()
            return messages.popleft()
        while not messages:
            if self.ended.is_set():
                await trio.lowlevel.checkpoint()
                return None
            await self._receive_some()
        return messages.popleft()

    async def _receive_some(self) -> None:
        """Read once, feed the protocol, take its events, write what it answered."""
        if self._reading:
            raise trio.BusyResourceError("another task is already reading this WebSocket")
        self._reading = True
        try:
            data = await self.stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._broken = True
            self.failure = self.failure or exc
            data = b""
        finally:
            self._reading = False
        if self._peer_done.is_set():
            return  # (the stream was cut under this read: nothing more to parse)
        self._take(data)
        await self._flush()

    def _take(self, data: bytes | bytearray) -> None:
        protocol = self._protocol
        if data:
            protocol.receive_data(data)
        else:
            self._eof = True
            protocol.receive_eof()
        for event in protocol.events_received():
            if type(event) is Frame:
                opcode = event.opcode
                if opcode is _TEXT or opcode is _BINARY:
                    if event.fin:
                        self._messages.append(bytes(event.data))
                    else:
                        self._fragments = [bytes(event.data)]
                elif opcode is _CONT:
                    self._fragments.append(bytes(event.data))
                    if event.fin:
                        self._messages.append(b"".join(self._fragments))
                        self._fragments = []
                elif opcode is _PONG:
                    self._ponged(bytes(event.data))
                # (A ping: the protocol queued its pong. A close: seen below.)
            elif isinstance(event, Request | Response):
                self._handshake.append(event)
        if self._eof or protocol.close_rcvd is not None:
            self._peer_done.set()
            self._end()
        elif protocol.parser_exc is not None:
            self._end()  # (a close frame is on its way to the peer; it still may answer)

    def _ponged(self, payload: bytes) -> None:
        """A pong answers its ping and every ping sent before it."""
        if payload not in self._pings:
            return
        for sent in list(self._pings):
            self._pings.pop(sent).set()
            if sent == payload:
                return

    def _end(self) -> None:
        self.ended.set()
        for waiting in self._pings.values():
            waiting.set()  # (the keepalive finds the connection closed)
        self._pings.clear()

    # -- sending ---------------------------------------------------------------------------

    async def send_message(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message; return once it is written.

        Raises:
          WebSocketClosed: the connection is closed (or closing), or the stream failed.
        """
        lock = self._send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if not self.open:
                raise WebSocketClosed
            # Cancelled here, nothing of this message was queued: it is not sent later.
            await trio.lowlevel.checkpoint_if_cancelled()
            if isinstance(message, str):
                self._protocol.send_text(message.encode())
            else:
                self._protocol.send_binary(message)
            await self._write_pending()
        finally:
            lock.release()

    async def ping(self) -> trio.Event | None:
        """Send a ping (behind a send under way); the event is set when its pong arrives or
        the connection ends. None: the connection is closed."""
        if not self.open:
            await trio.lowlevel.checkpoint()
            return None
        self._ping_count += 1
        payload = self._ping_count.to_bytes(8, "big")
        answered = self._pings[payload] = trio.Event()
        self._protocol.send_ping(payload)
        await trio.lowlevel.checkpoint()
        await self._flush()
        return answered

    async def _flush(self) -> None:
        """Write what the protocol queued (pongs, close frames, a ping), unless a send is
        under way: its writer takes them after its own frame. A failed write ends the
        connection instead of raising."""
        self._unsent.extend(self._protocol.data_to_send())
        if not self._unsent or self._send_lock.locked():
            return  # (no checkpoint: a reader has just had one, reading)
        self._send_lock.acquire_nowait()
        try:
            await self._write_pending()
        except WebSocketClosed:
            pass
        finally:
            self._send_lock.release()

    async def _write_pending(self) -> None:
        """Write everything the protocol has queued, until nothing more is (the caller holds
        the send lock)."""
        unsent = self._unsent
        while True:
            unsent.extend(self._protocol.data_to_send())
            if not unsent:
                return
            if self._broken:
                unsent.clear()
                raise WebSocketClosed("the WebSocket connection's stream failed")
            # Cancelled here, nothing was written: what is queued waits for the next writer.
            await trio.lowlevel.checkpoint_if_cancelled()
            eof = not unsent[-1]  # (the protocol's SEND_EOF, b"", comes last)
            data = b"".join(unsent) if len(unsent) > 1 else unsent[0]
            unsent.clear()
            written = False
            try:
                if data:
                    await self.stream.send_all(data)
                if eof and isinstance(self.stream, trio.abc.HalfCloseableStream):
                    await self.stream.send_eof()
                written = True
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.failure = self.failure or exc
                raise WebSocketClosed(f"the WebSocket connection's stream failed: {exc}") from exc
            finally:
                if not written:
                    # Cut short (cancelled midway, or the stream failed): what the peer got
                    # is unknown, so nothing more may follow. Closing the stream also ends a
                    # read under way in another task.
                    self._broken = True
                    self._peer_done.set()
                    self._end()
                    with trio.CancelScope(shield=True):
                        await trio.aclose_forcefully(self.stream)

    # -- closing ---------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (if none was sent or received), wait for the peer's or for
        the end of the stream, then close the stream. Bound it by cancelling it: the stream
        is closed all the same."""
        try:
            if self.open:
                self._protocol.send_close(code, reason)
                await self._flush()
            while not self._peer_done.is_set():
                if self._reading:
                    await self._peer_done.wait()  # the task reading sees the close
                else:
                    await self._receive_some()  # (messages left unread are dropped)
        finally:
            self._broken = True
            self._peer_done.set()
            self._end()
            await trio.aclose_forcefully(self.stream)


async def connect(stream: trio.abc.Stream, uri: WebSocketURI, *, max_size: int) -> WebSocket:
    """The client's opening handshake over ``stream``; the caller closes ``stream`` if this
    raises.

    Raises:
      HandshakeFailed: the server answered, but not with a WebSocket upgrade.
      ConnectionResetError: the server closed or broke the connection before answering.
    """
    protocol = ClientProtocol(uri, max_size=max_size, logger=_PROTOCOL_LOG)
    ws = WebSocket(stream, protocol)
    protocol.send_request(protocol.connect())
    await ws._flush()
    while not ws._handshake:
        if protocol.handshake_exc is not None and not ws._eof:
            raise HandshakeFailed(f"the WebSocket handshake failed: {protocol.handshake_exc}")
        if ws.ended.is_set() or ws._broken:
            if ws.failure is None:
                raise ConnectionResetError("the server closed the connection during the handshake")
            why = ws.failure.__cause__ or ws.failure
            raise ConnectionResetError(
                f"the connection failed during the handshake: {why}"
            ) from ws.failure
        await ws._receive_some()
    if protocol.handshake_exc is not None:
        raise HandshakeFailed(
            f"the WebSocket handshake failed: {protocol.handshake_exc}"
        ) from protocol.handshake_exc
    return ws


async def accept(stream: trio.abc.Stream, *, max_size: int) -> WebSocket | None:
    """The server's opening handshake over ``stream``; None if the client left or did not
    ask for a WebSocket (it was answered with an HTTP error). The caller closes ``stream``
    in that case, and bounds the handshake by cancelling it."""
    protocol = ServerProtocol(max_size=max_size, logger=_PROTOCOL_LOG)
    ws = WebSocket(stream, protocol)
    while not ws._handshake:
        if ws.ended.is_set() or protocol.handshake_exc is not None:
            await ws._flush()  # (an HTTP error answer, if the protocol made one)
            return None
        await ws._receive_some()
    request = ws._handshake.popleft()
    assert isinstance(request, Request)
    response = protocol.accept(request)
    protocol.send_response(response)
    await ws._flush()
    if response.status_code != 101 or ws._broken:
        return None
    return ws
