"""Wire benchmark: envelopes/s over loopback WebSocket against the same work through LocalLink.

``python -m benchmarks wire``. One process, one hub on a MemoryStore (this measures the
transport, not fsync), two HubClients; each scenario runs once through ``LocalLink`` and
once through ``WsLink`` to the hub served on 127.0.0.1, alternately, and prints medians of
``REPEATS`` runs and the ratio WebSocket / LocalLink:

- **stream**: 16 posters on one connection, each in its own conversation with one sink on
  another connection, post 125 texts each, one after the other; the time runs until the
  sink's client has received (and acked) all 2000. Envelopes/s.
- **echo**: a person asks, an echo agent (the default turn handler) answers, 200 times in
  a row, one conversation. Round trips/s (each is two envelopes plus the turn handler's
  control calls, which are RPCs over a WebSocket).
- **rpc**: one client makes 1000 ``get_session`` calls in a row (each an RPC over a
  WebSocket: request, answer). Calls/s.

The same run measures the **raw trio-websocket floor** (issue 15's yardstick for "WebSocket
RPCs >= 0.8x the raw floor"): a bare ``trio_websocket`` server on 127.0.0.1 that answers
each message with a message of the same size (that of a text envelope's JSON), one client,
(a) sequential request/reply round trips and (b) pipelined messages (the client sends them
all without waiting while a second task reads the answers). The troupe rows print their
WebSocket rate against these: rpc against (a), stream against (b) (a streamed envelope
takes four WebSocket messages: post, answer, delivery, receipt).

Next to the trio-websocket floor, the same two floors through a minimal **trio driver of
the ``websockets`` package's sans-I/O protocol** (``ClientProtocol`` / ``ServerProtocol``:
bytes in, events and bytes out; :class:`SansIOWebSocket` below is the whole driver, no
task of its own: a reader parses what it receives and answers pings inline), measured
alternately with trio-websocket in the same run (issue 15 item 5: keep whichever is faster).
The websockets driver won end to end, so troupe's transport is now a production driver of the
same protocol (``troupe/transport/_wsdriver.py``: keepalive, closing handshake, TLS, limits);
this minimal one stays as the floor's measure, next to trio-websocket's.

Last, **serve**: the stream's posts through ``troupe serve`` (a process of its own, on an
SQLite file) from this process over WebSocket, against the same posts in process
(``LocalLink``) on a hub opened on an SQLite file with the same defaults (issue 15's "WebSocket
posts through ``troupe serve`` >= 0.6x in-process posts on the same store"); each run on a
fresh file, the two alternating. The row also prints the CPU per envelope over the timed part
(medians): of the process in process (hub, clients and the SQLite writer thread), and through
``troupe serve`` of that process (read from /proc, so on Linux only) and of its client (this
one).

Everything else runs on one core here: over WebSocket the hub and both clients encode, frame
and decode JSON on the same trio thread that a real deployment would spread over processes.
"""

from __future__ import annotations

import functools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import trio
from trio_websocket import WebSocketRequest, open_websocket_url, serve_websocket
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from troupe import EV_TEXT, Envelope, Hub, HubClient, LocalLink, Passport, Rule, Turn, open_hub
from troupe.model import InboxBlock, LimitsBlock, dumps
from troupe.transport import WsLink, serve_ws

REPEATS = 5
POSTERS = 16
POSTS = 125  # per poster
ROUND_TRIPS = 200
RPCS = 1000
#: Messages per pipelined run of the raw trio-websocket floor.
PIPELINED = 2000

Transport = Literal["local", "ws"]


class Echo:
    async def respond(self, turn: Turn) -> str | None:
        return f"echo: {turn.text}"


async def with_clients(
    transport: Transport, scenario: Callable[[HubClient, HubClient], Awaitable[float]]
) -> float:
    """Run ``scenario`` with two clients of a fresh hub over ``transport``; its rate."""
    async with open_hub() as hub, trio.open_nursery() as nursery:

        def link() -> LocalLink | WsLink:
            if transport == "local":
                return LocalLink(hub)
            return WsLink(url, ping_interval=60.0)

        url = ""
        if transport == "ws":
            server = await nursery.start(_serve, hub)
            url = f"ws://127.0.0.1:{server.port}"
        async with HubClient(link()) as one, HubClient(link()) as two:
            rate = await scenario(one, two)
        nursery.cancel_scope.cancel()
        return rate


#: What ``troupe serve`` prints once it listens.
LISTENING = re.compile(rb"listening on ws://127\.0\.0\.1:(\d+)")
#: The ``troupe serve`` process of the run under way (its CPU is read from /proc).
SERVED: dict[str, int] = {}
#: CPU seconds per side over the last stream's timed part: "client" (this process) and,
#: through ``troupe serve`` on Linux, "serve" (that process, its threads included).
WINDOW_CPU: dict[str, float] = {}


def _process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) of this process, or of process ``pid`` (None where
    /proc cannot tell)."""
    if pid is None:
        return time.process_time()
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_now() -> dict[str, float]:
    sides = {"client": _process_cpu(None)}
    if "pid" in SERVED:
        sides["serve"] = _process_cpu(SERVED["pid"])
    return {side: cpu for side, cpu in sides.items() if cpu is not None}


@asynccontextmanager
async def troupe_serve(db: Path) -> AsyncIterator[str]:
    """A ``troupe serve`` process on ``db`` until the block ends; yields its URL."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "troupe", "serve", "--db", str(db), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    SERVED["pid"] = process.pid
    try:
        assert process.stdout is not None
        printed = b""
        while (found := LISTENING.search(printed)) is None:
            chunk = await process.stdout.receive_some()
            if not chunk:
                raise RuntimeError("troupe serve exited before it listened")
            printed += chunk
        yield f"ws://127.0.0.1:{int(found.group(1))}"
    finally:
        SERVED.clear()
        process.terminate()
        await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


async def on_sqlite(
    transport: Transport, scenario: Callable[[HubClient, HubClient], Awaitable[float]]
) -> float:
    """Run ``scenario`` on a fresh SQLite file: in process over ``LocalLink`` ("local") or
    through a ``troupe serve`` process over WebSocket ("ws"); its rate."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "hub.db"
        if transport == "local":
            async with open_hub(db) as hub:
                async with HubClient(LocalLink(hub)) as one, HubClient(LocalLink(hub)) as two:
                    return await scenario(one, two)
        async with troupe_serve(db) as url:
            link = functools.partial(WsLink, url, ping_interval=60.0)
            async with HubClient(link()) as one, HubClient(link()) as two:
                return await scenario(one, two)


async def _serve(hub: Hub, *, task_status: trio.TaskStatus[object]) -> None:
    await serve_ws(hub, "127.0.0.1", 0, ping_interval=60.0, task_status=task_status)


async def stream(posting: HubClient, receiving: HubClient) -> float:
    """Envelopes/s from POSTERS posters to one sink, delivered and acked."""
    # No inbox cap: the posters outrun the sink's acks by more than the default 1000.
    unbounded = Rule(limits=LimitsBlock(inbox=InboxBlock(max_pending=0)))
    sink = await receiving.register_human(Passport(name="sink"), rule=unbounded)
    total = POSTERS * POSTS
    received = 0
    all_in = trio.Event()

    async def count(envelope: Envelope) -> None:
        nonlocal received
        if envelope.event_type == EV_TEXT:
            received += 1
            if received == total:
                all_in.set()
        await trio.lowlevel.checkpoint()

    sink.on_envelope(count)
    posters: list[tuple[str, str]] = []  # (agent id, session id)
    for i in range(POSTERS):
        poster = await posting.register_human(Passport(name=f"poster-{i}"))
        md = await posting.create_session(
            creator_id=poster.agent_id,
            manifest_type="conversation",
            participants=[sink.agent_id],
            knobs={"max_turns": None},  # a benchmark posts past the default cap
        )
        posters.append((poster.agent_id, md.session_id))

    async def post_all(agent_id: str, session_id: str) -> None:
        for n in range(POSTS):
            text = Envelope(
                session_id=session_id,
                sender_id=agent_id,
                event_type=EV_TEXT,
                event_data={"text": f"message {n}"},
            )
            await posting.post_envelope(text)

    cpu = _cpu_now()
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for agent_id, session_id in posters:
            nursery.start_soon(post_all, agent_id, session_id)
    await all_in.wait()
    rate = total / (time.perf_counter() - start)
    WINDOW_CPU.clear()
    WINDOW_CPU.update({side: used - cpu[side] for side, used in _cpu_now().items()})
    return rate


def text_is(text: str) -> Callable[[Envelope], bool]:
    return lambda envelope: envelope.text == text


async def echo(asking: HubClient, answering: HubClient) -> float:
    """Round trips/s between a person and an echo agent."""
    await answering.register(Echo(), Passport(name="echo"))
    me = await asking.register_human(Passport(name="me"))
    chat = await me.open(type="conversation", target="echo", knobs={"max_turns": None})
    start = time.perf_counter()
    for n in range(ROUND_TRIPS):
        await me.send(chat.session_id, f"ping {n}")
        await me.wait_for_channel_event(
            channel_id=chat.session_id, predicate=text_is(f"echo: ping {n}"), timeout=10
        )
    return ROUND_TRIPS / (time.perf_counter() - start)


async def rpc(calling: HubClient, other: HubClient) -> float:
    """Sequential get_session calls from one client: calls/s."""
    me = await calling.register_human(Passport(name="me"))
    you = await other.register_human(Passport(name="you"))
    md = await calling.create_session(
        creator_id=me.agent_id, manifest_type="conversation", participants=[you.agent_id]
    )
    start = time.perf_counter()
    for _ in range(RPCS):
        await calling.get_session(md.session_id)
    return RPCS / (time.perf_counter() - start)


# -- the raw trio-websocket floor -------------------------------------------------------------

#: The floor's message: as long as the JSON of a stamped text envelope like the stream's.
FLOOR_MESSAGE = "x" * len(
    dumps(
        Envelope(
            session_id="s" * 32,
            sender_id="a" * 32,
            event_type=EV_TEXT,
            event_data={"text": "message 0"},
            envelope_id="e" * 32,
            seq=1,
            created_at="2026-01-01T00:00:00.000000+00:00",
        )
    )
)


async def _answer_each(request: WebSocketRequest) -> None:
    ws = await request.accept()
    while True:
        message = await ws.get_message()
        await ws.send_message(message)


async def raw_floor(kind: Literal["rpc", "pipelined"], n: int) -> float:
    """Messages (pipelined) or round trips (rpc) per second through bare trio-websocket."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, _answer_each, "127.0.0.1", 0, None)
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}") as ws:
            start = time.perf_counter()
            if kind == "rpc":
                for _ in range(n):
                    await ws.send_message(FLOOR_MESSAGE)
                    await ws.get_message()
            else:

                async def send_all() -> None:
                    for _ in range(n):
                        await ws.send_message(FLOOR_MESSAGE)

                async with trio.open_nursery() as sending:
                    sending.start_soon(send_all)
                    for _ in range(n):
                        await ws.get_message()
            rate = n / (time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return rate


# -- the same floor through the websockets package's sans-I/O protocol ----------------------


class SansIOWebSocket:
    """A trio driver of a ``websockets`` sans-I/O protocol: text messages over a stream.

    Minimal but complete for this benchmark: it frames and masks through the protocol,
    reassembles fragmented messages, answers pings (the protocol queues the pong; the
    reader writes it), and refuses a message over ``max_size`` as the protocol does.
    """

    def __init__(self, stream: trio.abc.Stream, protocol: Protocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self.messages: deque[str] = deque()
        self._fragments: list[bytes] = []
        self._send_lock = trio.Lock()

    async def _write(self) -> None:
        data = self.protocol.data_to_send()
        if data:
            async with self._send_lock:
                for chunk in data:
                    if chunk:
                        await self.stream.send_all(chunk)
                    else:  # (SEND_EOF: the protocol closed)
                        await self.stream.aclose()

    async def _read_events(self) -> list[Any]:
        data = await self.stream.receive_some(1 << 16)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        await self._write()  # pongs, close frames
        events = self.protocol.events_received()
        if not data and not events:
            raise trio.EndOfChannel("the peer closed the connection")
        return events

    async def send_message(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        await self._write()

    async def get_message(self) -> str:
        while not self.messages:
            for event in await self._read_events():
                if not isinstance(event, Frame):
                    continue
                if event.opcode in (Opcode.TEXT, Opcode.CONT):
                    self._fragments.append(bytes(event.data))
                    if event.fin:
                        self.messages.append(b"".join(self._fragments).decode())
                        self._fragments.clear()
        return self.messages.popleft()

    @classmethod
    async def connect(cls, host: str, port: int) -> SansIOWebSocket:
        """The client's opening handshake."""
        stream = await trio.open_tcp_stream(host, port)
        ws = cls(stream, ClientProtocol(parse_uri(f"ws://{host}:{port}/")))
        assert isinstance(ws.protocol, ClientProtocol)
        ws.protocol.send_request(ws.protocol.connect())
        await ws._write()
        while True:
            for event in await ws._read_events():
                if isinstance(event, Response):
                    if ws.protocol.handshake_exc is not None:
                        raise ws.protocol.handshake_exc
                    return ws

    @classmethod
    async def accept(cls, stream: trio.abc.Stream) -> SansIOWebSocket:
        """The server's opening handshake."""
        protocol = ServerProtocol()
        ws = cls(stream, protocol)
        while True:
            for event in await ws._read_events():
                if isinstance(event, Request):
                    protocol.send_response(protocol.accept(event))
                    await ws._write()
                    return ws


async def _answer_each_sans_io(stream: trio.SocketStream) -> None:
    try:
        ws = await SansIOWebSocket.accept(stream)
        while True:
            await ws.send_message(await ws.get_message())
    except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def raw_floor_sans_io(kind: Literal["rpc", "pipelined"], n: int) -> float:
    """:func:`raw_floor` through :class:`SansIOWebSocket` at both ends."""
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, _answer_each_sans_io, 0, host="127.0.0.1")
        )
        ws = await SansIOWebSocket.connect("127.0.0.1", listener.socket.getsockname()[1])
        start = time.perf_counter()
        if kind == "rpc":
            for _ in range(n):
                await ws.send_message(FLOOR_MESSAGE)
                await ws.get_message()
        else:

            async def send_all() -> None:
                for _ in range(n):
                    await ws.send_message(FLOOR_MESSAGE)

            async with trio.open_nursery() as sending:
                sending.start_soon(send_all)
                for _ in range(n):
                    await ws.get_message()
        rate = n / (time.perf_counter() - start)
        await trio.aclose_forcefully(ws.stream)
        nursery.cancel_scope.cancel()
    return rate


def compare_drivers(n_rpc: int, n_pipelined: int) -> dict[str, float]:
    """Median floors of both drivers, runs alternating: ``{driver kind: rate}``."""
    runs: dict[str, list[float]] = {}
    for _ in range(REPEATS):
        kinds: tuple[tuple[Literal["rpc", "pipelined"], int], ...] = (
            ("rpc", n_rpc),
            ("pipelined", n_pipelined),
        )
        for kind, n in kinds:
            runs.setdefault(f"trio-websocket {kind}", []).append(trio.run(raw_floor, kind, n))
            runs.setdefault(f"websockets {kind}", []).append(trio.run(raw_floor_sans_io, kind, n))
    return {name: statistics.median(rates) for name, rates in runs.items()}


def measure(
    scenario: Callable[[HubClient, HubClient], Awaitable[float]],
    floor: Callable[[], float] | None = None,
    run: Callable[..., Awaitable[float]] = with_clients,
) -> dict[str, float]:
    """Median rate per transport (and of ``floor``, the raw baseline, if given); the runs
    alternate so a slow spell hits every side alike. ``run`` sets a scenario up
    (:func:`with_clients`, :func:`on_sqlite`)."""
    runs: dict[str, list[float]] = {"local": [], "ws": [], "raw": []}
    for _ in range(REPEATS):
        for transport in ("local", "ws"):
            WINDOW_CPU.clear()
            runs[transport].append(trio.run(run, transport, scenario))
            for side, cpu in WINDOW_CPU.items():  # (the stream's: CPU per side)
                runs.setdefault(f"{transport} {side} cpu", []).append(cpu)
        if floor is not None:
            runs["raw"].append(floor())
    return {side: statistics.median(rates) for side, rates in runs.items() if rates}


def main() -> None:
    print(f"medians of {REPEATS} runs; one process, MemoryStore, loopback")
    rows: list[tuple[str, str, Callable[[HubClient, HubClient], Awaitable[float]], Any]] = [
        (
            f"stream: {POSTERS} posters -> 1 sink, {POSTERS * POSTS} texts",
            "envelopes/s",
            stream,
            ("pipelined", PIPELINED),
        ),
        (f"echo: {ROUND_TRIPS} ask/answer round trips", "round trips/s", echo, None),
        (f"rpc: {RPCS} get_session calls in a row", "calls/s", rpc, ("rpc", RPCS)),
    ]
    for title, unit, scenario, floor_args in rows:
        floor = None if floor_args is None else functools.partial(trio.run, raw_floor, *floor_args)
        rates = measure(scenario, floor)
        line = (
            f"{title:<44} LocalLink {rates['local']:>8,.0f}  WebSocket {rates['ws']:>8,.0f} "
            f"{unit}  ratio ws/local {rates['ws'] / rates['local']:.2f}"
        )
        if floor_args is not None:
            what = "round trips" if floor_args[0] == "rpc" else "messages"
            line += (
                f"  raw trio-websocket {floor_args[0]} floor {rates['raw']:>8,.0f} {what}/s"
                f"  ratio ws/floor {rates['ws'] / rates['raw']:.2f}"
            )
        print(line)
    served = measure(stream, run=on_sqlite)
    per = 1e6 / (POSTERS * POSTS)  # CPU seconds of a run -> µs per envelope
    cpu = "".join(
        f"  {label} {served[key] * per:,.0f}"
        for label, key in (
            ("in process", "local client cpu"),
            ("serve process", "ws serve cpu"),
            ("its client", "ws client cpu"),
        )
        if key in served
    )
    print(
        f"{'serve: the stream on SQLite':<44} in process {served['local']:>8,.0f}  "
        f"troupe serve {served['ws']:>8,.0f} envelopes/s  "
        f"ratio serve/in-process {served['ws'] / served['local']:.2f}  CPU µs/envelope:{cpu}"
    )
    drivers = compare_drivers(RPCS, PIPELINED)
    for kind, what in (("rpc", "round trips"), ("pipelined", "messages")):
        tw, ws = drivers[f"trio-websocket {kind}"], drivers[f"websockets {kind}"]
        print(
            f"driver {kind:<9} floor: trio-websocket {tw:>8,.0f} {what}/s  "
            f"websockets sans-I/O {ws:>8,.0f} {what}/s  ratio websockets/trio-websocket "
            f"{ws / tw:.2f}"
        )


if __name__ == "__main__":
    main()
