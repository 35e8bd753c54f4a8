"""LocalLink: an in-process duplex of bounded memory channels between a client and a hub."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import cast

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from troupe import NotFoundError, Passport, open_hub
from troupe.hub import Endpoint, Hub
from troupe.model import Frame, PingFrame, PongFrame
from troupe.transport import LocalEndpoint, LocalLink, LocalLinkClient
from troupe.transport._local import BUFFER


class FakeHub:
    """Records the endpoints it is asked to serve, and serves none of them."""

    def __init__(self) -> None:
        self.attached: list[Endpoint] = []

    async def attach_endpoint(self, endpoint: Endpoint) -> str:
        await trio.lowlevel.checkpoint()
        self.attached.append(endpoint)
        return endpoint.endpoint_id


async def pair() -> tuple[FakeHub, LocalLinkClient, LocalEndpoint]:
    fake = FakeHub()
    link = LocalLink(cast(Hub, fake))
    client = link.client()
    await client.open()
    (endpoint,) = fake.attached
    assert isinstance(endpoint, LocalEndpoint)
    return fake, client, endpoint


async def read(end: LocalLinkClient | LocalEndpoint, n: int = 1) -> list[Frame]:
    """The next ``n`` frames that arrive at ``end``."""
    frames = end.frames()
    assert isinstance(frames, AsyncGenerator)
    async with aclosing(frames):
        return [await anext(frames) for _ in range(n)]


async def test_a_client_attaches_once_when_opened(autojump_clock: MockClock) -> None:
    fake = FakeHub()
    link = LocalLink(cast(Hub, fake))
    assert link.hub is cast(Hub, fake)
    client = link.client()
    assert fake.attached == []  # no I/O before open()
    await client.open()
    await client.open()  # idempotent
    assert [e.endpoint_id for e in fake.attached] == [client.endpoint_id]
    assert link.client().endpoint_id != client.endpoint_id


async def test_frames_travel_both_ways_as_the_same_objects(autojump_clock: MockClock) -> None:
    _, client, endpoint = await pair()
    ping = PingFrame(nonce="n1")
    pong = PongFrame(nonce="n1")
    await client.send_frame(ping)
    await endpoint.send_frame(pong)
    (got,) = await read(endpoint)
    assert got is ping  # passed by reference, never serialised
    (got,) = await read(client)
    assert got is pong


async def test_closing_either_end_ends_both_directions(autojump_clock: MockClock) -> None:
    for closer in ("client", "endpoint"):
        _, client, endpoint = await pair()
        await client.send_frame(PingFrame(nonce="before"))
        await (client if closer == "client" else endpoint).aclose()
        to_hub = [f async for f in endpoint.frames()]
        to_client = [f async for f in client.frames()]
        # What was sent before the close is still read by the other end.
        assert to_hub == ([PingFrame(nonce="before")] if closer == "client" else [])
        assert to_client == []


async def test_a_send_after_close_is_dropped_silently(autojump_clock: MockClock) -> None:
    _, client, endpoint = await pair()
    await endpoint.aclose()
    await client.send_frame(PingFrame())  # the hub is gone: no error
    await client.aclose()
    await client.send_frame(PingFrame())  # our own end is closed: no error either
    await endpoint.send_frame(PongFrame())
    assert [f async for f in client.frames()] == []


async def test_each_direction_holds_buffer_frames_then_waits(autojump_clock: MockClock) -> None:
    _, client, endpoint = await pair()
    for i in range(BUFFER):
        await client.send_frame(PingFrame(nonce=str(i)))
    with trio.move_on_after(1) as waited:
        await client.send_frame(PingFrame(nonce="one too many"))
    assert waited.cancelled_caught  # backpressure: the sender waits for the reader
    sent = trio.Event()

    async def send_last() -> None:
        await client.send_frame(PingFrame(nonce="last"))
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_last)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()
        await read(endpoint)  # one read makes room
    assert sent.is_set()
    await client.aclose()
    nonces = [f.nonce async for f in endpoint.frames() if isinstance(f, PingFrame)]
    assert nonces[-1] == "last"
    assert len(nonces) == BUFFER  # 1..BUFFER-1 still queued, plus the last


async def test_with_a_hub_open_serves_and_close_releases(autojump_clock: MockClock) -> None:
    async with open_hub(ttl_sweep_interval=0) as hub:
        client = LocalLink(hub).client()
        await client.open()
        assert hub.statistics().connections == 1
        bob = await hub.register(Passport(name="bob"))
        assert bob.agent_id is not None
        await hub.bind_endpoint(client.endpoint_id, bob.agent_id)
        assert bob.agent_id in hub.core.bindings
        await client.send_frame(PingFrame(nonce="x"))
        assert await read(client) == [PongFrame(nonce="x")]
        await client.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert hub.statistics().connections == 0
        assert bob.agent_id not in hub.core.bindings


async def test_binding_an_unattached_endpoint_is_refused(autojump_clock: MockClock) -> None:
    async with open_hub(ttl_sweep_interval=0) as hub:
        client = LocalLink(hub).client()  # never opened
        bob = await hub.register(Passport(name="bob"))
        with pytest.raises(NotFoundError, match="endpoint not attached"):
            await hub.bind_endpoint(client.endpoint_id, bob.agent_id or "")


async def test_receipts_do_not_spend_a_connections_request_budget(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from troupe.hub import _serve
    from troupe.model import ReceiptFrame

    monkeypatch.setattr(_serve, "FRAMES_PER_SECOND", 5)
    monkeypatch.setattr(_serve, "FRAME_BURST", 5)
    async with open_hub(ttl_sweep_interval=0) as hub:
        client = LocalLink(hub).client()
        await client.open()
        for n in range(50):  # far beyond the budget, but receipts
            await client.send_frame(ReceiptFrame(envelope_id=f"e{n}", seq=n + 1))
        start = trio.current_time()
        await client.send_frame(PingFrame(nonce="after-receipts"))
        (pong,) = await read(client)
        assert pong == PongFrame(nonce="after-receipts")
        assert trio.current_time() - start < 1.0  # not held back by the receipts
        for n in range(10):  # requests do spend it: the tenth waits for tokens
            await client.send_frame(PingFrame(nonce=f"p{n}"))
        await read(client, 10)
        assert trio.current_time() - start >= 1.0
        await client.aclose()


async def test_send_frame_nowait_takes_a_frame_only_while_there_is_room(
    autojump_clock: MockClock,
) -> None:
    _, client, endpoint = await pair()
    for n in range(BUFFER):
        assert client.send_frame_nowait(PingFrame(nonce=str(n)))
    assert not client.send_frame_nowait(PingFrame(nonce="over"))  # full: the caller waits
    got = await read(endpoint, BUFFER)
    assert [f.nonce for f in got if isinstance(f, PingFrame)] == [str(n) for n in range(BUFFER)]
    await endpoint.aclose()
    assert client.send_frame_nowait(PingFrame(nonce="late"))  # closed: dropped, as send_frame


async def test_a_frame_sent_nowait_goes_straight_to_a_waiting_readers_taker(
    autojump_clock: MockClock,
) -> None:
    """Issue 15, item 3: the reader's taker gets the frame in the sender's task (no step of
    the reader's), and the frames it does not take are queued as before."""
    _, client, endpoint = await pair()
    taken: list[Frame] = []
    received: list[Frame] = []

    def take_pongs(frame: Frame) -> bool:
        if isinstance(frame, PongFrame):
            taken.append(frame)
            return True
        return False

    async def reader() -> None:
        async with aclosing(client.frames()) as frames:
            async for frame in frames:
                received.append(frame)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        client.take_directly(take_pongs)
        pong = PongFrame(nonce="direct")
        assert endpoint.send_frame_nowait(pong)
        assert taken == [pong]  # taken before this task even checkpoints
        assert endpoint.send_frame_nowait(PingFrame(nonce="queued"))  # not the taker's
        assert taken == [pong]
        await trio.testing.wait_all_tasks_blocked()
        assert [f.nonce for f in received if isinstance(f, PingFrame)] == ["queued"]
        client.take_directly(None)  # the reader no longer takes them: queued
        assert endpoint.send_frame_nowait(PongFrame(nonce="late"))
        await trio.testing.wait_all_tasks_blocked()
        assert taken == [pong]
        assert [f.nonce for f in received if isinstance(f, PongFrame)] == ["late"]
        nursery.cancel_scope.cancel()


async def test_a_frame_never_overtakes_one_queued_before_it(autojump_clock: MockClock) -> None:
    """While frames wait in the channel, or one was handed to the reader that it has not
    handled yet, a frame sent without waiting is queued behind them, not taken."""
    _, client, endpoint = await pair()
    order: list[str] = []

    def take_pongs(frame: Frame) -> bool:
        if isinstance(frame, PongFrame):
            order.append(f"taken {frame.nonce}")
            return True
        return False

    client.take_directly(take_pongs)
    # Nobody reads yet: the first waits in the channel, so the second may not overtake it.
    assert endpoint.send_frame_nowait(PongFrame(nonce="1"))
    assert endpoint.send_frame_nowait(PongFrame(nonce="2"))
    assert order == []
    frames = client.frames()
    async with aclosing(frames):

        async def reader() -> None:
            async for frame in frames:
                assert isinstance(frame, PingFrame | PongFrame)
                order.append(f"read {frame.nonce}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert order == ["read 1", "read 2"]
            # A ping (not the taker's) is handed to the waiting reader, which has not run
            # yet: the pong after it is queued behind it.
            assert endpoint.send_frame_nowait(PingFrame(nonce="3"))
            assert endpoint.send_frame_nowait(PongFrame(nonce="4"))
            await trio.testing.wait_all_tasks_blocked()
            assert endpoint.send_frame_nowait(PongFrame(nonce="5"))  # all read: taken
            assert order == ["read 1", "read 2", "read 3", "read 4", "taken 5"]
            nursery.cancel_scope.cancel()


async def test_a_cancelled_or_dropped_send_leaves_the_direct_path_open(
    autojump_clock: MockClock,
) -> None:
    """The ends count what is put in the channel and not read: a send cancelled while it
    waited for room, or dropped because the other end closed its side, must not be counted,
    or the direct hand-off would stay off for the rest of the connection."""
    _, client, endpoint = await pair()
    taken: list[Frame] = []

    def take(frame: Frame) -> bool:
        taken.append(frame)
        return True

    for n in range(BUFFER):
        assert endpoint.send_frame_nowait(PingFrame(nonce=str(n)))
    with trio.move_on_after(1):
        await endpoint.send_frame(PingFrame(nonce="cancelled"))  # no room: waits, cancelled
    frames = client.frames()
    async with aclosing(frames):
        for _ in range(BUFFER):
            await anext(frames)
        client.take_directly(take)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(anext, frames)  # the reader waits on an empty channel
            await trio.testing.wait_all_tasks_blocked()
            assert endpoint.send_frame_nowait(PongFrame(nonce="direct"))
            assert [f.nonce for f in taken if isinstance(f, PongFrame)] == ["direct"]
            nursery.cancel_scope.cancel()
