"""The codec: JSON round trips for every record and frame, and strict, precise decode errors."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import uuid
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import troupe
from troupe.model import (
    FRAME_TYPES,
    AcceptFrame,
    Envelope,
    HelloFrame,
    InvalidFrame,
    NotifyFrame,
    ObservedStat,
    Participant,
    ParticipantRole,
    Passport,
    PingFrame,
    ResponseFrame,
    Resume,
    Rule,
    SendFrame,
    SessionMetadata,
    SessionState,
    SessionStatus,
    TaskMetadata,
    TaskSpec,
    TaskState,
    batch_overhead,
    decode_frame,
    decode_frames,
    dumps,
    encode_batch,
    encode_frame,
    loads,
    structure,
    unstructure,
)
from troupe.model._codec import CONVERTER, envelope_from_json

from .strategies import RECORDS, records

ENVELOPE = Envelope(
    session_id="s1",
    sender_id="alice",
    event_type="troupe.text",
    event_data={"text": "hi", "n": [1, 2.5, None]},
    audience=["bob"],
    envelope_id="e1",
    seq=3,
    created_at="2025-01-01T00:00:00.000000+00:00",
)


def test_every_record_has_a_strategy() -> None:
    # The list is derived from troupe.model.__all__; guard against it silently shrinking.
    names = {cls.__name__ for cls in RECORDS}
    assert {"Envelope", "Passport", "Resume", "Rule", "SessionMetadata", "TaskMetadata"} <= names
    assert {cls.__name__ for cls in FRAME_TYPES} <= names


@pytest.mark.parametrize("cls", RECORDS, ids=lambda cls: cls.__name__)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_round_trip(cls: type[Any], data: st.DataObject) -> None:
    record = data.draw(records(cls))
    assert structure(unstructure(record), cls) == record
    text = dumps(record)
    assert loads(text, cls) == record
    assert loads(text.decode(), cls) == record
    if cls in FRAME_TYPES:
        wire = encode_frame(record)
        assert isinstance(wire, str)
        assert orjson.loads(wire)["kind"] == cls.kind
        assert decode_frame(wire) == record
        assert decode_frame(wire.encode()) == record


def test_frames_are_tagged_and_nest_envelopes_as_objects() -> None:
    wire = orjson.loads(encode_frame(SendFrame(envelope=ENVELOPE, request_id="r1")))
    assert wire["kind"] == "send"
    assert wire["request_id"] == "r1"
    assert wire["envelope"]["audience"] == ["bob"]
    assert wire["envelope"]["event_data"] == ENVELOPE.event_data
    assert orjson.loads(encode_frame(PingFrame())) == {"kind": "ping"}


def test_fields_at_their_default_are_left_out() -> None:
    data = unstructure(Envelope(session_id="s", sender_id="a", event_type="t", seq=2))
    assert data == {"session_id": "s", "sender_id": "a", "event_type": "t", "seq": 2}


def test_unstructure_gives_plain_json_data() -> None:
    meta = SessionMetadata(
        session_id="s1",
        manifest_type="consulting",
        manifest_version=1,
        creator_id="alice",
        participants=(Participant(agent_id="alice", role=ParticipantRole.INITIATOR, order=0),),
        state=SessionState.ACTIVE,
        created_at="t0",
        pending_acks=("bob",),
    )
    data = unstructure(meta)
    assert data["state"] == "active"
    assert data["participants"] == [{"agent_id": "alice", "role": "initiator", "order": 0}]
    assert data["pending_acks"] == ["bob"]
    task = TaskMetadata(task_id="t", owner_id="o", spec=TaskSpec(title="x"), state=TaskState.FAILED)
    assert unstructure(task)["state"] == "failed"


def test_a_json_int_is_a_fine_float() -> None:
    cost = loads(b'{"name": "a", "cost": {"input_per_mtok": 3}}', Passport).cost
    assert cost is not None
    assert cost.input_per_mtok == 3.0
    assert type(cost.input_per_mtok) is float


ENV = {"session_id": "s", "sender_id": "a", "event_type": "t"}

BAD: list[tuple[Any, type[Any], str, str]] = [
    # (data, record class, field path, words the message must contain)
    ({**ENV, "bogus": 1}, Envelope, "bogus", "unknown field"),
    ({"sender_id": "a", "event_type": "t"}, Envelope, "session_id", "missing field"),
    ({**ENV, "session_id": 5}, Envelope, "session_id", "expected string, got integer"),
    ({**ENV, "seq": "5"}, Envelope, "seq", "expected integer, got string"),
    ({**ENV, "depth": True}, Envelope, "depth", "expected integer, got boolean"),
    ({**ENV, "task_id": 3}, Envelope, "task_id", "expected string"),
    ({**ENV, "audience": ["x", 1]}, Envelope, "audience.1", "expected string"),
    ({**ENV, "audience": "bob"}, Envelope, "audience", "expected array, got string"),
    ({**ENV, "event_data": []}, Envelope, "event_data", "expected object, got array"),
    ({"observed": {"x": {"n": "a"}}}, Resume, "observed.x.n", "expected integer"),
    ({"observed": []}, Resume, "observed", "expected object"),
    ({"examples": [{"title": "t"}, {"title": "t", "zz": 1}]}, Resume, "examples.1.zz", "unknown"),
    ({"examples": [{}]}, Resume, "examples.0.title", "missing field"),
    ({"claimed_capabilities": {"a": 1}}, Resume, "claimed_capabilities", "expected array"),
    ({"name": "a", "cost": 5}, Passport, "cost", "expected object, got integer"),
    ({"name": "a", "cost": {"input_per_mtok": True}}, Passport, "cost.input_per_mtok", "number"),
    ({"limits": {"inbox": {"overflow": "spool"}}}, Rule, "limits.inbox", "overflow"),
    ({"limits": {"rate": {"burst": 1.5}}}, Rule, "limits.rate.burst", "expected integer"),
    ({"task_id": "t", "owner_id": "o", "spec": {"title": "x"}, "state": "weird"},
     TaskMetadata, "state", "expected one of"),
    ({"name": "n", "since": {"s": "1"}}, HelloFrame, "since.s", "expected integer"),
    ({"envelope": {**ENV, "seq": "1"}}, SendFrame, "envelope.seq", "expected integer"),
    ({"envelope": None}, SendFrame, "envelope", "expected object, got null"),
    ([ENV], Envelope, "", "expected object, got array"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "cls", "field", "words"), BAD)
def test_bad_data_names_the_record_and_the_field(
    data: Any, cls: type[Any], field: str, words: str
) -> None:
    with pytest.raises(troupe.DecodeError) as info:
        structure(data, cls)
    err = info.value
    assert (err.record, err.field) == (cls.__name__, field)
    where = f"{cls.__name__}.{field}" if field else cls.__name__
    assert where in str(err)
    assert words in str(err)
    assert err.__cause__ is not None
    # The same data as JSON text fails the same way.
    with pytest.raises(troupe.DecodeError) as again:
        loads(orjson.dumps(data), cls)
    assert (again.value.record, again.value.field) == (cls.__name__, field)


def test_decode_error_is_a_protocol_error_not_a_builtin() -> None:
    with pytest.raises(troupe.DecodeError) as info:
        structure({"bogus": 1}, Envelope)
    assert isinstance(info.value, troupe.ProtocolError)
    assert not isinstance(info.value, KeyError | TypeError | ValueError)
    assert info.value.code == "bad_frame"


@pytest.mark.parametrize("text", [b'{"session_id": ', b"", b"nope", b'{"a": 1}}'])
def test_malformed_json(text: bytes) -> None:
    with pytest.raises(troupe.DecodeError, match="malformed JSON") as info:
        loads(text, Envelope)
    assert (info.value.record, info.value.field) == ("Envelope", "")
    with pytest.raises(troupe.DecodeError, match="malformed JSON") as frame_info:
        decode_frame(text)
    assert frame_info.value.record == "Frame"


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('{"kind": "gossip"}', "kind", "unknown kind 'gossip'"),
        ('{"envelope_id": "e"}', "kind", "missing field"),
        ('{"kind": 7}', "kind", "unknown kind 7"),
        ("[1, 2]", "", "expected object, got array"),
    ],
)
def test_frames_without_a_known_kind(text: str, field: str, words: str) -> None:
    with pytest.raises(troupe.DecodeError) as info:
        decode_frame(text)
    assert (info.value.record, info.value.field) == ("Frame", field)
    assert words in str(info.value)


def test_frame_with_bad_fields_names_the_frame_class() -> None:
    with pytest.raises(troupe.DecodeError) as info:
        decode_frame('{"kind": "accept", "envelope_id": "e", "seq": "2"}')
    assert (info.value.record, info.value.field) == ("AcceptFrame", "seq")
    with pytest.raises(troupe.DecodeError) as extra:
        decode_frame('{"kind": "accept", "envelope_id": "e", "extra": 1}')
    assert (extra.value.record, extra.value.field) == ("AcceptFrame", "extra")


def test_encoding_what_json_cannot_carry() -> None:
    bad = Envelope(session_id="s", sender_id="a", event_type="t", event_data={"x": {1, 2}})
    with pytest.raises(troupe.DecodeError, match="cannot encode Envelope") as info:
        dumps(bad)
    assert info.value.record == "Envelope"
    with pytest.raises(troupe.DecodeError, match="cannot encode SendFrame"):
        encode_frame(SendFrame(envelope=bad))
    with pytest.raises(troupe.DecodeError, match="cannot encode AcceptFrame"):
        encode_frame(AcceptFrame(envelope_id="e", seq=2**70))


def test_trusted_envelope_path_matches_the_checked_one() -> None:
    text = dumps(ENVELOPE)
    assert envelope_from_json(text) == loads(text, Envelope) == ENVELOPE
    assert envelope_from_json(text.decode()) == ENVELOPE


@pytest.mark.parametrize(
    ("text", "field"),
    [(b'{"session_id": "s", "zz": 1}', "sender_id"), (b"[1]", ""), (b'{"session_id": ', "")],
)
def test_trusted_envelope_path_still_fails_precisely(text: bytes, field: str) -> None:
    with pytest.raises(troupe.DecodeError) as info:
        envelope_from_json(text)
    assert (info.value.record, info.value.field) == ("Envelope", field)


def test_observed_stats_survive_json() -> None:
    resume = Resume(claimed_capabilities=["a"], observed={"a": ObservedStat(n=2, completed=1)})
    assert loads(dumps(resume), Resume) == resume


def test_only_the_codec_imports_cattrs() -> None:
    package = Path(troupe.__file__).parent
    importers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "import cattrs" in path.read_text() or "from cattrs" in path.read_text()
    )
    assert importers == ["model/_codec.py"]


FRAMES = st.sampled_from(FRAME_TYPES).flatmap(records)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(frames=st.lists(FRAMES, min_size=1, max_size=6))
def test_a_batch_decodes_to_its_frames_in_order(frames: list[Any]) -> None:
    message = encode_batch([encode_frame(f) for f in frames])
    decoded = decode_frames(message)
    if len(frames) == 1:  # a single frame travels alone, as a plain object
        assert message == encode_frame(frames[0])
        assert decoded == frames[0]
    else:
        assert decoded == frames
        assert len(message.encode()) == sum(
            len(encode_frame(f).encode()) for f in frames
        ) + batch_overhead(len(frames))


def test_a_batchs_bad_elements_name_their_index_and_the_good_ones_are_kept() -> None:
    good = encode_frame(PingFrame(nonce="n"))
    decoded = decode_frames(f'[{good}, {{"kind": "send", "request_id": "r2"}}, [], "x"]')
    assert isinstance(decoded, list)
    assert decoded[0] == PingFrame(nonce="n")
    assert decoded[1] == InvalidFrame(
        reason="frame 1 of a batch of 4: cannot decode SendFrame.envelope: missing field",
        request_id="r2",
    )
    assert decoded[2] == InvalidFrame(
        reason="frame 2 of a batch of 4: cannot decode Frame: expected object, got array"
    )
    assert decoded[3] == InvalidFrame(
        reason="frame 3 of a batch of 4: cannot decode Frame: expected object, got string"
    )
    with pytest.raises(troupe.DecodeError, match="an empty batch"):
        decode_frames("[]")
    with pytest.raises(troupe.DecodeError, match="expected object, got integer"):
        decode_frames("7")
    with pytest.raises(troupe.DecodeError, match="expected object, got array"):
        decode_frame(f"[{good}]")  # one frame, strictly: no batch


def test_an_answers_result_is_written_as_the_json_data_it_is_not_walked_again() -> None:
    # The hub unstructures an op's result before it answers; encoding walked that JSON data
    # again by runtime type (``result`` is typed Any): 9 of 10 µs per RPC answer.
    result = {"session_id": "s", "participants": [{"agent_id": "a", "role": "member"}]}
    text = encode_frame(ResponseFrame(request_id="r", result=result))
    assert orjson.loads(text) == {"kind": "response", "request_id": "r", "result": result}
    assert decode_frame(text) == ResponseFrame(request_id="r", result=result)
    # So a record in it is not JSON data: refused, as any value JSON cannot carry.
    with pytest.raises(troupe.DecodeError, match="cannot encode ResponseFrame as JSON"):
        encode_frame(ResponseFrame(request_id="r", result=PingFrame(nonce="n")))


def test_a_deliverys_session_state_is_written_as_the_json_data_it_is_not_walked_again() -> None:
    # The hub dumps the session type's state to JSON data for the wire (``dump_state``);
    # encoding walked it again by runtime type (``state`` is typed Any): 1.8 of 3.3 µs.
    state = {"participants": ["a", "b"], "turn_count": 3, "last_speaker_id": None}
    frame = NotifyFrame(
        envelope=Envelope(session_id="s", sender_id="a", event_type="troupe.text", seq=4),
        recipient_id="b",
        session=SessionStatus(state=state, last_seq=4),
    )
    text = encode_frame(frame)
    assert orjson.loads(text)["session"] == {"state": state, "last_seq": 4}
    assert decode_frame(text) == frame
    # So a record in it is not JSON data: refused, as any value JSON cannot carry.
    with pytest.raises(troupe.DecodeError, match="cannot encode NotifyFrame as JSON"):
        encode_frame(attrs.evolve(frame, session=SessionStatus(state=PingFrame())))


def test_prepare_makes_the_converters_functions_before_the_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fresh ``troupe serve`` paid cattrs' code generation (~0.5 ms a type) on the first
    # request of each kind; ``prepare`` pays it before the server listens.
    from troupe.hub._rpc import prepare_wire_codec
    from troupe.model._codec import CONVERTER, prepare

    @attrs.frozen
    class Fresh:
        name: str
        count: int = 0

    prepare([Fresh, None, type(None)])
    prepare_wire_codec()

    def no_generation(*_: object, **__: object) -> None:
        raise AssertionError("a function was generated at first use")

    converter = type(CONVERTER)
    monkeypatch.setattr(converter, "gen_structure_attrs_fromdict", no_generation)
    monkeypatch.setattr(converter, "gen_unstructure_attrs_fromdict", no_generation)
    assert structure({"name": "x"}, Fresh) == Fresh(name="x")
    assert unstructure(Fresh(name="x", count=2)) == {"name": "x", "count": 2}
    from troupe.api import Accepted, PostEnvelope

    envelope = {"session_id": "s", "sender_id": "a", "event_type": "troupe.text"}
    assert structure({"envelope": envelope}, PostEnvelope).envelope.session_id == "s"
    assert unstructure(Accepted(envelope_id="e", seq=1)) == {"envelope_id": "e", "seq": 1}


@dataclasses.dataclass
class _Point:
    x: int = 1
    y: int = 2


class _Text(str):
    pass


class _Mode(enum.StrEnum):
    ON = "on"


@pytest.mark.parametrize(
    "data",
    [
        {"at": "2026-12-07T20:31:12.336544+00:00", "kind": "k", "ids": ["a", "b"], "n": 1},
        {"a": (1, 2), "b": None, "c": 1.5, "d": True, "e": float("nan"), "f": _Mode.ON},
        {1: "a non-string key"},
        {_Mode.ON: "an enum key"},
        {_Text("k"): _Text("a str subclass")},
        {"a": {1, 2}, "b": frozenset([3])},
        {"a": b"bytes"},
        {"a": _Point(x=5)},  # the converter leaves out fields at their default
        {"a": datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC)},
        {"a": datetime.datetime(2026, 1, 1, 12), "b": datetime.date(2026, 1, 1)},
        {"a": uuid.UUID(int=5)},
        {"a": collections.OrderedDict(b=1)},
        {"a": [Envelope(session_id="s", sender_id="a", event_type="t")]},
    ],
)
def test_json_data_is_written_as_the_converter_writes_it(data: dict[Any, Any]) -> None:
    # ``dumps`` hands a dict to orjson directly (audit records, snapshots, kv values): what
    # orjson would write differently from the converter must still go the converter's way.
    assert dumps(data) == orjson.dumps(CONVERTER.unstructure(data))
