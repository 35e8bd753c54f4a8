"""WebSocket transport (trio-websocket): one JSON text message per frame.

Server: :func:`serve_ws` accepts connections and attaches each to the hub as an endpoint;
client: :class:`WsLink` makes :class:`WsLinkClient` connections for ``HubClient``.

Limits and liveness:

- A frame may be at most ``MAX_FRAME_BYTES`` (1 MiB) of JSON. A larger one, malformed JSON
  or an unknown ``kind`` is answered with ``ErrorFrame(code="bad_frame")`` and the
  connection keeps serving. Messages beyond ``HARD_LIMIT_BYTES`` (8 MiB) make the library
  close the connection (close code 1009).
- Both ends ping every ``ping_interval`` seconds and drop a peer that has not answered
  within ``ping_timeout``; the hub then releases that connection's bindings.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    connect_websocket_url,
    serve_websocket,
)

from .._errors import DecodeError
from ..model import Frame, InvalidFrame, decode_frame, encode_frame

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("troupe.transport.ws")

MAX_FRAME_BYTES = 1 << 20
HARD_LIMIT_BYTES = 8 << 20
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0


def _decode(message: str | bytes) -> Frame:
    """A frame, or an :class:`InvalidFrame` saying why the message is not one."""
    if len(message) > MAX_FRAME_BYTES:
        return InvalidFrame(
            reason=f"frame of {len(message)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"
        )
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

    def __init__(self, ws: WebSocketConnection, endpoint_id: str) -> None:
        self._ws = ws
        self._endpoint_id = endpoint_id
        self.closed = trio.Event()

    @property
    def endpoint_id(self) -> str:
        return self._endpoint_id

    async def send_frame(self, frame: Frame) -> None:
        """Send a frame; silently dropped once the connection is closed."""
        try:
            await self._ws.send_message(encode_frame(frame))
        except ConnectionClosed:
            await trio.lowlevel.checkpoint()

    async def frames(self) -> AsyncGenerator[Frame, None]:
        """Decoded frames until the connection closes (garbage as InvalidFrame)."""
        while True:
            try:
                message = await self._ws.get_message()
            except ConnectionClosed:
                return
            yield _decode(message)

    async def aclose(self) -> None:
        try:
            await self._ws.aclose()
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
                await self.aclose()
                return


class WsEndpoint(_WsEnd):
    """The hub's end of a WebSocket connection."""

    def __repr__(self) -> str:
        return f"<WsEndpoint {self._endpoint_id} {self._ws.remote}>"


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
        ws = await request.accept()
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


class WsLinkClient(_WsEnd):
    """The client's end of a WebSocket connection, made by :meth:`WsLink.client`."""

    def __repr__(self) -> str:
        return f"<WsLinkClient {self._endpoint_id}>"


class WsLink:
    """A link factory for a hub served over WebSocket: ``HubClient(WsLink(url))``.

    Args:
      url: ``ws://host:port`` (or ``wss://``).
      auth: API keys by agent name, presented when an identity registers (if its passport
        has no auth of its own) and when it re-binds after a reconnect (``ApiKeyAuth``).
      ping_interval / ping_timeout: heartbeat; a hub that stops answering is dropped and the
        client reconnects.
      connect_timeout: seconds one connection attempt may take.
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
        with trio.fail_after(self.connect_timeout):
            ws = await connect_websocket_url(
                nursery, self.url, self.ssl_context, max_message_size=HARD_LIMIT_BYTES
            )
        client = WsLinkClient(ws, uuid.uuid4().hex)
        nursery.start_soon(client.keepalive, self.ping_interval, self.ping_timeout)
        return client
