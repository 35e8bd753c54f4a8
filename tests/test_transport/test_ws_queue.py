"""A WebSocket connection's send queue: frames sent while one is written, and its writer.

Frames sent while another is being written queue behind it and go out together, one JSON
array per message (never an array inside an array), each message under the peer's limit.
With the connection's writer running, a sender does not wait for the write, up to
``MAX_QUEUED_BYTES`` queued; a close writes what was queued first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from troupe.model import Frame, InvalidFrame, PingFrame, decode_frame, decode_frames, encode_frame
from troupe.transport import _ws
from troupe.transport._ws import WsLinkClient


class HeldWebSocket:
    """Stands in for a driver's ``WebSocket``: records each message sent; while ``held`` is
    not set, a send waits (a peer that does not read); ``incoming`` is what it receives."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.held: trio.Event | None = None
        self.open = True
        self.incoming: list[bytes] = []
        #: At each close: how many messages had been sent.
        self.closes: list[int] = []

    async def send_message(self, message: str) -> None:
        if self.held is not None:
            await self.held.wait()
        self.messages.append(message)
        await trio.lowlevel.checkpoint()

    async def receive(self) -> bytes | None:
        await trio.lowlevel.checkpoint()
        return self.incoming.pop(0) if self.incoming else None

    async def aclose(self) -> None:
        self.closes.append(len(self.messages))
        self.open = False
        await trio.lowlevel.checkpoint()

    def frames(self) -> list[list[Frame]]:
        """Each message's frames (a lone frame as a list of one)."""
        out = []
        for message in self.messages:
            decoded = decode_frames(message)
            out.append(decoded if isinstance(decoded, list) else [decoded])
        return out


def ping(n: int | str) -> str:
    return encode_frame(PingFrame(nonce=str(n)))


def end_of(ws: HeldWebSocket) -> WsLinkClient:
    return WsLinkClient(ws, "end")  # type: ignore[arg-type]


@asynccontextmanager
async def writing(ws: HeldWebSocket) -> AsyncIterator[tuple[WsLinkClient, trio.Nursery]]:
    """``ws``'s end with its writer running (in the nursery given too); stopped on the way
    out."""
    end = end_of(ws)
    async with trio.open_nursery() as nursery:
        end.start_writer(nursery)
        yield end, nursery
        nursery.cancel_scope.cancel()


async def _received_a_batch(end: WsLinkClient, ws: HeldWebSocket) -> None:
    """Read one batch from the peer: the end now expects its answers in bursts."""
    ws.incoming.append(f"[{ping('x')},{ping('y')}]".encode())
    frames = end.frames()
    assert isinstance(await frames.__anext__(), list)
    await frames.aclose()


async def test_frames_queued_behind_a_write_join_one_array_never_an_array_in_an_array() -> None:
    # A batch queued whole ("[p1,p2]") and a frame joining it went out as
    # "[[p1,p2],p3]": the peer could not decode its first element, and the answers in it
    # were lost (callers waited forever).
    ws = HeldWebSocket()
    end = end_of(ws)
    ws.held = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(end.send_frame, ping("a"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(end.send_texts, [ping(1), ping(2)])
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(end.send_frame, ping(3))
        await trio.testing.wait_all_tasks_blocked()
        ws.held.set()
    frames = ws.frames()
    assert not any(isinstance(f, InvalidFrame) for m in frames for f in m)
    assert [[f.nonce for f in m] for m in frames] == [["a"], ["1", "2", "3"]]  # type: ignore[union-attr]


async def test_queued_frames_keep_their_order_and_each_message_stays_under_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(WsLinkClient, "send_limit", 1000)
    small = [ping(n) for n in range(50)]
    big = ping("b" * 950)  # 976 bytes: it shares a message with no neighbour
    texts = [*small[:25], big, *small[25:]]
    ws = HeldWebSocket()
    end = end_of(ws)
    ws.held = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(end.send_frame, ping("first"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(end.send_texts, texts)
        await trio.testing.wait_all_tasks_blocked()
        ws.held.set()
    assert max(len(m.encode()) for m in ws.messages) <= 1000
    assert big in ws.messages  # alone, as the plain frame
    sent = [f for m in ws.frames() for f in m]
    assert sent == [decode_frame(t) for t in [ping("first"), *texts]]
    assert len(ws.messages) < len(texts) // 4  # (and they did share messages)


async def test_with_its_writer_a_burst_is_one_message_and_no_sender_waits_for_it() -> None:
    ws = HeldWebSocket()
    async with writing(ws) as (end, _):
        await _received_a_batch(end, ws)
        ws.held = trio.Event()  # the peer does not read yet
        returned = 0

        async def send(n: int) -> None:
            nonlocal returned
            await end.send_frame(PingFrame(nonce=str(n)))
            returned += 1

        async with trio.open_nursery() as senders:
            for n in range(10):
                senders.start_soon(send, n)
        assert returned == 10  # queued: none waited on the held write
        assert ws.messages == []
        ws.held.set()
        await trio.testing.wait_all_tasks_blocked()
        (message,) = ws.frames()  # one message (the senders ran in trio's own order)
        assert sorted(int(f.nonce) for f in message) == list(range(10))  # type: ignore[union-attr]


async def test_a_lone_frame_is_written_by_its_sender_at_once() -> None:
    # A lone request (nothing read in batches, nothing queued) waits for no writer's turn.
    ws = HeldWebSocket()
    async with writing(ws) as (end, nursery):
        await trio.testing.wait_all_tasks_blocked()
        writes: list[str] = []
        real = ws.send_message

        async def send_message(message: str) -> None:
            writes.append(trio.lowlevel.current_task().name)
            await real(message)

        ws.send_message = send_message  # type: ignore[method-assign]

        async def caller() -> None:
            await end.send_frame(PingFrame(nonce="alone"))

        nursery.start_soon(caller, name="caller")
        await trio.testing.wait_all_tasks_blocked()
        assert writes == ["caller"]


async def test_senders_wait_for_room_while_the_queue_is_over_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_ws, "MAX_QUEUED_BYTES", 100)
    ws = HeldWebSocket()
    async with writing(ws) as (end, nursery):
        await _received_a_batch(end, ws)
        ws.held = trio.Event()
        done: list[int] = []

        async def send(n: int) -> None:
            await end.send_frame(PingFrame(nonce=f"{n:040d}"))  # ~66 bytes each
            done.append(n)

        for n in range(4):
            nursery.start_soon(send, n)
            await trio.testing.wait_all_tasks_blocked()
        # The first returned once queued (the writer took it and is held writing it); the
        # second too, queued under the bound; the third took the queue over it and waits,
        # and so does the fourth.
        assert done == [0, 1]
        ws.held.set()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(done) == [0, 1, 2, 3]
        assert [f.nonce for m in ws.frames() for f in m] == [  # type: ignore[union-attr]
            f"{n:040d}" for n in range(4)
        ]


async def test_a_close_writes_what_was_queued_before_it() -> None:
    ws = HeldWebSocket()
    async with writing(ws) as (end, nursery):
        await _received_a_batch(end, ws)
        ws.held = trio.Event()
        for n in range(3):
            await end.send_frame(PingFrame(nonce=str(n)))
        nursery.start_soon(end.aclose)
        await trio.testing.wait_all_tasks_blocked()
        assert ws.closes == []  # the close waits for the queue
        ws.held.set()
        await trio.testing.wait_all_tasks_blocked()
        assert ws.closes == [len(ws.messages)]
        assert [f.nonce for m in ws.frames() for f in m] == ["0", "1", "2"]  # type: ignore[union-attr]


async def test_a_close_behind_a_peer_that_does_not_read_still_closes_in_its_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ws = HeldWebSocket()
    async with writing(ws) as (end, _):
        await _received_a_batch(end, ws)
        ws.held = trio.Event()  # never set: the peer reads nothing
        await end.send_frame(PingFrame(nonce="stuck"))
        start = trio.current_time()
        await end.aclose(within=1.5)
        assert trio.current_time() - start == 1.5
        assert ws.closes == [0]  # the connection was closed all the same (its stream cut)
        assert end.closed.is_set()


class GatedWebSocket(HeldWebSocket):
    """Each message waits for its own gate (the next one in ``gates``) before it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[trio.Event] = []

    async def send_message(self, message: str) -> None:
        if self.gates:
            await self.gates.pop(0).wait()  # cancelled here: nothing was sent
        await super().send_message(message)


async def test_a_lone_sender_cancelled_while_writing_loses_nobody_elses_frames(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With the writer running, a sender that writes its own frame at once writes only that
    one: what others queue meanwhile is the writer's. It used to go on with their frames,
    so a deadline around its own send (a caller's move_on_after) could lose frames whose
    senders had returned, on a connection that stayed open (review of issue 15)."""
    ws = GatedWebSocket()
    async with writing(ws) as (end, nursery):
        await trio.testing.wait_all_tasks_blocked()
        own, next_one = trio.Event(), trio.Event()
        ws.gates = [own, next_one]  # A's own frame, then the message after it
        scope = trio.CancelScope()

        async def send_a() -> None:
            with scope:
                await end.send_frame(ping("A"))

        nursery.start_soon(send_a)
        await trio.testing.wait_all_tasks_blocked()
        await end.send_frame(ping("B"))  # queued behind A's write; returns at once
        own.set()  # A's frame goes; the next message waits (a slow peer)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()  # A's deadline passes now
        await trio.testing.wait_all_tasks_blocked()
        next_one.set()
        await trio.testing.wait_all_tasks_blocked()
        await end.send_frame(ping("C"))
        await trio.testing.wait_all_tasks_blocked()
        sent = [f.nonce for message in ws.frames() for f in message if isinstance(f, PingFrame)]
        assert sent == ["A", "B", "C"]


async def test_a_lone_sender_writes_its_own_frame_not_everyone_elses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While others keep queueing, the sender that wrote a lone frame returns once its own
    is written: the writer task writes theirs (it used to write for as long as they came)."""
    ws = HeldWebSocket()
    async with writing(ws) as (end, nursery):
        await trio.testing.wait_all_tasks_blocked()
        ws.held = trio.Event()
        done = trio.Event()
        written_when_done: list[int] = []

        async def lone() -> None:
            await end.send_frame(ping("lone"))
            written_when_done.append(len(ws.messages))
            done.set()

        nursery.start_soon(lone)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(3):
            await end.send_frame(ping(n))  # queued while "lone" is being written
        ws.held.set()
        ws.held = None
        await done.wait()
        await trio.testing.wait_all_tasks_blocked()
        sent = [f.nonce for message in ws.frames() for f in message if isinstance(f, PingFrame)]
        assert sent == ["lone", "0", "1", "2"]
        assert written_when_done == [1]  # its own message only: the writer wrote the rest
