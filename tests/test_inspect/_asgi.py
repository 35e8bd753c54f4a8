"""Drive the inspector's ASGI app in process: plain requests through httpx, and the live feed
(which httpx's ASGI transport would buffer to its end) through a small SSE reader.

The reader takes the app's messages through an unbuffered channel: while the test does not
read, the app's ``send`` waits, as it would for a viewer whose socket is full.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import trio
from starlette.types import ASGIApp, Message


def client(app: ASGIApp, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://inspector", headers=headers
    )


class Feed:
    """One viewer of ``/api/events``: its status and the events it reads, in order."""

    def __init__(self, messages: trio.MemoryReceiveChannel[Message]) -> None:
        self._messages = messages
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self._buffer = b""
        self.ended = False
        #: Keep-alive comments read so far.
        self.keepalives = 0

    async def start(self) -> int:
        message = await self._messages.receive()
        assert message["type"] == "http.response.start", message
        self.status = message["status"]
        self.headers = dict(message["headers"])
        status: int = message["status"]
        return status

    async def _more(self) -> None:
        if self.ended:
            raise AssertionError("the feed ended")
        message = await self._messages.receive()
        assert message["type"] == "http.response.body", message
        chunk = message.get("body", b"")
        self.body += chunk
        self._buffer += chunk
        if not message.get("more_body", False):
            self.ended = True

    async def next(self) -> tuple[str, dict[str, Any]]:
        """The next event: its name and its data."""
        while True:
            while b"\n\n" not in self._buffer:
                await self._more()
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            if block.startswith(b":"):
                self.keepalives += 1
                continue
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n"))
            return fields[b"event"].decode(), orjson.loads(fields[b"data"])

    async def until(self, kind: str) -> dict[str, Any]:
        """Skip to the next event named ``kind``; its data."""
        while True:
            name, data = await self.next()
            if name == kind:
                return data


@asynccontextmanager
async def open_feed(
    app: ASGIApp, query: str = "", headers: Sequence[tuple[str, str]] = ()
) -> AsyncIterator[Feed]:
    """Open ``/api/events?query`` as one viewer; the viewer leaves when the block ends."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/events",
        "raw_path": b"/api/events",
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "server": ("inspector", 80),
        "client": ("127.0.0.1", 50000),
    }
    to_app, app_receives = trio.open_memory_channel[Message](math.inf)
    app_sends, from_app = trio.open_memory_channel[Message](0)

    async def send(message: Message) -> None:
        await app_sends.send(message)

    async def run() -> None:
        async with app_sends:
            await app(scope, app_receives.receive, send)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        feed = Feed(from_app)
        yield feed
        to_app.send_nowait({"type": "http.disconnect"})
        async for _ in from_app:  # whatever it still sends, until it returns
            pass
