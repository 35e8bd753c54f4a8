"""Frame fuzzing: garbage and mutated frames never crash the decoder or a connection.

The decoder raises nothing but ``DecodeError``; the WebSocket reader's decode step turns
anything into a frame (``InvalidFrame`` for garbage); and the hub's per-connection loop
(``serve_endpoint``, driven in process through a LocalLink with what the WebSocket reader
would hand it) answers every frame with ``bad_frame`` or a valid reply and keeps serving.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from troupe import DecodeError, LocalLink, open_hub
from troupe.model import (
    FRAME_TYPES,
    AcceptFrame,
    ErrorFrame,
    Frame,
    HelloFrame,
    InvalidFrame,
    NotifyFrame,
    PingFrame,
    PongFrame,
    ReceiptFrame,
    RequestFrame,
    ResponseFrame,
    SendFrame,
    WelcomeFrame,
    decode_frame,
    encode_frame,
)
from troupe.transport._ws import MAX_FRAME_BYTES, _decode

from ..test_model.strategies import JSON_VALUES, TEXT, records

FULL = os.environ.get("TROUPE_RELIABILITY") == "full"
FUZZ = settings(
    max_examples=2000 if FULL else 150,
    deadline=None,
    derandomize=not FULL,
    # The clock is the only function-scoped fixture, and a MockClock can serve every run.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
#: What a client may send, and what the hub may answer.
CLIENT_FRAMES = (HelloFrame, PingFrame, SendFrame, ReceiptFrame, RequestFrame)
REPLIES = (ErrorFrame, AcceptFrame, ResponseFrame, WelcomeFrame, PongFrame, NotifyFrame)

VALID_TEXT = st.sampled_from(FRAME_TYPES).flatmap(records).map(encode_frame)


@st.composite
def mutated_frames(draw: st.DrawFn) -> str | bytes:
    """A valid frame's JSON, damaged in one of the ways a buggy or hostile peer would."""
    text = draw(VALID_TEXT)
    data: dict[str, Any] = orjson.loads(text)
    how = draw(
        st.sampled_from(["drop", "set", "kind", "truncate", "nest", "flip", "wrap", "bytes"])
    )
    key = draw(st.sampled_from(sorted(data)))
    if how == "drop":
        del data[key]
    elif how == "set":
        data[draw(st.sampled_from([key, "request_id", "envelope", "extra"]))] = draw(JSON_VALUES)
    elif how == "kind":
        data["kind"] = draw(st.sampled_from([c.kind for c in FRAME_TYPES]) | TEXT | JSON_VALUES)
    elif how == "truncate":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif how == "nest":
        depth = draw(st.integers(1, 100) | st.integers(900, 5000))
        return "[" * depth + text + "]" * depth
    elif how == "flip":
        at = draw(st.integers(0, len(text) - 1))
        return text[:at] + draw(st.characters()) + text[at + 1 :]
    elif how == "wrap":
        return orjson.dumps({"kind": data.get("kind"), "request_id": "r", "x": data}).decode()
    else:
        return text.encode() + draw(st.binary(max_size=8))
    return orjson.dumps(data).decode()


#: JSON nested deeper than any parser's recursion limit (an old way to crash a server).
NESTED = st.builds(
    lambda depth, opener, inner: opener * depth + inner,
    st.sampled_from([2, 64, 1024, 4096]),
    st.sampled_from(["[", '{"a":', '{"kind":"send","envelope":']),
    st.sampled_from(["", "1", "]"]) | VALID_TEXT,
)

MESSAGES = st.binary(max_size=300) | st.text(max_size=300) | mutated_frames() | VALID_TEXT | NESTED


@FUZZ
@given(MESSAGES)
def test_the_decoder_raises_only_decode_error(message: str | bytes) -> None:
    try:
        frame = decode_frame(message)
    except DecodeError:
        return
    assert isinstance(frame, FRAME_TYPES)
    assert decode_frame(encode_frame(frame)) == frame


@FUZZ
@given(MESSAGES)
def test_the_websocket_reader_turns_anything_into_a_frame(message: str | bytes) -> None:
    decoded = _decode(message, MAX_FRAME_BYTES)
    frames = decoded if isinstance(decoded, list) else [decoded]
    assert frames  # (an empty batch is an InvalidFrame)
    for frame in frames:
        assert isinstance(frame, (*FRAME_TYPES, InvalidFrame))


CLIENT_OBJECTS = st.sampled_from(CLIENT_FRAMES).flatmap(records)
INPUTS = st.lists(MESSAGES | CLIENT_OBJECTS, min_size=1, max_size=6)
REGISTER = RequestFrame(request_id="reg", op="register", params={"passport": {"name": "fuzz"}})


def expected_replies(frame: Frame) -> int:
    """How many replies a frame must get at least (receipts get none; a ping its pong)."""
    return 0 if isinstance(frame, ReceiptFrame) else 1


@settings(FUZZ, max_examples=400 if FULL else 40)
@given(frames=INPUTS)
async def test_a_connection_survives_any_frame_and_answers_each(
    frames: list[str | bytes | Frame], autojump_clock: trio.testing.MockClock
) -> None:
    # What the WebSocket reader would hand the hub: a frame, or InvalidFrame for garbage.
    sent: list[Frame] = []
    for f in frames:
        decoded = _decode(f, MAX_FRAME_BYTES) if isinstance(f, str | bytes) else f
        sent.extend(decoded if isinstance(decoded, list) else [decoded])
    replies: list[Frame] = []
    async with open_hub(ttl_sweep_interval=0) as hub, trio.open_nursery() as nursery:
        conn = LocalLink(hub).client()
        await conn.open()

        pong = trio.Event()

        async def collect() -> None:
            async for reply in conn.frames():
                replies.append(reply)
                if isinstance(reply, PongFrame) and reply.nonce == "still there?":
                    pong.set()

        nursery.start_soon(collect)
        await conn.send_frame(REGISTER)  # a bound identity, so sends reach the session checks
        for frame in sent:
            await conn.send_frame(frame)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(10):
            await conn.send_frame(PingFrame(nonce="still there?"))
            await pong.wait()
        await conn.aclose()
        nursery.cancel_scope.cancel()
    for reply in replies:
        assert isinstance(reply, REPLIES), reply
        encode_frame(reply)  # a valid reply is one the wire can carry
    assert len(replies) >= 2 + sum(expected_replies(f) for f in sent)
    bad = [f for f in sent if isinstance(f, InvalidFrame)]
    answered = [r for r in replies if isinstance(r, ErrorFrame) and r.code == "bad_frame"]
    assert len(answered) >= len(bad)
