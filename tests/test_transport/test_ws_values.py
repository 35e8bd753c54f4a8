"""Over the wire, the hub checks what it is sent as it does in process (issue 13).

What it admits it can deliver and read back over WebSocket: the frame limit carries the
largest envelope it accepts; an envelope that still cannot be sent (a WAL written before these
checks) is skipped as a dead letter, and an answer that cannot be encoded is an error answer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio

from troupe import EV_TEXT, DecodeError, Envelope, HubClient, Passport, ProtocolError, open_hub
from troupe.hub import HubListener
from troupe.model import (
    MAX_ENVELOPE_BYTES,
    MAX_JSON_DEPTH,
    ErrorFrame,
    HelloFrame,
    NotifyFrame,
    RequestFrame,
    ResponseFrame,
    SendFrame,
    WelcomeFrame,
    dumps,
    encode_frame,
    iso,
)
from troupe.store import MemoryStore
from troupe.transport import MAX_FRAME_BYTES, LocalLink, WsLink

from ._wire import QUIET, converse, raw, serving, text, wait_until
from .test_serve import troupe_serve


class DispatchFailures(HubListener):
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str, str]] = []

    async def on_dispatch_failed(
        self, session_id: str, seq: int, recipient_id: str, reason: str
    ) -> None:
        self.calls.append((session_id, seq, recipient_id, reason))


def nested_json(depth: int) -> str:
    """``{"a":{"a":...1...}}``, ``depth`` objects deep, as JSON text."""
    return '{"a":' * depth + "1" + "}" * depth


def send_text(request_id: str, session_id: str, sender_id: str, data_json: str) -> str:
    """A SendFrame written by hand (orjson will not write data this deep inside a frame)."""
    envelope = (
        f'{{"session_id":"{session_id}","sender_id":"{sender_id}",'
        f'"event_type":"{EV_TEXT}","event_data":{data_json}}}'
    )
    return f'{{"kind":"send","request_id":"{request_id}","envelope":{envelope}}}'


async def test_the_largest_envelope_the_hub_admits_goes_over_the_wire_both_ways() -> None:
    with trio.fail_after(20):
        async with (
            serving() as served,
            HubClient(served.link()) as one,
            HubClient(served.link()) as two,
        ):
            a, b, sid = await converse(one, two)
            # RemoteHub.post adds an idempotency key of 32 hex digits: make room for it.
            env = attrs.evolve(text(sid, a.agent_id), idempotency_key="k" * 32)
            room = MAX_ENVELOPE_BYTES - len(dumps(env))
            largest = attrs.evolve(env, event_data={"text": "x" * room})
            assert len(dumps(largest)) == MAX_ENVELOPE_BYTES
            assert MAX_FRAME_BYTES > MAX_ENVELOPE_BYTES
            await one.post_envelope(largest)
            got = await b.wait_for_channel_event(
                channel_id=sid, predicate=lambda e: e.event_type == EV_TEXT, timeout=10
            )
            assert got.event_data == largest.event_data
            back = await two.read_wal(sid, since=got.seq - 1)
            assert back[0].event_data == largest.event_data
            over = attrs.evolve(largest, event_data={"text": "x" * (room + 1)})
            with pytest.raises(ProtocolError, match="exceeds max_envelope_bytes"):
                await one.post_envelope(over)
            with pytest.raises(ProtocolError, match="exceeds max_envelope_bytes"):
                await served.hub.post_envelope(over)


async def test_a_remote_post_is_checked_as_a_local_one() -> None:
    with trio.fail_after(20):
        async with (
            serving() as served,
            HubClient(served.link()) as one,
            HubClient(served.link()) as two,
        ):
            a, b, sid = await converse(one, two)
            # JSON would have turned the NaN into null on the way.
            nan = attrs.evolve(text(sid, a.agent_id), event_data={"x": math.nan})
            with pytest.raises(DecodeError, match=r"Envelope\.event_data\.x"):
                await one.post_envelope(nan)
            with pytest.raises(DecodeError, match=r"CreateSession\.knobs\.x"):
                await one.create_session(
                    creator_id=a.agent_id,
                    manifest_type="conversation",
                    participants=[b.agent_id],
                    knobs={"x": math.nan},
                )
            await one.close()  # a's identity is free for the hand-made connection (item 8)
            async with raw(served.url) as ws:
                await ws.hello("a")
                deep = send_text("deep", sid, a.agent_id, nested_json(MAX_JSON_DEPTH + 1))
                await ws.send_text(deep)
                refusal = await ws.receive_kind(ErrorFrame)
                assert refusal.request_id == "deep"
                assert refusal.code == "bad_frame"
                assert "Envelope.event_data.a.a" in refusal.message
            assert [e.event_type for e in await served.hub.read_wal(sid)][-1] != EV_TEXT


async def test_a_request_off_the_wire_is_checked_on_its_params_as_a_local_one() -> None:
    # The hub checks a request frame's params once, as they came (Hub.call_data): orjson
    # reads data nested 1024 levels deep, and a frame may be larger than the largest record
    # the hub stores. Sent by hand, past the client's own checks.
    with trio.fail_after(20):
        async with (
            serving() as served,
            HubClient(served.link()) as one,
            HubClient(served.link()) as two,
        ):
            a, b, _ = await converse(one, two)
            await one.close()  # a's identity is free for the hand-made connection (item 8)
            create = (
                f'{{"kind":"request","request_id":"%s","op":"create_session","params":'
                f'{{"creator_id":"{a.agent_id}","manifest_type":"conversation",'
                f'"participants":["{b.agent_id}"],"knobs":%s}}}}'
            )
            big = orjson.dumps({"x": "y" * MAX_ENVELOPE_BYTES}).decode()
            assert len(create % ("big", big)) < MAX_FRAME_BYTES
            async with raw(served.url) as ws:
                await ws.hello("a")
                await ws.send_text(create % ("deep", nested_json(MAX_JSON_DEPTH + 1)))
                deep = await ws.receive_kind(ResponseFrame)
                assert (deep.request_id, deep.ok, deep.error_code) == ("deep", False, "bad_frame")
                assert "CreateSession.knobs.a.a" in deep.error_message
                await ws.send_text(create % ("big", big))
                large = await ws.receive_kind(ResponseFrame)
                assert (large.request_id, large.ok) == ("big", False)
                assert large.error_code == "protocol_error"
                assert f"exceeds {MAX_ENVELOPE_BYTES} bytes" in large.error_message
                await ws.send_text(create % ("fine", "{}"))
                fine = await ws.receive_kind(ResponseFrame)
                assert (fine.request_id, fine.ok) == ("fine", True)
            assert len(served.hub.core.directory.select(agent_id=b.agent_id)) == 2


async def test_an_envelope_the_wire_cannot_carry_is_a_dead_letter_and_its_read_an_error() -> None:
    # A WAL written before the hub checked depth: the envelope is 253 objects deep, which the
    # store writes (254 levels with the envelope) but no frame can hold. Its delivery crashed
    # the recipient's connection, which reconnected, was replayed it and crashed again; its
    # read_wal crashed the reader's connection and the call waited forever.
    store = MemoryStore()
    async with open_hub(store) as hub, HubClient(LocalLink(hub)) as one:
        async with HubClient(LocalLink(hub)) as two:
            a, b, sid = await converse(one, two)
            await a.send(sid, "before")
            await b.wait_for_channel_event(
                channel_id=sid, predicate=lambda e: e.text == "before", timeout=5
            )
    deep: dict[str, Any] = {"a": 1}
    for _ in range(252):
        deep = {"a": deep}
    async with store:
        last = await store.last_seq(sid)
        old = Envelope(
            session_id=sid,
            sender_id=a.agent_id,
            event_type=EV_TEXT,
            event_data=deep,
            envelope_id="old-deep",
            seq=last + 1,
            created_at=iso(1.8e9),
        )
        await store.append(sid, [old])
    with pytest.raises(DecodeError, match="Recursion limit"):
        encode_frame(NotifyFrame(envelope=old, recipient_id=b.agent_id))
    with trio.fail_after(20):
        async with serving(store=store) as served, raw(served.url) as bob, raw(served.url) as al:
            failures = DispatchFailures()
            served.hub.add_listener(failures)
            await bob.send(HelloFrame(name="b", since={}, request_id="hello b"))
            await bob.receive_kind(WelcomeFrame)
            await al.hello("a")
            await al.send(SendFrame(envelope=text(sid, a.agent_id, "after"), request_id="p"))
            while True:
                note = await bob.receive_kind(NotifyFrame)
                assert note.envelope.envelope_id != "old-deep"
                if note.envelope.text == "after":
                    break
            letters = [d for d in served.hub.dead_letters.letters if d.reason == "undeliverable"]
            assert [d.message.envelope_id for d in letters] == ["old-deep"]
            # ... and listeners hear of it.
            await wait_until(lambda: bool(failures.calls))
            [(session_id, seq, recipient_id, reason)] = failures.calls
            assert (session_id, seq, recipient_id) == (sid, old.seq, b.agent_id)
            assert "Recursion limit" in reason
            await bob.send(RequestFrame(request_id="w", op="read_wal", params={"session_id": sid}))
            answer = await bob.receive_kind(ResponseFrame)
            assert (answer.request_id, answer.ok, answer.error_code) == (
                "w",
                False,
                "protocol_error",
            )
            assert "cannot be sent as JSON" in answer.error_message
            # The connection goes on, and a read of the rest is answered.
            params = {"session_id": sid, "since": last + 1}
            await bob.send(RequestFrame(request_id="w2", op="read_wal", params=params))
            answer = await bob.receive_kind(ResponseFrame)
            assert answer.ok
            assert [e["event_data"]["text"] for e in answer.result["envelopes"]] == ["after"]
            assert answer.result["more"] is False


@pytest.mark.slow
async def test_thousands_of_hostile_requests_do_not_stop_troupe_serve(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with (
            troupe_serve(tmp_path / "hub.db", tmp_path / "serve.log") as server,
            HubClient(WsLink(server.url, ping_interval=QUIET)) as one,
            HubClient(WsLink(server.url, ping_interval=QUIET)) as two,
        ):
            a, b, _ = await converse(one, two)
            # The attacker: m, in a session with b, on a hand-made connection of its own (a
            # live client's identity cannot be bound twice: issue 13 item 8).
            async with HubClient(WsLink(server.url, ping_interval=QUIET)) as three:
                m = await three.register_human(Passport(name="m"))
                md = await three.create_session(
                    creator_id=m.agent_id, manifest_type="conversation", participants=[b.agent_id]
                )
                sid = md.session_id
            create: dict[str, Any] = {
                "creator_id": m.agent_id,
                "manifest_type": "conversation",
                "participants": [b.agent_id],
            }
            hostile: list[str] = [
                encode_frame(RequestFrame(request_id="", op="create_session", params=params))
                for params in (
                    {**create, "ttl": 10**12},
                    {**create, "ttl": "99999999999d"},
                    {**create, "ttl": -1},
                    {**create, "knobs": {"deep": orjson.loads(nested_json(MAX_JSON_DEPTH))}},
                )
            ]
            rule = {"limits": {"session_ttl_default": "99999999999d"}}
            hostile.append(
                encode_frame(
                    RequestFrame(
                        request_id="",
                        op="set_rule",
                        params={"agent_id": m.agent_id, "rule": rule},
                    )
                )
            )
            hostile.append(send_text("", sid, m.agent_id, nested_json(251)))
            count = 3000
            async with raw(server.url) as ws:
                await ws.hello("m")
                for i in range(count):
                    message = hostile[i % len(hostile)].replace(
                        '"request_id":""', f'"request_id":"h{i}"', 1
                    )
                    await ws.send_text(message)
                answered = 0
                while answered < count:
                    frame = await ws.receive()
                    if isinstance(frame, NotifyFrame):
                        continue
                    assert not getattr(frame, "ok", False), frame
                    answered += 1
            assert server.process.returncode is None
            # Everyone is still served: a new session, a text, its reply.
            md = await one.create_session(
                creator_id=a.agent_id, manifest_type="conversation", participants=[b.agent_id]
            )
            await a.send(md.session_id, "still there?")
            got = await b.wait_for_channel_event(
                channel_id=md.session_id, predicate=lambda e: e.text == "still there?", timeout=5
            )
            assert got.sender_id == a.agent_id
    log = await trio.Path(server.log).read_text()
    assert "crashed" not in log
