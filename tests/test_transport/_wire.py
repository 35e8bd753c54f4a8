"""Helpers for the WebSocket tests: a hub served on 127.0.0.1, raw connections, agents.

Real sockets do not mix with the autojump MockClock (it jumps while the loop waits on I/O),
so these tests run on the real clock with small heartbeats and tight ``fail_after`` caps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection, WebSocketRequest
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import Event, Ping
from wsproto.utilities import LocalProtocolError

from troupe import EV_TEXT, Envelope, Hub, HubClient, HumanClient, Passport, Turn, open_hub
from troupe.hub import AuthAdapter
from troupe.model import ErrorFrame, Frame, HelloFrame, WelcomeFrame, decode_frames, encode_frame
from troupe.store import Store
from troupe.transport import WsLink, WsServer, serve_ws


class _Connection(WebSocketConnection):
    """trio-websocket's connection with two fixes, for the tests' own connections only.

    The tests talk to troupe's WebSocket transport through trio-websocket, an independent
    implementation (troupe's own is a driver of the ``websockets`` package's protocol).
    trio-websocket 0.12 lets wsproto's ``LocalProtocolError`` escape from the connection's
    reader task when it sends in a closing state; that takes down the nursery holding the
    connection, and a test's ping racing a close would fail for the library's reason, not
    troupe's (upstream: trio-websocket issue #184, PR #198). Other users of trio-websocket in
    the process keep the library as it is: :func:`_wrap_client` and :func:`_wrap_server` make
    this class where the library's ``wrap_client_stream`` / ``wrap_server_stream`` would make
    its own.
    """

    async def _handle_ping_event(self, event: Ping) -> None:
        """Answer a ping only while open: not once this end has sent its close frame.

        Both ends ping, so a ping racing a close is ordinary; wsproto refuses the pong then,
        and the peer, closing too, is not owed one.
        """
        if self._wsproto.state is ConnectionState.OPEN:
            await super()._handle_ping_event(event)
        else:
            await trio.lowlevel.checkpoint()

    async def _send(self, event: Event) -> None:
        """Send, turning wsproto's refusal to send in a closing state into ``ConnectionClosed``.

        The reader task also sends (a close with 1009 for an oversized message, for one);
        ``ConnectionClosed`` is what it handles: the reader stops, and our bounded close cuts
        the stream.
        """
        try:
            await super()._send(event)
        except LocalProtocolError as exc:
            reason = self.closed or CloseReason(1006, f"cannot send {type(event).__name__}")
            raise ConnectionClosed(reason) from exc


async def _wrap_client(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    max_message_size: int = 8 << 20,
) -> WebSocketConnection:
    """What ``trio_websocket.wrap_client_stream`` does, with a :class:`_Connection`."""
    connection = _Connection(
        stream,
        WSConnection(ConnectionType.CLIENT),
        host=host,
        path=resource,
        max_message_size=max_message_size,
    )
    nursery.start_soon(connection._reader_task)
    await connection._open_handshake.wait()
    return connection


async def _wrap_server(
    nursery: trio.Nursery, stream: trio.abc.Stream, *, max_message_size: int = 8 << 20
) -> WebSocketRequest:
    """What ``trio_websocket.wrap_server_stream`` does, with a :class:`_Connection`."""
    connection = _Connection(
        stream, WSConnection(ConnectionType.SERVER), max_message_size=max_message_size
    )
    nursery.start_soon(connection._reader_task)
    return await connection._get_request()


#: Heartbeat for tests that do not exercise it (long enough never to fire by accident).
QUIET = 30.0
#: Heartbeat for tests that do.
FAST = 0.05


@attrs.frozen
class Served:
    """A hub served over WebSocket on 127.0.0.1."""

    hub: Hub
    url: str
    port: int
    _scope: trio.CancelScope
    _stopped: trio.Event
    server: WsServer

    def link(self, *, ping_interval: float = QUIET, **kwargs: Any) -> WsLink:
        kwargs.setdefault("ping_timeout", ping_interval)
        return WsLink(self.url, ping_interval=ping_interval, **kwargs)

    async def stop(self) -> None:
        """Stop the server and the hub (as leaving ``serving`` does) and wait for it."""
        self._scope.cancel()
        await self._stopped.wait()


@asynccontextmanager
async def serving(
    *,
    store: Store | None = None,
    auth: Iterable[AuthAdapter] | None = None,
    ping_interval: float = QUIET,
    ping_timeout: float | None = None,
    port: int = 0,
    **options: Any,
) -> AsyncIterator[Served]:
    """Open a hub and serve it on 127.0.0.1 (a random port unless ``port`` is given).

    ``options`` go to ``serve_ws`` (its limits).
    """

    async def run(*, task_status: trio.TaskStatus[Served]) -> None:
        stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with open_hub(store, auth=auth) as hub, trio.open_nursery() as nursery:
                    server = await nursery.start(
                        lambda task_status: serve_ws(
                            hub,
                            "127.0.0.1",
                            port,
                            ping_interval=ping_interval,
                            ping_timeout=ping_timeout or ping_interval,
                            task_status=task_status,
                            **options,
                        )
                    )
                    url = f"ws://127.0.0.1:{server.port}"
                    task_status.started(Served(hub, url, server.port, scope, stopped, server))
                    await trio.sleep_forever()
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        served: Served = await nursery.start(run)
        yield served
        await served.stop()


async def wait_until(condition: Callable[[], bool], *, every: float = 0.005) -> None:
    """Poll ``condition`` until it holds (callers cap the wait with ``fail_after``).

    For hub state that has no event to wait on (a connection's teardown, a cursor).
    """
    while True:
        if condition():
            return
        await trio.sleep(every)


async def eventually(probe: Callable[[], Awaitable[bool]], *, every: float = 0.005) -> None:
    """:func:`wait_until` for a condition that must be awaited (a store read)."""
    while True:
        if await probe():
            return
        await trio.sleep(every)


class Raw:
    """A hand-driven WebSocket connection to the hub: frames in, frames out, no client."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        #: Frames of a batch the hub sent, not yet returned by :meth:`receive`.
        self.pending: list[Frame] = []
        #: The size in bytes of each message received, in order.
        self.message_sizes: list[int] = []

    async def send(self, frame: Frame) -> None:
        await self.ws.send_message(encode_frame(frame))

    async def send_text(self, text: str | bytes) -> None:
        await self.ws.send_message(text)

    async def receive(self) -> Frame:
        """The next frame (a batch's frames one by one, in order)."""
        if not self.pending:
            message = await self.ws.get_message()
            self.message_sizes.append(
                len(message.encode() if isinstance(message, str) else message)
            )
            frames = decode_frames(message)
            self.pending = frames if isinstance(frames, list) else [frames]
        return self.pending.pop(0)

    async def hello(self, name: str) -> WelcomeFrame:
        """Bind this connection to ``name`` (no auth)."""
        await self.send(HelloFrame(name=name, request_id=f"hello {name}"))
        answer = await self.receive_kind((WelcomeFrame, ErrorFrame))
        if isinstance(answer, ErrorFrame):
            raise AssertionError(f"hello {name!r} refused: {answer.code}: {answer.message}")
        welcome: WelcomeFrame = answer
        return welcome

    async def receive_kind(self, kind: type[Any] | tuple[type[Any], ...]) -> Any:
        """The next frame of class ``kind`` (skipping others, such as notifications)."""
        while True:
            frame = await self.receive()
            if isinstance(frame, kind):
                return frame


@asynccontextmanager
async def raw(url: str, *, max_message_size: int = 1 << 24) -> AsyncIterator[Raw]:
    """A raw connection to ``url`` (``ws://127.0.0.1:PORT``).

    The TCP stream is ours and closed on the way out: when the hub closes a connection
    while a message is being sent, trio-websocket's own close leaves its socket open. The
    connection is trio-websocket's (:class:`_Connection`): a ping racing its close does not
    crash it.
    """
    port = int(url.rsplit(":", 1)[1])
    async with trio.open_nursery() as nursery:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            ws = await _wrap_client(
                nursery, stream, "127.0.0.1", "/", max_message_size=max_message_size
            )
            try:
                yield Raw(ws)
            finally:
                with trio.move_on_after(1, shield=True):
                    await ws.aclose()
        finally:
            await trio.aclose_forcefully(stream)
        nursery.cancel_scope.cancel()


async def converse(
    creator: HubClient, other: HubClient, names: tuple[str, str] = ("a", "b")
) -> tuple[HumanClient, HumanClient, str]:
    """Two people, one on each client, in a conversation the first opened: (a, b, its id)."""
    a = await creator.register_human(Passport(name=names[0]))
    b = await other.register_human(Passport(name=names[1]))
    md = await creator.create_session(
        creator_id=a.agent_id, manifest_type="conversation", participants=[b.agent_id]
    )
    return a, b, md.session_id


def text(session_id: str, sender_id: str, body: str = "") -> Envelope:
    """An ``EV_TEXT`` envelope, to post by hand."""
    return Envelope(
        session_id=session_id, sender_id=sender_id, event_type=EV_TEXT, event_data={"text": body}
    )


class Echo:
    """Answers every turn with ``echo: <text>``; remembers what it was asked."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    async def respond(self, turn: Turn) -> str | None:
        self.heard.append(turn.text)
        return f"echo: {turn.text}"


class Scripted:
    """Says its lines in order, then stays silent (``done`` is set on the silent turn)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = list(lines)
        self.turns: list[Turn] = []
        self.done = trio.Event()

    async def respond(self, turn: Turn) -> str | None:
        self.turns.append(turn)
        if not self.lines:
            self.done.set()
            return None
        return self.lines.pop(0)


class Proxy:
    """A TCP proxy in front of the hub that a test can freeze (per direction) or cut.

    ``cut()`` closes every proxied connection at once, without a WebSocket close: both ends
    see the TCP stream end, as when a network path dies. New connections are still
    accepted afterwards, so a client can reconnect through the proxy.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        #: Bytes forwarded towards the clients so far.
        self.to_client_bytes = 0
        #: Bytes read from the clients so far (forwarded or, while frozen, held).
        self.from_client_bytes = 0
        self._to_hub = trio.Event()
        self._to_client = trio.Event()
        self._to_hub.set()
        self._to_client.set()
        self._scopes: set[trio.CancelScope] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def freeze(self, *, to_hub: bool = True, to_client: bool = True) -> None:
        """Stop forwarding bytes in the given directions (they wait in the proxy)."""
        if to_hub and self._to_hub.is_set():
            self._to_hub = trio.Event()
        if to_client and self._to_client.is_set():
            self._to_client = trio.Event()

    def thaw(self, *, to_hub: bool = True, to_client: bool = True) -> None:
        if to_hub:
            self._to_hub.set()
        if to_client:
            self._to_client.set()

    def cut(self) -> None:
        """Drop every current connection (the proxy keeps accepting new ones)."""
        for scope in list(self._scopes):
            scope.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await trio.aclose_forcefully(client)
            return
        try:
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, upstream, True, scope)
                    nursery.start_soon(self._pump, upstream, client, False, scope)
            self._scopes.discard(scope)
        finally:
            # Each close in its own finally: under cancellation the first one raises
            # Cancelled (after closing), which would skip the second.
            try:
                await trio.aclose_forcefully(client)
            finally:
                await trio.aclose_forcefully(upstream)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, to_hub: bool, scope: Any
    ) -> None:
        try:
            while True:
                # Read even while frozen (one chunk, then hold it, and an end of the
                # stream too): a test can see what reached the proxy. More waits in the
                # TCP buffers.
                try:
                    data = await source.receive_some(1 << 16)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if to_hub:
                    self.from_client_bytes += len(data)
                await (self._to_hub if to_hub else self._to_client).wait()
                if not data:
                    break
                await sink.send_all(data)
                if not to_hub:
                    self.to_client_bytes += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # one side ended: end the other too


@asynccontextmanager
async def proxied(target: Served | int) -> AsyncIterator[Proxy]:
    """A :class:`Proxy` in front of a served hub (or of any port on 127.0.0.1)."""
    proxy = Proxy(target if isinstance(target, int) else target.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        yield proxy
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def fake_hub(
    handler: Callable[[WebSocketRequest], Awaitable[None]],
) -> AsyncIterator[int]:
    """A WebSocket server on 127.0.0.1 that is not a hub: ``handler`` plays its part.

    Yields the port. Its connections are trio-websocket's (:class:`_Connection`); one is cut
    when ``handler`` returns.
    """

    async def serve_one(stream: trio.SocketStream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await handler(await _wrap_server(nursery, stream, max_message_size=1 << 24))
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, serve_one, 0, host="127.0.0.1"))
        yield listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()
