"""Streaming over a real WebSocket: chunk frames both ways, checked and bounded by the hub."""

from __future__ import annotations

import trio

from troupe import EV_TEXT, HubClient, Passport, StreamChunk, Turn
from troupe.model import ChunkFrame, ErrorFrame

from ._wire import raw, serving, wait_until


class Streamer:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens

    async def respond(self, turn: Turn) -> str:
        for token in self.tokens:
            await turn.stream(token)
        return "".join(self.tokens)


async def test_a_remote_agent_streams_to_a_remote_human() -> None:
    tokens = ["over ", "the ", "wire"]
    with trio.fail_after(5):
        async with (
            serving() as served,
            HubClient(served.link()) as agents,
            HubClient(served.link()) as people,
        ):
            await agents.register(Streamer(tokens), Passport(name="llm"))
            me = await people.register_human(Passport(name="me"))
            got: list[StreamChunk] = []

            async def on_chunk(chunk: StreamChunk) -> None:
                await trio.lowlevel.checkpoint()
                got.append(chunk)

            me.on_chunk(on_chunk)
            ch = await me.open(type="consulting", target="llm")
            question = await me.send(ch.session_id, "stream please")
            final = await me.wait_for_channel_event(
                channel_id=ch.session_id,
                predicate=lambda e: e.event_type == EV_TEXT and e.sender_id != me.agent_id,
                timeout=3,
            )
            assert final.text == "over the wire"
            await wait_until(lambda: len(got) == len(tokens))
            assert [c.text for c in got] == tokens
            assert [c.index for c in got] == [0, 1, 2]
            assert {c.stream_id for c in got} == {final.stream_id}
            assert {c.parent_envelope_id for c in got} == {question}
            wal = await served.hub.read_wal(ch.session_id)
            assert [e.text for e in wal if e.event_type == EV_TEXT] == [
                "stream please",
                "over the wire",
            ]
            assert served.hub.stream_statistics().forwarded == len(tokens)


async def test_a_chunk_for_an_identity_the_connection_is_not_bound_to_is_dropped() -> None:
    with trio.fail_after(5):
        async with serving() as served, HubClient(served.link()) as people:
            al = await people.register_human(Passport(name="al"))
            bea = await people.register_human(Passport(name="bea"))
            ch = await al.open(type="conversation", target="bea")
            got: list[StreamChunk] = []

            async def on_chunk(chunk: StreamChunk) -> None:
                await trio.lowlevel.checkpoint()
                got.append(chunk)

            bea.on_chunk(on_chunk)
            await served.hub.register(Passport(name="mallory"))
            async with raw(served.url) as ws:
                await ws.hello("mallory")
                forged = StreamChunk(
                    session_id=ch.session_id,
                    sender_id=al.agent_id,
                    stream_id="s",
                    index=0,
                    text="forged",
                )
                await ws.send(ChunkFrame(chunk=forged))
                # Not a participant either: refused by the hub's checks.
                mallory = await served.hub.find_agent("mallory")
                assert mallory is not None
                await ws.send(
                    ChunkFrame(
                        chunk=StreamChunk(
                            session_id=ch.session_id,
                            sender_id=mallory,
                            stream_id="s",
                            index=0,
                            text="intruding",
                        )
                    )
                )
                # A client may not address a chunk to a recipient itself.
                await ws.send(ChunkFrame(chunk=forged, recipient_id=bea.agent_id))
                error = await ws.receive_kind(ErrorFrame)
                assert error.code == "bad_frame"
                assert "ChunkFrame" in error.message
            await wait_until(lambda: served.hub.stream_statistics().refused == 2)
            # al's own chunk still goes through.
            stream = al.new_stream(ch.session_id)
            await stream.send("genuine")
            await wait_until(lambda: len(got) == 1)
            assert [c.text for c in got] == ["genuine"]
