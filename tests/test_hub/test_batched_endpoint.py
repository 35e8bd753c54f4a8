"""A connection over a transport that takes batches (as the WebSocket does): the connection
actor's outbox, and replies written by the request's task when the actor is idle."""

from __future__ import annotations

import trio
import trio.testing

from troupe.hub._serve import MAX_IN_FLIGHT
from troupe.model import (
    AcceptFrame,
    Frame,
    NotifyFrame,
    RequestFrame,
    ResponseFrame,
    SendFrame,
    decode_frames,
    encode_batch,
    encode_frame,
)

from ..harness import MiniClient, client_of, open_hub_pair, text_envelope


class BatchingEndpoint:
    """Wraps a MiniClient's endpoint: frames as wire text, written in batches (recorded)."""

    def __init__(self, client: MiniClient) -> None:
        self.inner = client.endpoint
        self.client = client
        #: Each message written: the frames it carried.
        self.messages: list[list[Frame]] = []
        #: While set, writes wait: a peer that does not read (its TCP window full).
        self.stalled: trio.Event | None = None

    @property
    def endpoint_id(self) -> str:
        return self.inner.endpoint_id

    @property
    def alive(self) -> bool:
        return self.inner.alive

    def encode(self, frame: Frame) -> str:
        return encode_frame(frame)

    async def send_frame(self, frame: Frame | str) -> None:
        text = frame if isinstance(frame, str) else encode_frame(frame)
        if self.stalled is not None:
            await self.stalled.wait()
        decoded = decode_frames(text)
        frames = decoded if isinstance(decoded, list) else [decoded]
        self.messages.append(frames)
        await trio.lowlevel.checkpoint()
        for f in frames:
            self.client.on_frame(f)

    async def send_texts(self, texts: list[str]) -> None:
        await self.send_frame(encode_batch(texts))

    def frames(self) -> trio.MemoryReceiveChannel[Frame]:
        return self.inner.frames()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_reply_never_overtakes_a_delivery_queued_before_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair() as h:
        alice = await h.agent("alice")
        bob = await h.agent("bob", connect=False)
        client = MiniClient(h.hub, h.nursery, "ep-bob")
        endpoint = BatchingEndpoint(client)
        await h.hub.attach_endpoint(endpoint)
        await client.bind(bob.id)
        md = await h.session("conversation", alice, bob)
        await h.settle()
        for n in range(5):
            # Addressed to bob too: its delivery to him is queued before the answer.
            mine = text_envelope(md, bob, f"to us {n}", audience=[alice.id, bob.id])
            client.send(SendFrame(envelope=mine, request_id=f"s{n}"))
            await h.settle()
        kinds = [
            (type(f).__name__, f.request_id if isinstance(f, AcceptFrame) else f.envelope.text)
            for f in client.frames
            if isinstance(f, AcceptFrame | NotifyFrame)
            and (isinstance(f, AcceptFrame) or f.envelope.sender_id == bob.id)
        ]
        expected = []
        for n in range(5):
            expected += [("NotifyFrame", f"to us {n}"), ("AcceptFrame", f"s{n}")]
        assert kinds == expected


async def test_what_the_actor_drains_at_once_is_one_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(cursor_flush_interval=0) as h:  # each ack saved at once
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob, knobs={"max_turns": None})
        client_of(bob).disconnect()  # bob comes back below, over a batching transport
        await h.settle()
        for n in range(20):
            await h.say(md, alice, f"text {n}")
        client = MiniClient(h.hub, h.nursery, "ep-bob")
        endpoint = BatchingEndpoint(client)
        await h.hub.attach_endpoint(endpoint)
        await client.bind(bob.id, since={})
        await h.settle()
        texts = [e.text for e in client.notified(bob.id) if e.text]
        assert texts == [f"text {n}" for n in range(20)]
        # The whole replay in one message, receipts settled, the cursor at the last seq.
        assert len(endpoint.messages) == 1
        last = (await h.hub.read_wal(md.session_id))[-1].seq
        assert await h.store.load_cursors(bob.id) == {md.session_id: last}


async def test_a_peer_that_does_not_read_blocks_one_reply_not_the_reading_of_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A reply written by its request's task while the peer does not read would hold that
    # request's in-flight slot: once MAX_IN_FLIGHT of them waited, the hub read nothing
    # more from a client still sending (a raw client flooding requests before reading its
    # answers hung until the ping timeout). One such write at a time; the rest queue to the
    # actor, as when it is busy, bounded by the outbound bytes.
    async with open_hub_pair() as h:
        bob = await h.agent("bob", connect=False)
        client = MiniClient(h.hub, h.nursery, "ep-bob")
        endpoint = BatchingEndpoint(client)
        await h.hub.attach_endpoint(endpoint)
        await client.bind(bob.id)
        await h.settle()
        endpoint.stalled = trio.Event()
        count = 3 * MAX_IN_FLIGHT
        for n in range(count):
            params = {"name": "nobody"}
            client.send(RequestFrame(request_id=f"r{n}", op="find_agent_id", params=params))
        await h.settle()
        assert client.endpoint.to_hub.statistics().current_buffer_used == 0  # all read
        endpoint.stalled.set()
        await h.settle()
        answered = [f.request_id for f in client.frames if isinstance(f, ResponseFrame)]
        assert sorted(answered) == sorted(f"r{n}" for n in range(count))
