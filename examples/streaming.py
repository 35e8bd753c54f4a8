"""Streaming: a person watches an agent's reply arrive chunk by chunk, then gets the reply.

The agent stands in for an LLM: it sends its answer a few words at a time with
``await turn.stream(text)`` and then returns the whole answer, which is posted as usual.
The person's ``on_chunk`` callback prints each chunk as it arrives; the final envelope
carries the stream's id, and only it is in the WAL. Run: ``python examples/streaming.py``.
"""

from __future__ import annotations

import trio

from troupe import EV_TEXT, HubClient, LocalLink, Passport, StreamChunk, Turn, open_hub

ANSWER = "Structured concurrency means every task has a parent that waits for it."


class Poet:
    """Streams its answer word by word, as a language model streams tokens."""

    async def respond(self, turn: Turn) -> str:
        words = ANSWER.split(" ")
        for i, word in enumerate(words):
            await trio.sleep(0.01)  # the model thinking
            await turn.stream(word if i == len(words) - 1 else word + " ")
        return ANSWER


async def main() -> None:
    async with open_hub() as hub:
        hc = HubClient(LocalLink(hub))
        await hc.register(Poet(), Passport(name="poet"))
        me = await hc.register_human(Passport(name="reader", kind="human"))
        streamed: list[StreamChunk] = []
        arrived = trio.Event()

        async def watch(chunk: StreamChunk) -> None:
            nonlocal arrived
            await trio.lowlevel.checkpoint()
            streamed.append(chunk)
            print(f"  chunk {chunk.index}: {chunk.text!r}")
            arrived.set()
            arrived = trio.Event()

        me.on_chunk(watch)
        ch = await me.open(type="consulting", target="poet")
        await ch.send("What is structured concurrency?")
        final = await me.wait_for_channel_event(
            channel_id=ch.session_id,
            predicate=lambda e: e.event_type == EV_TEXT and e.sender_id != me.agent_id,
            timeout=10,
        )
        # Chunks and envelopes travel on separate queues: let the last chunks land.
        with trio.move_on_after(1):
            while "".join(c.text for c in streamed) != final.text:
                await arrived.wait()
        print(f"final: {final.text}")
        same = {c.stream_id for c in streamed} == {final.stream_id}
        print(f"every chunk names the final envelope's stream: {same}")
        wal = await hub.read_wal(ch.session_id)
        texts = [e for e in wal if e.event_type == EV_TEXT]
        print(f"the WAL holds {len(texts)} texts; {len(streamed)} chunks were never stored")
        await hc.shutdown()


if __name__ == "__main__":
    trio.run(main)
