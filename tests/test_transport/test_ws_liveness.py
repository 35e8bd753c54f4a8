"""Floods are slowed per connection; heartbeats drop peers that stop answering."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketRequest

from troupe import HubClient, HumanClient, Passport
from troupe.hub import _serve
from troupe.model import HelloFrame, RequestFrame, ResponseFrame, WelcomeFrame
from troupe.transport import WsLink, _ws

from ._wire import (
    FAST,
    QUIET,
    Echo,
    Proxy,
    Served,
    converse,
    fake_hub,
    proxied,
    raw,
    serving,
    wait_until,
)


async def test_a_flooding_connection_is_slowed_and_the_others_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_serve, "FRAMES_PER_SECOND", 100)
    monkeypatch.setattr(_serve, "FRAME_BURST", 20)
    flood = 60
    with trio.fail_after(5):
        async with (
            serving() as served,
            raw(served.url) as flooder,
            HubClient(served.link()) as other,
        ):
            await other.register(Echo(), Passport(name="echo"))
            answered: list[float] = []

            async def drain() -> None:
                while len(answered) < flood:
                    await flooder.receive_kind(ResponseFrame)
                    answered.append(trio.current_time())

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                for i in range(flood):
                    await flooder.send(
                        RequestFrame(request_id=f"f{i}", op="find_agent_id", params={"name": "x"})
                    )
                # While the flooder waits for its tokens, another connection is served.
                slowest = 0.0
                for _ in range(5):
                    asked = trio.current_time()
                    assert (await other.get_agent("echo")).name == "echo"
                    slowest = max(slowest, trio.current_time() - asked)
                    await trio.sleep(0.02)
            # Every flooded request was answered, but at the bucket's pace: 20 at once,
            # then 100 per second.
            assert len(answered) == flood
            assert answered[-1] - start >= (flood - 20) / 100 * 0.8
            assert slowest < 0.1


async def test_the_hub_drops_a_peer_that_stops_answering_pings() -> None:
    with trio.fail_after(5):
        async with serving(ping_interval=FAST) as served:
            async with HubClient(served.link()) as hc:
                await hc.register(Echo(), Passport(name="echo"))
            hub = served.hub
            echo = hub.find_agent_id("echo")
            async with raw(served.url) as ws:
                await ws.send(HelloFrame(name="echo", request_id="h"))
                await ws.receive_kind(WelcomeFrame)
                assert echo in hub.core.bindings
                # Stop reading: once trio-websocket's one-message queue is full, its reader
                # stops too, and with it the pongs.
                for i in range(4):
                    await ws.send(
                        RequestFrame(request_id=f"q{i}", op="find_agent_id", params={"name": "x"})
                    )
                await wait_until(lambda: echo not in hub.core.bindings)
                await wait_until(lambda: hub.statistics().connections == 0)


async def test_a_stalled_path_is_dropped_by_both_ends_and_the_client_comes_back() -> None:
    with trio.fail_after(5):
        async with serving(ping_interval=FAST) as served, proxied(served) as proxy:
            link = served.link(ping_interval=FAST, ping_timeout=FAST, connect_timeout=0.2)
            link.url = proxy.url
            async with HubClient(link) as hc:
                bot = await hc.register(Echo(), Passport(name="echo"))
                hub = served.hub
                assert bot.agent_id in hub.core.bindings
                proxy.freeze()
                # The hub stops hearing pongs and lets the identity go ...
                await wait_until(lambda: bot.agent_id not in hub.core.bindings)
                # ... and the client, hearing nothing either, drops its end and retries.
                await wait_until(lambda: hc.endpoint_id is None)
                proxy.thaw()
                assert (await hc.get_agent("echo")).agent_id == bot.agent_id
                assert bot.agent_id in hub.core.bindings
                assert proxy.accepted >= 2


#: 100 of these are 20 MB: more than the loopback buffers hold.
BIG = "x" * 200_000


@asynccontextmanager
async def stalled_sink(served: Served, proxy: Proxy) -> AsyncIterator[tuple[HumanClient, str]]:
    """A talker, and a sink behind ``proxy`` whose client reads nothing any more: the
    talker and the conversation they share."""
    async with HubClient(served.link()) as poster:
        link = served.link()
        link.url = proxy.url
        async with HubClient(link) as hc:
            talker, _, session_id = await converse(poster, hc, ("talker", "sink"))
            proxy.freeze(to_hub=False)  # nothing reaches the sink's client any more
            yield talker, session_id
            proxy.cut()


async def test_a_peer_stalled_with_a_full_pipe_is_dropped_too() -> None:
    """The hub's writes to a peer that reads nothing block once the TCP buffers are full;
    the heartbeat must still drop it and release its identities."""
    with trio.fail_after(8):
        async with (
            serving(ping_interval=FAST) as served,
            proxied(served) as proxy,
            stalled_sink(served, proxy) as (talker, session_id),
        ):
            hub = served.hub
            sink_id = hub.find_agent_id("sink")

            async def post_much() -> None:
                for _ in range(100):
                    await talker.send(session_id, BIG)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(post_much)
                await wait_until(lambda: sink_id not in hub.core.bindings)
            assert len(await hub.read_wal(session_id)) >= 100


async def test_the_hub_stops_promptly_with_a_peer_stalled_on_a_full_pipe() -> None:
    with trio.fail_after(8):
        async with (
            serving() as served,
            proxied(served) as proxy,
            stalled_sink(served, proxy) as (talker, session_id),
        ):
            sink_id = served.hub.find_agent_id("sink")
            assert sink_id is not None
            sink = served.hub.core.bindings[sink_id]
            for _ in range(100):
                await talker.send(session_id, BIG)
            # The hub's writes to the sink fill the buffers and stall: once nothing runs
            # any more (I/O polled too), deliveries still wait in the sink's connection.
            await trio.testing.wait_all_tasks_blocked()
            assert sink.mailbox.statistics().queued > 0
            # Stopping the hub closes the stalled connection too, in bounded time.
            stopping = trio.current_time()
            await served.stop()
            assert trio.current_time() - stopping < 4


async def test_a_ping_that_arrives_while_closing_does_not_crash_the_client() -> None:
    """The client has sent its close frame and waits for the hub's; a hub ping comes first.
    trio-websocket 0.12 answered it, wsproto refused the pong in that state, and the
    LocalProtocolError escaped from the connection's reader into the HubClient."""
    with trio.fail_after(5):
        async with serving(ping_interval=FAST) as served, proxied(served) as proxy:
            link = served.link()
            link.url = proxy.url
            async with HubClient(link) as hc:
                await hc.register(Echo(), Passport(name="echo"))
                proxy.freeze(to_client=False)  # the close frame stays in the proxy
                pings = proxy.to_client_bytes
                await hc.close()  # the client's end now waits for the hub's close frame ...
                await wait_until(lambda: proxy.to_client_bytes > pings)  # ... and gets a ping


async def test_an_oversized_message_while_closing_does_not_crash_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """trio-websocket answers a message over its size limit with a close frame, which
    wsproto refuses once our own close frame is out (LocalProtocolError, in the reader)."""
    monkeypatch.setattr(_ws, "CLOSE_TIMEOUT", 0.3)
    go = trio.Event()

    async def hub(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await go.wait()
        with suppress(ConnectionClosed):
            await ws.send_message("x" * (9 << 20))
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with fake_hub(hub) as port, proxied(port) as proxy:
            async with HubClient(WsLink(proxy.url, ping_interval=QUIET)) as hc:
                proxy.freeze()
                go.set()  # the big message waits in the proxy
                held = proxy.from_client_bytes
                await hc.close()
                # Our close frame is out (and held by the proxy).
                await wait_until(lambda: proxy.from_client_bytes > held)
                proxy.thaw(to_hub=False)
            # Left without an exception, within the bounded close.


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_clients_that_reset_during_the_handshake_do_not_take_the_server_down() -> None:
    with trio.fail_after(5):
        async with serving() as served:
            limits = served.server.limits
            for _ in range(20):
                stream = await trio.open_tcp_stream("127.0.0.1", served.port)
                # SO_LINGER 0: closing sends a reset, so the hub's accept fails to send.
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await stream.send_all(UPGRADE[:-2])
                await wait_until(lambda: limits.total == 1)  # the hub is in the handshake
                await stream.send_all(UPGRADE[-2:])
                await trio.aclose_forcefully(stream)
                await wait_until(lambda: limits.total == 0)  # ... and let it go
            async with HubClient(served.link()) as hc:
                assert await hc.list_agents() == []


async def test_a_failure_in_one_connections_tasks_does_not_stop_the_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A connection's tasks (its heartbeat, its writer) ran in the server's nursery: an error
    # nobody expected in one of them (a bug) ended serve_ws, and every other client with it.
    heartbeat = _ws.WsEndpoint.keepalive
    failed = trio.Event()

    async def keepalive(self: _ws.WsEndpoint, interval: float, pong_within: float) -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("a bug in the first connection's heartbeat")
        await heartbeat(self, interval, pong_within)

    monkeypatch.setattr(_ws.WsEndpoint, "keepalive", keepalive)
    with trio.fail_after(10):
        async with serving() as served, raw(served.url) as first:
            await failed.wait()
            with pytest.raises(ConnectionClosed):  # that connection is let go ...
                await first.hello("first")
            async with HubClient(served.link()) as hc:  # ... and the others are served
                await hc.register_human(Passport(name="second"))
                assert [p.name for p in await hc.list_agents()] == ["second"]
    assert "a bug in the first connection's heartbeat" in caplog.text
