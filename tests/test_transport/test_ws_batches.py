"""Batches over the wire: several frames per WebSocket message, both ways.

The hub writes what its connection actor drained at once (a replay, a burst of deliveries)
as one message; a client's frames sent behind a send under way go out together; receipts
that come in one message advance each cursor once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import WebSocketRequest

from troupe import EV_CHANNEL_INVITE_ACK as EV_INVITE_ACK
from troupe import EV_TEXT, Envelope, HubClient, Passport
from troupe.hub._connection import ConnectionActor
from troupe.model import (
    ErrorFrame,
    Frame,
    HelloFrame,
    NotifyFrame,
    PingFrame,
    PongFrame,
    ReceiptFrame,
    RequestFrame,
    ResponseFrame,
    WelcomeFrame,
    decode_frames,
    encode_batch,
    encode_frame,
)
from troupe.transport import WsLink, _ws

from ._wire import Raw, Served, eventually, fake_hub, raw, serving

N = 12


async def _register(served: Served, *names: str) -> dict[str, str]:
    """Identities registered in process (so that raw connections can bind them)."""
    return {n: (await served.hub.register(Passport(name=n))).agent_id or "" for n in names}


async def _converse(served: Served, ids: dict[str, str], person: str, texts: int = N) -> str:
    """A conversation ``a`` opened with ``person``, ``texts`` texts posted in it by ``a``."""
    hub = served.hub
    created: list[str] = []

    async def create() -> None:
        md = await hub.create_session(
            creator_id=ids["a"],
            manifest_type="conversation",
            participants=[ids[person]],
            knobs={"max_turns": None},
        )
        created.append(md.session_id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(create)
        await trio.testing.wait_all_tasks_blocked()
        # No client holds the invitee: it accepts the invite here, as a client would.
        (md,) = [m for m in await hub.list_sessions() if m.pending_acks]
        await hub.post(
            Envelope(session_id=md.session_id, sender_id=ids[person], event_type=EV_INVITE_ACK)
        )
    (session_id,) = created
    for n in range(texts):
        text = Envelope(
            session_id=session_id,
            sender_id=ids["a"],
            event_type=EV_TEXT,
            event_data={"text": f"text {n}"},
        )
        await hub.post(text)
    return session_id


async def _bind_and_collect(ws: Raw, name: str, texts: int) -> list[NotifyFrame]:
    """Bind ``name`` asking for a replay; the notifications up to the ``texts``-th text."""
    await ws.send(HelloFrame(name=name, since={}, request_id="hello"))
    notes: list[NotifyFrame] = []
    seen = 0
    while seen < texts:
        frame = await ws.receive()
        if isinstance(frame, ErrorFrame):
            raise AssertionError(frame)
        if isinstance(frame, NotifyFrame):
            notes.append(frame)
            seen += frame.envelope.event_type == EV_TEXT
    return notes


def _receipt(note: NotifyFrame) -> ReceiptFrame:
    return ReceiptFrame(
        envelope_id=note.envelope.envelope_id,
        recipient_id=note.recipient_id,
        session_id=note.envelope.session_id,
        seq=note.envelope.seq,
    )


async def test_a_replay_is_one_message_and_a_receipt_batch_acks_as_single_receipts_do() -> None:
    with trio.fail_after(10):
        async with serving() as served:
            ids = await _register(served, "a", "b", "c")
            sessions = {p: await _converse(served, ids, p) for p in ("b", "c")}
            store = served.hub.core.store
            # b gets everything in one message and acks it in one; c acks one by one.
            async with raw(served.url) as b:
                notes_b = await _bind_and_collect(b, "b", N)
                assert len(b.message_sizes) == 1  # the welcome and every notification
                await b.send_text(encode_batch([encode_frame(_receipt(n)) for n in notes_b]))
                async with raw(served.url) as c:
                    notes_c = await _bind_and_collect(c, "c", N)
                    for note in notes_c:
                        await c.send(_receipt(note))
                    last = notes_b[-1].envelope.seq
                    for name in ("b", "c"):
                        await _until_cursor(served, ids[name], sessions[name], last)
                    # The same envelopes, in WAL order, to each.
                    seqs = [n.envelope.seq for n in notes_b]
                    assert seqs == sorted(seqs) == [n.envelope.seq for n in notes_c]
                    # Dedup: the batch again changes nothing and gets no answer.
                    await b.send_text(encode_batch([encode_frame(_receipt(n)) for n in notes_b]))
                    await b.send(PingFrame(nonce="after"))
                    assert await b.receive() == PongFrame(nonce="after")
            for name in ("b", "c"):
                assert (await store.load_cursors(ids[name])) == {sessions[name]: last}
            # Acked: nothing is replayed to either on the next connection.
            for name in ("b", "c"):
                async with raw(served.url) as again:
                    await again.send(HelloFrame(name=name, since={}, request_id="again"))
                    assert isinstance(await again.receive(), WelcomeFrame)
                    await again.send(PingFrame(nonce="n"))
                    assert await again.receive() == PongFrame(nonce="n")
                    assert len(again.message_sizes) == 2  # welcome; pong: no notification


async def _until_cursor(served: Served, agent_id: str, session_id: str, seq: int) -> None:
    store = served.hub.core.store

    async def reached() -> bool:
        return (await store.load_cursors(agent_id)).get(session_id, 0) >= seq

    await eventually(reached)


async def test_a_receipt_batch_advances_each_cursor_once_to_its_highest_ack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settled: list[int] = []
    settle = ConnectionActor._receipts

    def recording_settle(self: ConnectionActor, frames: tuple[ReceiptFrame, ...]) -> None:
        settled.append(len(frames))
        settle(self, frames)

    monkeypatch.setattr(ConnectionActor, "_receipts", recording_settle)
    handled: list[str] = []
    handle = ConnectionActor.handle

    async def recording_handle(self: ConnectionActor, msg: Any) -> Any:
        handled.append(type(msg).__name__)
        return await handle(self, msg)

    monkeypatch.setattr(ConnectionActor, "handle", recording_handle)
    with trio.fail_after(10):
        async with serving() as served:
            hub = served.hub
            ids = await _register(served, "a", "b")
            one = await _converse(served, ids, "b")
            two = await _converse(served, ids, "b", texts=1)
            saved: list[list[tuple[str, str, int]]] = []
            store = hub.core.store
            save = store.save_cursors

            async def recording(cursors: Sequence[tuple[str, str, int]]) -> None:
                saved.append(sorted(cursors))
                await save(cursors)

            store.save_cursors = recording  # type: ignore[method-assign]
            async with raw(served.url) as b:
                notes = await _bind_and_collect(b, "b", N + 1)
                by_session: dict[str, list[NotifyFrame]] = {}
                for note in notes:
                    by_session.setdefault(note.envelope.session_id, []).append(note)
                assert set(by_session) == {one, two}
                # Interleaved and out of order: the cursor still ends at each session's max.
                receipts = [_receipt(n) for n in reversed(notes)]
                await b.send_text(encode_batch([encode_frame(r) for r in receipts]))
                await _until_cursor(served, ids["b"], one, by_session[one][-1].envelope.seq)
                await _until_cursor(served, ids["b"], two, by_session[two][-1].envelope.seq)
            # One message of receipts is settled at once, by the connection's reader (no
            # Receipts message to its actor): one advance per cursor, both saved in one write.
            assert settled == [len(receipts)]
            assert "Receipts" not in handled
            assert saved == [
                sorted((ids["b"], sid, by_session[sid][-1].envelope.seq) for sid in (one, two))
            ]


async def test_a_malformed_batch_is_bad_frame_naming_the_index_and_the_rest_is_served() -> None:
    good = RequestFrame(request_id="good", op="find_agent_id", params={"name": "x"})
    bad_request = orjson.dumps({"kind": "request", "request_id": "r1", "op": 5}).decode()
    message = "[" + ",".join([encode_frame(good), bad_request, "7", '{"kind": "nope"}']) + "]"
    with trio.fail_after(5):
        async with serving() as served, raw(served.url) as ws:
            await ws.send_text(message)
            answers: list[Frame] = [await ws.receive() for _ in range(4)]
            errors = sorted(
                (a for a in answers if isinstance(a, ErrorFrame)), key=lambda e: e.message
            )
            assert [e.code for e in errors] == ["bad_frame"] * 3
            assert errors[0].message.startswith("frame 1 of a batch of 4: cannot decode")
            assert "RequestFrame.op" in errors[0].message
            assert errors[0].request_id == "r1"
            assert errors[1].message == (
                "frame 2 of a batch of 4: cannot decode Frame: expected object, got integer"
            )
            assert errors[2].message.startswith("frame 3 of a batch of 4: cannot decode Frame.kind")
            (response,) = [a for a in answers if isinstance(a, ResponseFrame)]
            assert (response.request_id, response.ok) == ("good", True)
            await ws.send_text("[]")
            empty = await ws.receive()
            assert isinstance(empty, ErrorFrame)
            assert empty.code == "bad_frame"
            assert "empty batch" in empty.message


async def test_batches_stay_under_the_limit_and_a_big_envelope_goes_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limit = 8192
    monkeypatch.setattr(_ws.WsEndpoint, "send_limit", limit)
    with trio.fail_after(10):
        async with serving() as served:
            hub = served.hub
            ids = await _register(served, "a", "b")
            session_id = await _converse(served, ids, "b", texts=0)
            bodies = ["small"] * 30 + ["x" * (limit - 600)] + ["small"] * 30
            for body in bodies:
                await hub.post(
                    Envelope(
                        session_id=session_id,
                        sender_id=ids["a"],
                        event_type=EV_TEXT,
                        event_data={"text": body},
                    )
                )
            async with raw(served.url) as b:
                notes = await _bind_and_collect(b, "b", len(bodies))
                assert [n.envelope.text for n in notes if n.envelope.text] == bodies
                assert len(b.message_sizes) > 2  # split, not one message
                assert max(b.message_sizes) <= limit
    # The big one shared no message: a message was just its frame.
    big = next(encode_frame(n) for n in notes if len(n.envelope.text or "") > 100)
    assert len(big.encode()) in b.message_sizes


async def test_a_clients_frames_sent_during_a_send_go_out_together() -> None:
    received: list[list[Any]] = []
    all_in = trio.Event()

    async def hub(request: WebSocketRequest) -> None:
        ws = await request.accept()
        count = 0
        while count < 10:
            decoded = decode_frames(await ws.get_message())
            frames = decoded if isinstance(decoded, list) else [decoded]
            received.append(frames)
            count += len(frames)
        all_in.set()
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with fake_hub(hub) as port, trio.open_nursery() as nursery:
            conn = await WsLink(f"ws://127.0.0.1:{port}", ping_interval=30).connect(nursery)
            async with trio.open_nursery() as senders:
                for n in range(10):
                    senders.start_soon(conn.send_frame, PingFrame(nonce=str(n)))
            await all_in.wait()
            # The first went alone; the nine sent while it was being written, together.
            assert [len(m) for m in received] == [1, 9]
            assert sorted(int(f.nonce) for m in received for f in m) == list(range(10))
            await conn.aclose()
            nursery.cancel_scope.cancel()


async def test_a_clients_receipts_reach_the_hub_batched_and_every_delivery_is_acked() -> None:
    # End to end through HubClient: deliveries from several sessions, handled concurrently,
    # acked over one connection; the hub's cursors end at each session's last seq.
    with trio.fail_after(10):
        async with serving() as served:
            hub = served.hub
            a = (await hub.register(Passport(name="a"))).agent_id or ""
            async with HubClient(served.link()) as client:
                b = await client.register_human(Passport(name="b"))
                got = 0
                done = trio.Event()

                async def count(envelope: Envelope) -> None:
                    nonlocal got
                    got += envelope.event_type == EV_TEXT
                    if got == 8 * 5:
                        done.set()
                    await trio.lowlevel.checkpoint()

                b.on_envelope(count)
                sessions = []
                for _ in range(8):
                    md = await hub.create_session(
                        creator_id=a, manifest_type="conversation", participants=[b.agent_id]
                    )
                    sessions.append(md.session_id)
                async with trio.open_nursery() as posters:
                    for sid in sessions:

                        async def post_five(sid: str = sid) -> None:
                            for n in range(5):
                                await hub.post(
                                    Envelope(
                                        session_id=sid,
                                        sender_id=a,
                                        event_type=EV_TEXT,
                                        event_data={"text": str(n)},
                                    )
                                )

                        posters.start_soon(post_five)
                await done.wait()
                for sid in sessions:
                    last = hub.core.directory.sessions[sid].last_seq
                    await _until_cursor(served, b.agent_id, sid, last)
