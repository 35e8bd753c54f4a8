"""Bad input over the wire: every error code, and the connection keeps serving."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from troupe import (
    EV_TEXT,
    DecodeError,
    Envelope,
    HubClient,
    InboxFull,
    Passport,
    ProtocolError,
    Rule,
)
from troupe.hub import _hub
from troupe.model import (
    AcceptFrame,
    ErrorFrame,
    Frame,
    InboxBlock,
    LimitsBlock,
    NotifyFrame,
    PingFrame,
    PongFrame,
    RequestFrame,
    ResponseFrame,
    SendFrame,
    WelcomeFrame,
    encode_frame,
)
from troupe.transport import MAX_FRAME_BYTES, WsLink

from ._wire import QUIET, Echo, Raw, converse, fake_hub, raw, serving, text


async def _still_serving(ws: Raw) -> None:
    """A request after the bad input is answered normally."""
    await ws.send(RequestFrame(request_id="after", op="find_agent_id", params={"name": "x"}))
    response = await ws.receive_kind(ResponseFrame)
    assert (response.request_id, response.ok, response.result) == ("after", True, None)


def _request(request_id: str, **fields: Any) -> str:
    return orjson.dumps({"kind": "request", "request_id": request_id, **fields}).decode()


BAD: dict[str, tuple[str | bytes, str]] = {
    "malformed JSON": ("{not json", ""),
    "not an object": ("[1, 2, 3]", ""),
    "no kind": ('{"request_id": "r1", "op": "x"}', "r1"),
    "unknown kind": ('{"kind": "subscribe", "request_id": "r2"}', "r2"),
    "kind not a string": ('{"kind": 7, "request_id": "r3"}', "r3"),
    "op not a string": (_request("r4", op=5), "r4"),
    "params not an object": (_request("r5", op="get_agent", params=[1]), "r5"),
    "unknown field": (_request("r6", op="get_agent", extra=1), "r6"),
    "envelope of the wrong shape": (
        '{"kind": "send", "request_id": "r7", "envelope": {"session_id": 5}}',
        "r7",
    ),
    "seq not an int": (
        orjson.dumps(
            {
                "kind": "send",
                "request_id": "r8",
                "envelope": {
                    "session_id": "s",
                    "sender_id": "a",
                    "event_type": EV_TEXT,
                    "seq": "1",
                },
            }
        ).decode(),
        "r8",
    ),
    "request id not a string": ('{"kind": "nope", "request_id": 9}', ""),
    "binary garbage": (b"\xff\xfe\x00", ""),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_undecodable_frames_are_answered_with_bad_frame(case: str) -> None:
    message, request_id = BAD[case]
    with trio.fail_after(3):
        async with serving() as served, raw(served.url) as ws:
            await ws.send_text(message)
            error = await ws.receive_kind(ErrorFrame)
            assert error.code == "bad_frame"
            assert error.request_id == request_id
            assert error.message
            await _still_serving(ws)


async def test_an_oversized_frame_is_refused_and_the_connection_serves_on() -> None:
    with trio.fail_after(5):
        async with serving() as served, raw(served.url) as ws:
            big = _request("big", op="find_agent_id", params={"name": "x" * MAX_FRAME_BYTES})
            assert len(big) > MAX_FRAME_BYTES
            await ws.send_text(big)
            error = await ws.receive_kind(ErrorFrame)
            assert error.code == "bad_frame"
            assert f"{MAX_FRAME_BYTES}-byte limit" in error.message
            await _still_serving(ws)
            # Just under the limit is fine.
            fits = _request("fits", op="find_agent_id", params={"name": "x"})
            fits = fits.replace('"x"', '"' + "x" * (MAX_FRAME_BYTES - len(fits) + 1) + '"')
            assert len(fits.encode()) == MAX_FRAME_BYTES
            await ws.send_text(fits)
            response = await ws.receive_kind(ResponseFrame)
            assert (response.request_id, response.ok) == ("fits", True)


async def test_the_limit_counts_bytes_not_characters() -> None:
    with trio.fail_after(5):
        async with serving() as served, raw(served.url) as ws:
            # 0.6 Mi characters of 2 bytes each: 1.2 MiB of UTF-8.
            name = "é" * (MAX_FRAME_BYTES * 6 // 10)
            big = _request("wide", op="find_agent_id", params={"name": name})
            assert len(big) < MAX_FRAME_BYTES < len(big.encode())
            await ws.send_text(big)
            error = await ws.receive_kind(ErrorFrame)
            assert error.code == "bad_frame"
            await _still_serving(ws)


async def test_a_message_over_the_hard_limit_closes_the_connection() -> None:
    with trio.fail_after(5):
        async with serving() as served, raw(served.url) as ws:

            async def send_and_read() -> None:
                # The hub may close while the message is still being sent.
                await ws.send_text("x" * (9 << 20))
                await ws.receive()

            with pytest.raises(ConnectionClosed) as closed:
                await send_and_read()
            reason = closed.value.reason
            assert reason is not None
            assert reason.code == 1009  # message too big
            # The hub serves other connections on.
            async with raw(served.url) as other:
                await _still_serving(other)


HUB_ONLY: list[Frame] = [
    NotifyFrame(
        envelope=Envelope(session_id="s", sender_id="a", event_type=EV_TEXT), recipient_id="a"
    ),
    AcceptFrame(envelope_id="e", request_id="h1"),
    ErrorFrame(code="not_found", message="x", request_id="h2"),
    ResponseFrame(request_id="h3"),
    WelcomeFrame(endpoint_id="x", hub_time="now", request_id="h4"),
    PongFrame(nonce="n"),
]


@pytest.mark.parametrize("frame", HUB_ONLY, ids=lambda f: type(f).__name__)
async def test_frames_only_the_hub_sends_are_bad_frames(frame: Frame) -> None:
    with trio.fail_after(3):
        async with serving() as served, raw(served.url) as ws:
            await ws.send(frame)
            error = await ws.receive_kind(ErrorFrame)
            assert error.code == "bad_frame"
            assert type(frame).__name__ in error.message
            assert error.request_id == getattr(frame, "request_id", "")
            await _still_serving(ws)


async def test_ping_frames_are_answered_with_pong() -> None:
    with trio.fail_after(3):
        async with serving() as served, raw(served.url) as ws:
            await ws.send(PingFrame(nonce="n-1"))
            assert await ws.receive_kind(PongFrame) == PongFrame(nonce="n-1")


@pytest.mark.parametrize(
    ("op", "params", "code"),
    [
        ("no_such_op", {}, "bad_frame"),
        ("get_agent", {}, "bad_frame"),
        ("get_agent", {"name_or_id": 5}, "bad_frame"),
        ("list_agents", {"limit": "many"}, "bad_frame"),
        ("list_agents", {"limit": None}, "bad_frame"),
        ("list_agents", {"limit": 1.5}, "bad_frame"),
        ("list_agents", {"limit": True}, "bad_frame"),
        ("list_agents", {"limit": -1}, "bad_frame"),
        ("list_agents", {"sort_by": "age"}, "bad_frame"),
        ("list_agents", {"nonsense": 1}, "bad_frame"),
        ("list_sessions", {"include_terminal": "yes"}, "bad_frame"),
        ("list_tasks", {"state": "sleeping"}, "bad_frame"),
        ("names_for", {"agent_ids": [1]}, "bad_frame"),
        ("update_task", {"task_id": "t", "state": 5}, "bad_frame"),
        ("register", {"passport": {"name": 5}}, "bad_frame"),
        ("register", {"passport": {"name": "x"}, "resume": "none"}, "bad_frame"),
        ("create_session", {"creator_id": "x", "participants": "y"}, "bad_frame"),
        ("get_agent", {"name_or_id": "nobody"}, "not_found"),
        ("get_task", {"task_id": "t-none"}, "not_found"),
        ("read_wal", {"session_id": "s-none"}, "not_found"),
        ("set_resume", {"agent_id": "someone", "resume": {}}, "access_denied"),
        ("register", {"passport": {"name": ""}}, "protocol_error"),
        (
            "register",
            {"passport": {"name": "x", "auth": {"scheme": "jwt"}}},
            "auth_failed",
        ),
    ],
)
async def test_rpc_errors_carry_their_code(op: str, params: dict[str, Any], code: str) -> None:
    with trio.fail_after(3):
        async with serving() as served, raw(served.url) as ws:
            await ws.send(RequestFrame(request_id="q", op=op, params=params))
            response = await ws.receive_kind(ResponseFrame)
            assert (response.request_id, response.ok, response.error_code) == ("q", False, code)
            assert response.error_message
            await _still_serving(ws)


async def test_send_frames_answer_accept_or_error_with_their_request_id() -> None:
    with trio.fail_after(5):
        async with serving() as served:
            async with HubClient(served.link()) as hc:
                a, b, session_id = await converse(hc, hc)
            async with raw(served.url) as ws:
                await ws.hello("a")
                hi = text(session_id, a.agent_id, "hi")
                # Two posts in flight on one connection, told apart by their request ids.
                await ws.send(SendFrame(envelope=hi, request_id="s1"))
                await ws.send(SendFrame(envelope=hi, request_id="s2"))
                accepts = [await ws.receive_kind(AcceptFrame) for _ in range(2)]
                assert sorted(a.request_id for a in accepts) == ["s1", "s2"]
                assert sorted(a.seq for a in accepts)[1] == sorted(a.seq for a in accepts)[0] + 1
                # Into a session that does not exist: not_found.
                lost = Envelope(session_id="s-none", sender_id=a.agent_id, event_type=EV_TEXT)
                await ws.send(SendFrame(envelope=lost, request_id="s3"))
                error = await ws.receive_kind(ErrorFrame)
                assert (error.code, error.request_id) == ("not_found", "s3")
                # As someone not bound here: access_denied.
                forged = text(session_id, b.agent_id)
                await ws.send(SendFrame(envelope=forged, request_id="s4"))
                error = await ws.receive_kind(ErrorFrame)
                assert (error.code, error.request_id) == ("access_denied", "s4")
                # Once the session is closed: protocol_error.
                await ws.send(
                    RequestFrame(
                        request_id="c", op="close_session", params={"session_id": session_id}
                    )
                )
                assert (await ws.receive_kind(ResponseFrame)).ok
                await ws.send(SendFrame(envelope=hi, request_id="s5"))
                error = await ws.receive_kind(ErrorFrame)
                assert (error.code, error.request_id) == ("protocol_error", "s5")


async def test_a_recipient_that_does_not_ack_fills_its_inbox() -> None:
    tight = Rule(limits=LimitsBlock(inbox=InboxBlock(max_pending=2, overflow="reject")))
    with trio.fail_after(5):
        async with serving() as served:
            async with HubClient(served.link()) as hc:
                talker = await hc.register_human(Passport(name="talker"))
                await hc.register_human(Passport(name="deaf"), rule=tight)
                md = await hc.create_session(
                    creator_id=talker.agent_id,
                    manifest_type="conversation",
                    participants=[served.hub.find_agent_id("deaf") or ""],
                )
            async with raw(served.url) as deaf:
                # "deaf" is bound to a connection that reads deliveries and never acks.
                await deaf.hello("deaf")
                async with HubClient(served.link()) as hc:
                    speaker = await hc.attach(None, "talker")
                    await speaker.send(md.session_id, "one")
                    await speaker.send(md.session_id, "two")
                    with pytest.raises(InboxFull, match="deaf"):
                        await speaker.send(md.session_id, "three")
                # Over a SendFrame the same refusal is an ErrorFrame with code inbox_full
                # (talker's client closed: its identity is free for this connection).
                async with raw(served.url) as ws:
                    await ws.hello("talker")
                    four = text(md.session_id, talker.agent_id, "four")
                    await ws.send(SendFrame(envelope=four, request_id="s"))
                    error = await ws.receive_kind(ErrorFrame)
                    assert (error.code, error.request_id) == ("inbox_full", "s")
            assert [e.text for e in await served.hub.read_wal(md.session_id) if e.text] == [
                "one",
                "two",
            ]


async def test_encoded_frames_round_trip_through_the_raw_helper() -> None:
    # Guards the helper the other tests rely on: it sends exactly what encode_frame makes.
    frame = RequestFrame(request_id="r", op="find_agent_id", params={"name": "x"})
    assert orjson.loads(encode_frame(frame))["kind"] == "request"
    with trio.fail_after(3):
        async with serving() as served, raw(served.url) as ws, HubClient(served.link()) as hc:
            await hc.register(Echo(), Passport(name="x"))
            await ws.send(frame)
            response = await ws.receive_kind(ResponseFrame)
            assert response.result == served.hub.find_agent_id("x")


async def test_an_answer_too_big_for_one_frame_is_refused_not_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client would close the connection on it, reconnect, ask again, and so on."""
    # read_wal pages its answers (see the next test): unbounded pages make one too big.
    monkeypatch.setattr(_hub, "READ_WAL_PAGE_BYTES", 1 << 40)
    with trio.fail_after(10):
        async with serving() as served, HubClient(served.link()) as hc:
            a, _, session_id = await converse(hc, hc)
            for _ in range(45):  # 9 MB of WAL
                await a.send(session_id, "x" * 200_000)
            with pytest.raises(ProtocolError, match="ask for less"):
                await hc.read_wal(session_id)
            # Same connection, still serving; pages fit.
            endpoint = hc.endpoint_id
            page = await hc.read_wal(session_id, since=10, until=20)
            assert [e.seq for e in page] == list(range(11, 21))
            assert hc.endpoint_id == endpoint


async def test_a_wal_too_big_for_one_frame_is_read_page_by_page() -> None:
    with trio.fail_after(10):
        async with serving() as served, HubClient(served.link()) as hc:
            a, _, session_id = await converse(hc, hc)
            for i in range(45):  # 9 MB of WAL: more than one frame may carry
                await a.send(session_id, f"{i:02}" + "x" * 200_000)
            endpoint = hc.endpoint_id
            wal = await hc.read_wal(session_id)
            assert wal == await served.hub.read_wal(session_id)
            assert [e.text[:2] for e in wal if e.text] == [f"{i:02}" for i in range(45)]
            part = await hc.read_wal(session_id, since=3, until=40)
            assert [e.seq for e in part] == list(range(4, 41))
            assert hc.endpoint_id == endpoint  # no reconnect on the way


@pytest.mark.parametrize("size", [2 << 20, 9 << 20], ids=["over-the-limit", "over-the-hard-limit"])
async def test_a_client_does_not_send_a_frame_the_hub_would_refuse(size: int) -> None:
    with trio.fail_after(5):
        async with serving() as served, HubClient(served.link()) as hc:
            a, _, session_id = await converse(hc, hc)
            endpoint = hc.endpoint_id
            # A post is refused sooner: no envelope over max_envelope_bytes is sent.
            with pytest.raises(ProtocolError, match="exceeds max_envelope_bytes"):
                await a.send(session_id, "x" * size)
            with pytest.raises(DecodeError, match=f"{MAX_FRAME_BYTES}-byte frame limit"):
                await hc.set_skill(a.agent_id, "x" * size)
            assert hc.endpoint_id == endpoint  # no reconnect
            assert [e.text for e in await hc.read_wal(session_id) if e.text] == []


async def test_an_answer_the_client_cannot_decode_fails_the_call() -> None:
    async def hub(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with suppress(ConnectionClosed):
            while True:
                asked = orjson.loads(await ws.get_message())
                answer = {"kind": "response", "request_id": asked["request_id"], "surprise": 1}
                await ws.send_message(orjson.dumps(answer).decode())

    with trio.fail_after(5):
        async with fake_hub(hub) as port:
            link = WsLink(f"ws://127.0.0.1:{port}", ping_interval=QUIET)
            async with HubClient(link) as hc:
                with pytest.raises(DecodeError, match=r"answer could not be decoded.*surprise"):
                    await hc.get_agent("x")
