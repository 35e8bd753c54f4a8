"""Helpers for the WebSocket tests: a hub served on 127.0.0.1, raw connections, agents.

Real sockets do not mix with the autojump MockClock (it jumps while the loop waits on I/O),
so these tests run on the real clock with small heartbeats and tight ``fail_after`` caps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from troupe import Hub, Turn, open_hub
from troupe.hub import AuthAdapter
from troupe.model import Frame, decode_frame, encode_frame
from troupe.store import Store
from troupe.transport import WsLink, serve_ws

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

    def link(self, **kwargs: Any) -> WsLink:
        return WsLink(self.url, ping_interval=kwargs.pop("ping_interval", QUIET), **kwargs)


@asynccontextmanager
async def serving(
    *,
    store: Store | None = None,
    auth: Iterable[AuthAdapter] | None = None,
    ping_interval: float = QUIET,
    ping_timeout: float | None = None,
    port: int = 0,
) -> AsyncIterator[Served]:
    """Open a hub and serve it on 127.0.0.1 (a random port unless ``port`` is given)."""
    async with open_hub(store, auth=auth) as hub, trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_ws(
                hub,
                "127.0.0.1",
                port,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout if ping_timeout is not None else ping_interval,
                task_status=task_status,
            )
        )
        yield Served(hub, f"ws://127.0.0.1:{server.port}", server.port)
        nursery.cancel_scope.cancel()


async def wait_until(condition: Callable[[], bool], *, every: float = 0.005) -> None:
    """Poll ``condition`` until it holds (callers cap the wait with ``fail_after``).

    For hub state that has no event to wait on (a connection's teardown, a cursor).
    """
    while True:
        if condition():
            return
        await trio.sleep(every)


class Raw:
    """A hand-driven WebSocket connection to the hub: frames in, frames out, no client."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, frame: Frame) -> None:
        await self.ws.send_message(encode_frame(frame))

    async def send_text(self, text: str | bytes) -> None:
        await self.ws.send_message(text)

    async def receive(self) -> Frame:
        return decode_frame(await self.ws.get_message())

    async def receive_kind(self, kind: type[Any]) -> Any:
        """The next frame of class ``kind`` (skipping others, such as notifications)."""
        while True:
            frame = await self.receive()
            if isinstance(frame, kind):
                return frame


@asynccontextmanager
async def raw(url: str, **kwargs: Any) -> AsyncIterator[Raw]:
    async with open_websocket_url(url, **kwargs) as ws:
        yield Raw(ws)


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
