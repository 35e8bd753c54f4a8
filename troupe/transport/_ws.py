"""WebSocket transport (trio-websocket): one JSON text message per frame.

Server: :func:`serve_ws` accepts connections and attaches each to the hub as an endpoint;
client: :class:`WsLink` makes :class:`WsLinkClient` connections for ``HubClient``.

Limits and liveness:

- A frame to the hub may be at most ``MAX_FRAME_BYTES`` (1 MiB) of JSON (a client refuses
  to send a larger one with ``DecodeError``). A larger one, malformed JSON
  or an unknown ``kind`` is answered with ``ErrorFrame(code="bad_frame")`` and the
  connection keeps serving. Messages beyond ``HARD_LIMIT_BYTES`` (8 MiB) make the library
  close the connection (close code 1009).
- Both ends ping every ``ping_interval`` seconds and drop a peer that has not answered
  within ``ping_timeout``; the hub then releases that connection's bindings. A closing
  handshake may take ``CLOSE_TIMEOUT`` seconds; then the TCP stream is cut.
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse
import uuid
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import orjson
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
    wrap_client_stream,
)
from wsproto.connection import ConnectionState
from wsproto.events import Event, Ping
from wsproto.utilities import LocalProtocolError

from .._errors import DecodeError
from ..model import Frame, InvalidFrame, ResponseFrame, decode_frame, encode_frame

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("troupe.transport.ws")

MAX_FRAME_BYTES = 1 << 20
HARD_LIMIT_BYTES = 8 << 20
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
#: Seconds a closing handshake may take before the connection is cut.
CLOSE_TIMEOUT = 2.0


def _answer_pings_only_while_open() -> None:
    """Make trio-websocket ignore a ping that arrives after this end sent its close frame.

    trio-websocket 0.12 answers every ping; after our close frame wsproto refuses to send
    the pong and raises ``LocalProtocolError`` in the connection's reader task, which takes
    down the nursery holding it: a HubClient's (its ``async with`` raises) or the server's.
    Both ends ping, so a close racing a ping is ordinary. The peer is closing anyway, so
    the pong is not owed.
    """
    answer = WebSocketConnection._handle_ping_event

    async def answer_while_open(self: WebSocketConnection, event: Ping) -> None:
        if self._wsproto.state is ConnectionState.OPEN:
            await answer(self, event)
        else:
            await trio.lowlevel.checkpoint()

    WebSocketConnection._handle_ping_event = answer_while_open  # type: ignore[method-assign]


_answer_pings_only_while_open()


def _closing_sends_end_the_reader() -> None:
    """Turn wsproto's refusal to send in a closing state into ``ConnectionClosed``.

    The reader task also sends (a close with 1009 for an oversized message, for one): in
    a closing state wsproto raises ``LocalProtocolError``, which trio-websocket lets
    escape and crash the nursery holding the connection. ``ConnectionClosed`` is what it
    handles: the reader stops, and our bounded close cuts the stream.
    """
    send = WebSocketConnection._send

    async def send_or_closed(self: WebSocketConnection, event: Event) -> None:
        try:
            await send(self, event)
        except LocalProtocolError as exc:
            reason = self.closed or CloseReason(1006, f"cannot send {type(event).__name__}")
            raise ConnectionClosed(reason) from exc

    WebSocketConnection._send = send_or_closed  # type: ignore[method-assign]


_closing_sends_end_the_reader()


def _size(message: str | bytes) -> int:
    """The message's size in bytes (a text message's UTF-8 length)."""
    if isinstance(message, bytes) or len(message) * 4 <= MAX_FRAME_BYTES:
        return len(message)  # (a short text's exact size does not matter: it fits)
    return len(message.encode())


def _decode(message: str | bytes, limit: int) -> Frame:
    """A frame, or an :class:`InvalidFrame` saying why the message is not one."""
    size = _size(message)
    if size > limit:
        return InvalidFrame(reason=f"frame of {size} bytes exceeds the {limit}-byte limit")
    try:
        return decode_frame(message)
    except DecodeError as exc:
        return InvalidFrame(reason=str(exc), request_id=_request_id_of(message))


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

    def __init__(
        self,
        ws: WebSocketConnection,
        endpoint_id: str,
        stream: trio.abc.AsyncResource | None = None,
    ) -> None:
        self._ws = ws
        self._endpoint_id = endpoint_id
        #: The byte stream under ``ws``, when we opened it (then we close it).
        self._stream = stream
        self.closed = trio.Event()

    @property
    def endpoint_id(self) -> str:
        return self._endpoint_id

    #: The largest message the other end accepts.
    send_limit = HARD_LIMIT_BYTES
    #: The largest message this end decodes (a larger one becomes an InvalidFrame).
    receive_limit = MAX_FRAME_BYTES

    async def send_frame(self, frame: Frame) -> None:
        """Send a frame; silently dropped once the connection is closed.

        A frame over ``send_limit`` is not sent (the peer would close the connection, and
        a retried request would close it again and again): see :meth:`_oversized`.
        """
        text = encode_frame(frame)
        size = _size(text)
        if size > self.send_limit:
            replacement = self._oversized(frame, size)
            if replacement is None:
                await trio.lowlevel.checkpoint()
                return
            text = replacement
        try:
            await self._ws.send_message(text)
        except ConnectionClosed:
            await trio.lowlevel.checkpoint()

    def _oversized(self, frame: Frame, size: int) -> str | None:
        """What to send instead of a frame over the limit (None: nothing)."""
        raise NotImplementedError

    async def frames(self) -> AsyncGenerator[Frame, None]:
        """Decoded frames until the connection closes (garbage as InvalidFrame)."""
        while True:
            try:
                message = await self._ws.get_message()
            except ConnectionClosed:
                return
            yield _decode(message, self.receive_limit)

    async def aclose(self, *, within: float | None = None) -> None:
        """Close with a handshake if the peer completes it within ``within`` seconds
        (default ``CLOSE_TIMEOUT``).

        Past that the TCP stream is cut (trio-websocket closes it when its close is
        cancelled). Unbounded, a peer that reads nothing would hold the close forever:
        our close frame waits behind writes stuck on the peer's full buffers.
        """
        try:
            with trio.move_on_after(CLOSE_TIMEOUT if within is None else within):
                await self._ws.aclose()
        finally:
            try:
                if self._stream is not None:
                    # trio-websocket leaves the stream open when the peer closed or
                    # dropped first (its aclose returns early once a close reason is set).
                    await trio.aclose_forcefully(self._stream)
            finally:
                self.closed.set()

    async def keepalive(self, interval: float, pong_within: float) -> None:
        """Ping every ``interval`` s; close the connection if a pong takes over ``pong_within``."""
        while not self.closed.is_set():
            await trio.sleep(interval)
            with trio.move_on_after(pong_within) as waited:
                try:
                    await self._ws.ping()
                except ConnectionClosed:
                    return
            if waited.cancelled_caught:
                log.warning("peer %s did not answer a ping in %ss; dropping it", self, pong_within)
                await self.aclose(within=0)  # it does not answer: no handshake to wait for
                return


class WsEndpoint(_WsEnd):
    """The hub's end of a WebSocket connection."""

    def __repr__(self) -> str:
        return f"<WsEndpoint {self._endpoint_id} {self._ws.remote}>"

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
        log.error("%s: not sending a %s of %s", self, type(frame).__name__, why)
        return None


async def serve_ws(
    hub: Hub,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    ssl_context: ssl.SSLContext | None = None,
    ping_interval: float = PING_INTERVAL,
    ping_timeout: float = PING_TIMEOUT,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``hub`` over WebSocket until cancelled (``await nursery.start(serve_ws, hub)``).

    ``task_status.started`` gets the server once it listens (its ``port`` is the bound port,
    useful with ``port=0``).
    """

    async def handler(request: WebSocketRequest) -> None:
        try:
            ws = await request.accept()
        except ConnectionClosed:
            # The client left during the handshake. Raised from here it would end
            # serve_websocket, and with it the server, for every client.
            log.info("a client left during the WebSocket handshake")
            return
        endpoint = WsEndpoint(ws, uuid.uuid4().hex)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(endpoint.keepalive, ping_interval, ping_timeout)
            await hub.attach_endpoint(endpoint)
            await endpoint.closed.wait()
            nursery.cancel_scope.cancel()

    await serve_websocket(
        handler,
        host,
        port,
        ssl_context,
        max_message_size=HARD_LIMIT_BYTES,
        task_status=task_status,
    )


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
    # WAL, an envelope posted in process): up to what the library lets through.
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
        """Open one connection; its reader and heartbeat run in ``nursery``.

        Raises:
          OSError, trio_websocket.HandshakeError: the hub could not be reached.
        """
        host, port, resource = _parse_url(self.url, self.ssl_context)
        with trio.fail_after(self.connect_timeout):
            # The stream is opened here, not by connect_websocket_url, so that it can be
            # closed: trio-websocket leaves it open when the handshake is interrupted or
            # the hub drops the connection.
            stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
            stream = await trio.open_tcp_stream(host, port)
            handshaken = False
            try:
                if self.ssl_context is not None or self.url.startswith("wss:"):
                    context = self.ssl_context or ssl.create_default_context()
                    stream = trio.SSLStream(
                        stream, context, server_hostname=host, https_compatible=True
                    )
                ws = await wrap_client_stream(
                    nursery,
                    stream,
                    host if port in (80, 443) else f"{host}:{port}",
                    resource,
                    max_message_size=HARD_LIMIT_BYTES,
                )
                handshaken = True
            finally:
                if not handshaken:
                    await trio.aclose_forcefully(stream)
        client = WsLinkClient(ws, uuid.uuid4().hex, stream)
        nursery.start_soon(client.keepalive, self.ping_interval, self.ping_timeout)
        return client
