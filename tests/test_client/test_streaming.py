"""Streaming in process: chunks before the final envelope, to its audience only, best effort."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
from trio.testing import MockClock

from troupe import (
    EV_TEXT,
    AccessDeniedError,
    DecodeError,
    Envelope,
    HumanClient,
    NotFoundError,
    Passport,
    ProtocolError,
    Rule,
    StreamChunk,
    Turn,
)
from troupe.client._hub_client import CLIENT_CHUNK_BUFFER
from troupe.hub._streaming import CHUNK_BUFFER, MAX_CHUNK_CHARS
from troupe.model import AccessBlock
from troupe.transport._local import BUFFER

from ..harness import WAIT, HubPair, from_, open_hub_pair


class Streamer:
    """Streams its reply token by token, then returns the whole of it."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self.stream_ids: list[str | None] = []

    async def respond(self, turn: Turn) -> str:
        for token in self.tokens:
            await turn.stream(token)
        self.stream_ids.append(turn.stream_id)
        return "".join(self.tokens)


def collect(identity: HumanClient) -> list[StreamChunk]:
    got: list[StreamChunk] = []

    async def on_chunk(chunk: StreamChunk) -> None:
        await trio.lowlevel.checkpoint()
        got.append(chunk)

    identity.on_chunk(on_chunk)
    return got


async def register_streamer(p: HubPair, name: str, tokens: Sequence[str]) -> Streamer:
    streamer = Streamer(tokens)
    await p.hc.register(streamer, Passport(name=name))
    return streamer


async def test_a_turn_streams_its_reply_before_the_final_envelope(
    autojump_clock: MockClock,
) -> None:
    tokens = ["Trio ", "keeps ", "its ", "promises."]
    async with open_hub_pair() as p:
        streamer = await register_streamer(p, "llm", tokens)
        al = await p.human("al")
        chunks = collect(al)
        ch = await al.open(type="consulting", target="llm")
        question = await al.send(ch.session_id, "does trio keep its promises?")
        with trio.fail_after(WAIT):
            final = await al.wait_for_channel_event(
                channel_id=ch.session_id, predicate=lambda e: e.event_type == EV_TEXT
            )
        await p.settle()
        assert final.text == "Trio keeps its promises."
        assert [c.text for c in chunks] == tokens
        assert [c.index for c in chunks] == [0, 1, 2, 3]
        # One stream, named by the final envelope; it answers the question.
        assert final.stream_id is not None
        assert {c.stream_id for c in chunks} == {final.stream_id}
        assert streamer.stream_ids == [final.stream_id]
        assert {c.parent_envelope_id for c in chunks} == {question}
        assert {c.sender_id for c in chunks} == {final.sender_id}
        # The WAL has the final envelope (with its stream id), and no chunk.
        wal = await p.wal(ch.session_id)
        texts = [e for e in wal if e.event_type == EV_TEXT]
        assert [e.text for e in texts] == ["does trio keep its promises?", final.text]
        assert texts[-1].stream_id == final.stream_id
        assert p.hub.stream_statistics().forwarded == len(tokens)


async def test_a_turn_that_does_not_stream_posts_no_stream_id(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        await p.scripted("bot")
        al = await p.human("al")
        chunks = collect(al)
        ch = await al.open(type="consulting", target="bot")
        await al.send(ch.session_id, "hi")
        with trio.fail_after(WAIT):
            final = await al.wait_for_channel_event(
                channel_id=ch.session_id, predicate=lambda e: e.event_type == EV_TEXT
            )
        assert final.stream_id is None
        assert chunks == []


async def test_chunks_reach_only_the_final_envelopes_audience(autojump_clock: MockClock) -> None:
    # An auction's bids are sealed: a bidder's streamed answer reaches the initiator alone.
    async with open_hub_pair() as p:
        await register_streamer(p, "b1", ["bid ", "one"])
        await register_streamer(p, "b2", ["bid ", "two"])
        al = await p.human("al")
        watchers = {"al": collect(al)}
        ch = await al.open(type="auction", target=["b1", "b2"])
        await al.send(ch.session_id, "who does it cheapest?")
        with trio.fail_after(WAIT):
            for _ in range(2):
                await al.wait_for_channel_event(
                    channel_id=ch.session_id,
                    predicate=lambda e: e.event_type == EV_TEXT and e.sender_id != al.agent_id,
                )
        await p.settle()
        by_stream: dict[str, str] = {}
        for chunk in watchers["al"]:
            by_stream[chunk.stream_id] = by_stream.get(chunk.stream_id, "") + chunk.text
        assert sorted(by_stream.values()) == ["bid one", "bid two"]
        # Each bidder's chunks went to the initiator only (the audience of its reply).
        assert p.hub.stream_statistics().forwarded == 4
        for chunk in watchers["al"]:
            assert chunk.audience == (al.agent_id,)


async def test_an_explicit_audience_limits_who_gets_chunks(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, cy = [await p.human(n) for n in ("al", "bea", "cy")]
        got = {h.passport.name: collect(h) for h in (bea, cy)}
        ch = await al.open(type="broadcast", target=["bea", "cy"])
        await p.settle()
        stream = al.new_stream(ch.session_id, audience=[bea.agent_id])
        await stream.send("for bea ")
        await stream.send("only")
        await al.post_envelope(
            Envelope(
                session_id=ch.session_id,
                sender_id=al.agent_id,
                event_type=EV_TEXT,
                event_data={"text": "for bea only"},
                audience=(bea.agent_id,),
                stream_id=stream.stream_id,
            )
        )
        await p.settle()
        assert [c.text for c in got["bea"]] == ["for bea ", "only"]
        assert got["cy"] == []
        assert stream.sent == 2


async def test_a_sender_that_may_not_post_may_not_stream(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, _bea, cy = [await p.human(n) for n in ("al", "bea", "cy")]
        ch = await al.open(type="conversation", target="bea")
        await p.settle()
        sid = ch.session_id

        def chunk(sender: str, **kw: object) -> StreamChunk:
            fields: dict[str, object] = {
                "session_id": sid,
                "sender_id": sender,
                "stream_id": "s1",
                "index": 0,
                "text": "x",
            }
            fields.update(kw)
            return StreamChunk(**fields)  # type: ignore[arg-type]

        # Not a participant: refused by the hub, and by the client before the first chunk.
        with pytest.raises(ProtocolError, match="not a participant"):
            p.hub.stream_chunk(chunk(cy.agent_id))
        with pytest.raises(ProtocolError, match="may not post"):
            await cy.new_stream(sid).send("x")
        with pytest.raises(NotFoundError):
            p.hub.stream_chunk(chunk("nobody"))
        with pytest.raises(NotFoundError):
            p.hub.stream_chunk(chunk(al.agent_id, session_id="no-such-session"))
        # An audience of non-participants, or malformed chunks.
        with pytest.raises(ProtocolError, match="audience"):
            p.hub.stream_chunk(chunk(al.agent_id, audience=(cy.agent_id,)))
        with pytest.raises(ProtocolError, match="stream_id"):
            p.hub.stream_chunk(chunk(al.agent_id, stream_id=""))
        with pytest.raises(ProtocolError, match="characters"):
            p.hub.stream_chunk(chunk(al.agent_id, text="x" * (MAX_CHUNK_CHARS + 1)))
        with pytest.raises(ProtocolError, match="index"):
            p.hub.stream_chunk(chunk(al.agent_id, index=-1))
        with pytest.raises(DecodeError, match=r"StreamChunk\.text: expected a string"):
            p.hub.stream_chunk(chunk(al.agent_id, text=["x"]))
        with pytest.raises(DecodeError, match=r"StreamChunk\.index"):
            p.hub.stream_chunk(chunk(al.agent_id, index=1.0))
        with pytest.raises(DecodeError, match=r"StreamChunk\.audience\.0"):
            p.hub.stream_chunk(chunk(al.agent_id, audience=(5,)))
        # A closed session takes no chunks.
        await al.close_channel(sid)
        with pytest.raises(ProtocolError, match="not active"):
            p.hub.stream_chunk(chunk(al.agent_id))
        with pytest.raises(ProtocolError, match="may not post"):
            await al.new_stream(sid).send("x")
        refused = p.hub.stream_statistics().refused
        assert refused == 11
        assert p.hub.stream_statistics().forwarded == 0


async def test_outbound_rules_apply_to_chunks(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.hc.register_human(
            Passport(name="al", kind="human"),
            rule=Rule(access=AccessBlock(outbound_to=("bea",))),
        )
        bea, cy = await p.human("bea"), await p.human("cy")
        ch = await bea.open(type="discussion", target=["al", "cy"])
        await p.settle()

        def to(audience: tuple[str, ...]) -> StreamChunk:
            return StreamChunk(
                session_id=ch.session_id,
                sender_id=al.agent_id,
                stream_id="s",
                index=0,
                text="x",
                audience=audience,
            )

        with pytest.raises(AccessDeniedError, match="outbound_to"):
            p.hub.stream_chunk(to((cy.agent_id,)))
        assert p.hub.stream_statistics().refused == 1


async def test_an_invitee_that_has_not_acked_gets_no_chunks_and_sends_none(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        bea = await p.human("bea")
        cy = await p.human("cy", auto_ack_invites=False)
        got = collect(cy)
        md = await p.hc.create_session(
            creator_id=al.agent_id,
            manifest_type="broadcast",
            participants=[bea.agent_id, cy.agent_id],
            required_acks=1,
        )
        await p.settle()
        assert cy.agent_id in (await p.hc.get_session(md.session_id)).pending_acks
        delivered = p.hub.stream_chunk(
            StreamChunk(
                session_id=md.session_id, sender_id=al.agent_id, stream_id="s", index=0, text="x"
            )
        )
        assert delivered == 1  # bea only
        with pytest.raises(ProtocolError, match="acked its invite"):
            p.hub.stream_chunk(
                StreamChunk(
                    session_id=md.session_id,
                    sender_id=cy.agent_id,
                    stream_id="s",
                    index=0,
                    text="x",
                )
            )
        await p.settle()
        assert got == []


async def test_a_recipient_that_never_reads_never_slows_the_streamer(
    autojump_clock: MockClock,
) -> None:
    sent = BUFFER + CHUNK_BUFFER + 500
    async with open_hub_pair() as p:
        al = await p.human("al")
        # bea's connection is never read: the link fills, then her lane, then chunks drop.
        bea_id = (await p.hub.register(Passport(name="bea", kind="human"))).agent_id
        assert bea_id is not None
        stuck = p.hc._link.client()  # type: ignore[union-attr]
        await stuck.open()
        await p.hub.bind_endpoint(stuck.endpoint_id, bea_id)
        cy = await p.human("cy")
        fast = collect(cy)
        md = await p.hc.create_session(
            creator_id=al.agent_id,
            manifest_type="broadcast",
            participants=[bea_id, cy.agent_id],
            required_acks=1,
        )
        await p.hub.post_envelope(
            Envelope(
                session_id=md.session_id,
                sender_id=bea_id,
                event_type="troupe.session.invite.ack",
                event_data={"session_id": md.session_id},
            )
        )
        await p.settle()
        stream = al.new_stream(md.session_id)
        with trio.fail_after(1):  # virtual time: a streamer that blocked would hit it
            for i in range(sent):
                await stream.send(f"t{i} ")
        await p.settle()
        stats = p.hub.stream_statistics()
        lanes = p.hub.core.streams.lanes
        assert lanes[bea_id].queued == CHUNK_BUFFER  # bounded: the rest dropped, not queued
        # The link's buffer (less the frames already in it), one in the connection actor's
        # hands, CHUNK_BUFFER in its mailbox: the rest was dropped.
        assert sent - BUFFER - 1 - CHUNK_BUFFER <= lanes[bea_id].dropped < sent - BUFFER
        # cy reads: what she got is in order, and every chunk is accounted for.
        indices = [c.index for c in fast]
        assert indices == sorted(set(indices))
        assert len(fast) + lanes[cy.agent_id].dropped + p.hc._chunks.dropped == sent
        assert stats.dropped == lanes[bea_id].dropped + lanes[cy.agent_id].dropped
        assert stats.forwarded + stats.dropped == 2 * sent
        await stuck.aclose()


async def test_a_slow_chunk_callback_drops_chunks_on_the_client_only(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        bea = await p.human("bea")
        release = trio.Event()
        seen: list[int] = []

        async def slow(chunk: StreamChunk) -> None:
            seen.append(chunk.index)
            await release.wait()

        bea.on_chunk(slow)
        ch = await al.open(type="conversation", target="bea")
        await p.settle()
        stream = al.new_stream(ch.session_id)
        total = CLIENT_CHUNK_BUFFER + 50
        with trio.fail_after(1):
            for i in range(total):
                await stream.send(str(i))
                if i % 10 == 9:
                    await p.settle()  # the hub's lane drains; the client's queue does not
        await p.settle()
        assert p.hub.stream_statistics().dropped == 0
        # One chunk is in the callback, CLIENT_CHUNK_BUFFER wait; the rest were dropped.
        assert p.hc._chunks.dropped == total - 1 - CLIENT_CHUNK_BUFFER
        # The final envelope is not held up by the chunks waiting behind the callback.
        await al.send(ch.session_id, "done")
        with trio.fail_after(WAIT):
            await bea.wait_for_channel_event(channel_id=ch.session_id, predicate=from_(al))
        release.set()
        await p.settle()
        assert seen == sorted(seen)
        assert len(seen) == total - p.hc._chunks.dropped


async def test_a_raising_chunk_callback_stops_nothing(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_hub_pair() as p:
        al, bea = await p.human("al"), await p.human("bea")

        async def boom(chunk: StreamChunk) -> None:
            raise RuntimeError("ui crashed")

        bea.on_chunk(boom)
        got = collect(bea)
        ch = await al.open(type="conversation", target="bea")
        await p.settle()
        stream = al.new_stream(ch.session_id)
        await stream.send("a")
        await stream.send("b")
        await p.settle()
        assert [c.text for c in got] == ["a", "b"]
        assert "chunk callback raised" in caplog.text
        bea.remove_chunk_callback(boom)
        bea.remove_chunk_callback(boom)  # absent: no-op
        await stream.send("c")
        await p.settle()
        assert [c.text for c in got] == ["a", "b", "c"]


async def test_a_workflow_turn_streams_and_its_packet_names_the_stream(
    autojump_clock: MockClock,
) -> None:
    from troupe import EV_PACKET
    from troupe.workflow import sequence

    async with open_hub_pair() as p:
        await register_streamer(p, "writer", ["a ", "draft"])
        me = await p.human("me")
        chunks = collect(me)
        graph = sequence([me.agent_id, (await p.hc.get_agent("writer")).agent_id or ""])
        ch = await me.open(type="workflow", target="writer", knobs={"graph": graph.to_dict()})
        await me.post_envelope(
            Envelope(
                session_id=ch.session_id,
                sender_id=me.agent_id,
                event_type=EV_PACKET,
                event_data={"body": "write", "routing": {"kind": "text"}},
            )
        )
        with trio.fail_after(WAIT):
            packet = await me.wait_for_channel_event(
                channel_id=ch.session_id,
                predicate=lambda e: e.event_type == EV_PACKET and e.sender_id != me.agent_id,
            )
        await p.settle()
        assert [c.text for c in chunks] == ["a ", "draft"]
        assert packet.stream_id == chunks[0].stream_id
        assert packet.event_data["body"] == "a draft"


async def test_a_stream_id_that_is_not_a_string_is_refused_at_the_door(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        al, bea = await p.human("al"), await p.human("bea")
        ch = await al.open(type="conversation", target="bea")
        await p.settle()
        before = await p.wal(ch.session_id)
        with pytest.raises(DecodeError, match=r"Envelope\.stream_id"):
            await p.hub.post_envelope(
                Envelope(
                    session_id=ch.session_id,
                    sender_id=al.agent_id,
                    event_type=EV_TEXT,
                    event_data={"text": "x"},
                    stream_id=7,  # type: ignore[arg-type]
                )
            )
        assert await p.wal(ch.session_id) == before
        assert bea.agent_id
