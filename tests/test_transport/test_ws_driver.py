"""troupe's trio driver of the websockets protocol, over in-memory streams (no sockets).

What the transport's tests cannot pin down from outside: reading in the consumer's task
while a send is under way, pongs queued behind that send, a send cut short, a bounded close,
the handshake's failures.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from websockets.uri import parse_uri

from troupe import ConnectionLost, HandshakeFailed, HubClient, Passport
from troupe.transport import WsLink
from troupe.transport._wsdriver import WebSocket, WebSocketClosed, accept, connect

from ._wire import QUIET, Echo, serving, wait_until

StreamPair = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]
URI = parse_uri("ws://hub.example/")


@asynccontextmanager
async def connected(
    pair: StreamPair = trio.testing.memory_stream_pair, *, max_size: int = 1 << 20
) -> AsyncIterator[tuple[WebSocket, WebSocket]]:
    """A client and a server connection, handshake done: (client, server)."""
    client_stream, server_stream = pair()
    accepted: list[WebSocket | None] = []

    async def serve() -> None:
        accepted.append(await accept(server_stream, max_size=max_size))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        client = await connect(client_stream, URI, max_size=max_size)
    (server,) = accepted
    assert server is not None
    try:
        yield client, server
    finally:
        await trio.aclose_forcefully(client.stream)
        await trio.aclose_forcefully(server.stream)


async def test_messages_text_binary_and_fragmented_arrive_in_order() -> None:
    async with connected() as (client, server):
        await client.send_message("héllo")
        await client.send_message(b"\x00\x01")
        client._protocol.send_text(b"frag", fin=False)
        client._protocol.send_continuation(b"ment", fin=True)
        await client._flush()
        assert await server.receive() == "héllo".encode()
        assert await server.receive() == b"\x00\x01"
        assert await server.receive() == b"fragment"
        await server.send_message("back")
        assert await client.receive() == b"back"


async def test_a_pong_waits_behind_a_send_under_way_and_the_reader_reads_on() -> None:
    """The client's send blocks (the server reads nothing yet); a ping reaches the client's
    reader, which must not wait for that send to write the pong: it reads on. The pong
    follows the blocked message once the server reads."""
    with trio.fail_after(5):
        async with (
            connected(trio.testing.lockstep_stream_pair) as (client, server),
            trio.open_nursery() as nursery,
        ):
            big = "x" * 100_000
            sent = trio.Event()
            got: list[bytes] = []

            async def send_big() -> None:
                await client.send_message(big)
                sent.set()

            async def read() -> None:  # the client's consumer
                while (message := await client.receive()) is not None:
                    got.append(message)

            nursery.start_soon(send_big)
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()  # blocked: nobody reads the server's side
            answered = await server.ping()
            assert answered is not None
            await server.send_message("after the ping")
            await trio.testing.wait_all_tasks_blocked()
            # The client's reader parsed the ping and read on, the send still blocked.
            assert got == [b"after the ping"]
            assert not sent.is_set()
            assert not answered.is_set()
            # The server reads: the big message, then the pong the client's send wrote
            # after it (and only then does that send return).
            assert await server.receive() == big.encode()
            last: list[bytes | None] = []

            async def server_reads() -> None:
                last.append(await server.receive())

            nursery.start_soon(server_reads)
            await sent.wait()
            await answered.wait()
            await client.send_message("last")
            await trio.testing.wait_all_tasks_blocked()
            assert last == [b"last"]
            nursery.cancel_scope.cancel()


async def test_a_send_cut_short_breaks_the_connection_and_closes_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(trio.testing.lockstep_stream_pair) as (client, server):
        with trio.move_on_after(1) as cut:
            await client.send_message("x" * 100_000)  # the server reads nothing
        assert cut.cancelled_caught
        assert not client.open
        with pytest.raises(WebSocketClosed):
            await client.send_message("more")
        # The stream is closed: the peer reads what got through, then the end of the
        # stream (no close frame), never a frame that stops midway and goes on.
        while await server.receive() is not None:
            pass
        assert server.close_code is None
        assert client.ended.is_set()


async def test_a_send_cancelled_before_it_starts_sends_nothing_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (client, server):
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.send_message("never")
        assert client.open  # nothing was written: the connection is intact
        await client.send_message("next")
        assert await server.receive() == b"next"


async def test_a_message_over_max_size_closes_with_1009() -> None:
    async with connected(max_size=1000) as (client, server):
        await client.send_message("x" * 2000)
        assert await server.receive() is None
        assert await client.receive() is None
        assert client.close_code == 1009


async def test_a_close_completes_when_the_peer_reads() -> None:
    with trio.fail_after(5):
        async with connected() as (client, server), trio.open_nursery() as nursery:
            got: list[bytes | None] = []

            async def read_all() -> None:
                while (message := await server.receive()) is not None:
                    got.append(message)
                got.append(None)
                await server.aclose()

            nursery.start_soon(read_all)
            await client.send_message("bye")
            await client.aclose()
            assert got == [b"bye", None]
            assert server.close_code == 1000
            assert client.close_code == 1000


async def test_a_close_the_peer_never_answers_is_cut_when_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (client, server):
        with trio.move_on_after(2):
            await client.aclose()  # the server reads nothing: no close frame comes back
        assert trio.current_time() == pytest.approx(2)
        assert not client.open
        # The client's stream is closed: the server reads the close frame, then the end.
        assert await server.receive() is None


async def test_a_server_that_refuses_the_upgrade_fails_the_handshake() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def refuse() -> None:
        await server_stream.receive_some()
        await server_stream.send_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(refuse)
        with pytest.raises(HandshakeFailed, match="403"):
            await connect(client_stream, URI, max_size=1000)


async def test_a_server_that_closes_during_the_handshake_resets_the_connection() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def hang_up() -> None:
        await server_stream.receive_some()
        await server_stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hang_up)
        with pytest.raises(ConnectionResetError, match="during the handshake"):
            await connect(client_stream, URI, max_size=1000)


async def test_a_client_that_is_not_a_websocket_is_answered_and_let_go() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await client_stream.send_all(b"GET / HTTP/1.1\r\nHost: hub.example\r\n\r\n")
    assert await accept(server_stream, max_size=1000) is None
    assert (await client_stream.receive_some()).startswith(b"HTTP/1.1 426 ")


async def test_hub_client_reports_a_refused_handshake_as_connection_lost() -> None:
    """What answers at the hub's address is not a WebSocket server: the HubClient gives up
    with ConnectionLost, the handshake's failure as its cause."""

    async def http_only(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await stream.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(
                functools.partial(trio.serve_tcp, http_only, 0, host="127.0.0.1")
            )
            port = listener.socket.getsockname()[1]
            with pytest.raises(ConnectionLost, match="404") as lost:
                async with HubClient(WsLink(f"ws://127.0.0.1:{port}")):
                    pass
            assert isinstance(lost.value.__cause__, HandshakeFailed)
            nursery.cancel_scope.cancel()


#: A self-signed certificate for 127.0.0.1 (valid until 2126) and its key: test use only.
TLS = Path(__file__).parent / "tls"


def _tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts: the client trusts the test certificate."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(TLS / "cert.pem", TLS / "key.pem")
    client = ssl.create_default_context(cafile=TLS / "cert.pem")
    return server, client


async def test_a_hub_served_over_tls() -> None:
    server_context, client_context = _tls_contexts()
    with trio.fail_after(10):
        async with serving(ssl_context=server_context) as served:
            url = f"wss://127.0.0.1:{served.port}"
            link = WsLink(url, ssl_context=client_context, ping_interval=QUIET)
            async with HubClient(link) as hc:
                me = await hc.register(Echo(), Passport(name="echo"))
                assert (await hc.get_agent("echo")).agent_id == me.agent_id
            # A client that does not trust the certificate gets no connection.
            with pytest.raises(ConnectionLost, match="certificate"):
                async with HubClient(WsLink(url, ping_interval=QUIET)):
                    pass
            await wait_until(lambda: served.server.limits.total == 0)
