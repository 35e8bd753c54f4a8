"""The rules every built-in session type shares, and the base class new types build on."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from typing import Any

import attrs
import pytest

from tests.test_session_types._helpers import SID, Run, envelope, metadata
from troupe import DecodeError, ProtocolError
from troupe.model import (
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_CONTEXT_SET,
    EV_EXPECTATION_VIOLATED,
    EV_PACKET,
    EV_SESSION_CLOSED,
    EV_SESSION_OPENED,
    EV_TASK_CANCELLED,
    EV_TEXT,
    Envelope,
    Participant,
    ParticipantRole,
    SessionMetadata,
    SessionState,
)
from troupe.session_types import (
    AnySessionType,
    BaseSessionType,
    ExpectedTurn,
    SessionType,
    Transition,
    builtin_types,
)

BUILTINS = builtin_types()
PROTOCOL = [
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_SESSION_OPENED,
    EV_SESSION_CLOSED,
    EV_TASK_CANCELLED,
]
INFORMATIONAL = [EV_EXPECTATION_VIOLATED, EV_CONTEXT_SET, EV_PACKET, "user.custom"]


def ids_for(t: AnySessionType) -> list[str]:
    return ["a", "b", "c"] if t.name == "discussion" else ["a", "b"]


@pytest.fixture(params=BUILTINS, ids=lambda t: t.name)
def stype(request: pytest.FixtureRequest) -> AnySessionType:
    t: AnySessionType = request.param
    return t


@pytest.mark.parametrize("event_type", PROTOCOL)
def test_protocol_events_bypass_validation_and_leave_state_alone(
    stype: AnySessionType, event_type: str
) -> None:
    meta = metadata(stype.name, ids_for(stype))
    state = stype.initial_state(meta)
    env = envelope("stranger", event_type=event_type, seq=1)
    stype.validate_send(meta, env, state)
    assert stype.fold(env, state) == state
    assert stype.on_accepted(meta, env, state) is None
    assert stype.render(env) is None


def takes_as_information(stype: AnySessionType, event_type: str) -> bool:
    """Whether ``stype`` accepts ``event_type`` as data that changes nothing."""
    if stype.name == "workflow":
        return event_type not in (EV_PACKET, EV_CONTEXT_SET)
    assert isinstance(stype, BaseSessionType)
    return stype.other_events is None or event_type in stype.other_events


@pytest.mark.parametrize(
    ("stype", "event_type"),
    [(t, e) for t in BUILTINS for e in INFORMATIONAL if takes_as_information(t, e)],
    ids=str,
)
def test_other_substantive_types_are_informational(stype: AnySessionType, event_type: str) -> None:
    run = Run(stype, metadata(stype.name, ids_for(stype)))
    before = run.state
    run.post(envelope("stranger", event_type=event_type))
    run.post(envelope("b", event_type=event_type))
    assert run.state == before
    assert run.transitions == []
    assert stype.render(run.wal[0]) is None


@pytest.mark.parametrize(
    ("stype", "event_type"),
    [(t, e) for t in BUILTINS for e in INFORMATIONAL if not takes_as_information(t, e)],
    ids=str,
)
def test_strict_types_refuse_other_event_types(stype: AnySessionType, event_type: str) -> None:
    if stype.name == "workflow":
        return  # packets and context sets are workflow's own (test_workflow)
    run = Run(stype, metadata(stype.name, ids_for(stype)))
    with pytest.raises(ProtocolError, match=f"^{stype.name} {SID} does not take {event_type} "):
        run.post(envelope("a", event_type=event_type))
    assert run.wal == []


def test_the_strict_types_are_the_three_one_way_types() -> None:
    strict = [t.name for t in BUILTINS if isinstance(t, BaseSessionType) and t.other_events]
    assert strict == ["auction", "broadcast", "notification"]


def test_text_from_a_stranger_folds_to_the_same_state(stype: AnySessionType) -> None:
    meta = metadata(stype.name, ids_for(stype))
    state = stype.initial_state(meta)
    assert stype.fold(envelope("stranger", seq=1), state) == state
    with pytest.raises(ProtocolError, match=f"{stype.name} {SID} .*stranger"):
        stype.validate_send(meta, envelope("stranger"), state)


def test_render_shows_text_only(stype: AnySessionType) -> None:
    assert stype.render(envelope("a", "hello")) == "hello"
    odd = Envelope(session_id=SID, sender_id="a", event_type=EV_TEXT, event_data={"text": 3})
    assert stype.render(odd) is None


def test_a_terminal_session_expects_nobody(stype: AnySessionType) -> None:
    live = metadata(stype.name, ids_for(stype))
    state = stype.initial_state(live)
    for terminal in (SessionState.CLOSED, SessionState.EXPIRED):
        assert stype.expected_next(attrs.evolve(live, state=terminal), state) is None


def test_state_dump_is_json_and_loads_back_equal(stype: AnySessionType) -> None:
    run = Run(stype, metadata(stype.name, ids_for(stype)))
    run.say("a")
    data = stype.dump_state(run.state)
    assert isinstance(data, dict)
    assert stype.load_state(json.loads(json.dumps(data))) == run.state
    assert stype.load_state(json.loads(json.dumps(data))) != stype.initial_state(run.meta)


@pytest.mark.parametrize("bad", [[1, 2], "state", None])
def test_load_state_refuses_non_objects(stype: AnySessionType, bad: Any) -> None:
    with pytest.raises(DecodeError, match="must be a JSON object") as info:
        stype.load_state(bad)
    assert info.value.record.endswith("State")


def test_load_state_refuses_unknown_and_missing_fields(stype: AnySessionType) -> None:
    data = stype.dump_state(stype.initial_state(metadata(stype.name, ids_for(stype))))
    with pytest.raises(DecodeError, match="does not fit"):
        stype.load_state({**data, "surprise": 1})
    first = next(iter(data))
    with pytest.raises(DecodeError, match="does not fit"):
        stype.load_state({k: v for k, v in data.items() if k != first})


def test_expectations_are_fresh_records_each_time(stype: AnySessionType) -> None:
    first, second = stype.expectations, stype.expectations
    assert first == second
    for a, b in zip(first, second, strict=True):
        assert a.params is not b.params


def test_repr_names_the_type(stype: AnySessionType) -> None:
    assert repr(stype).endswith(f" {stype.name}@v1>")


def with_participants(meta: SessionMetadata, *ps: Participant) -> SessionMetadata:
    return attrs.evolve(meta, participants=ps)


def test_create_refuses_a_duplicate_participant(stype: AnySessionType) -> None:
    meta = metadata(stype.name, ids_for(stype))
    twice = Participant(agent_id="a", role=ParticipantRole.RESPONDENT, order=1)
    with pytest.raises(ProtocolError, match=f"{stype.name} {SID} lists participant a twice"):
        stype.validate_create(with_participants(meta, meta.participants[0], twice))


def test_create_needs_the_creator_as_the_one_initiator(stype: AnySessionType) -> None:
    meta = metadata(stype.name, ids_for(stype))
    with pytest.raises(ProtocolError, match="creator z as the one initiator"):
        stype.validate_create(attrs.evolve(meta, creator_id="z"))
    second = attrs.evolve(meta.participants[1], role=ParticipantRole.INITIATOR)
    with pytest.raises(ProtocolError, match=r"got initiators \['a', 'b'\]"):
        stype.validate_create(with_participants(meta, meta.participants[0], second))


def test_create_refuses_unknown_knobs(stype: AnySessionType) -> None:
    meta = metadata(stype.name, ids_for(stype), knobs={"colour": "red", "bogus": 1})
    with pytest.raises(
        ProtocolError, match=f"{stype.name} {SID} does not take knob.s. bogus, colour"
    ):
        stype.validate_create(meta)


# A session type written on the base, as the README shows: only the creator speaks, and the
# third text closes the session.


@attrs.frozen(kw_only=True)
class TalkState:
    speaker: str
    count: int = 0


class Monologue(BaseSessionType[TalkState]):
    name = "monologue"
    state_type = TalkState
    min_participants = 2
    max_participants = 3

    def initial_state(self, metadata: SessionMetadata) -> TalkState:
        return TalkState(speaker=metadata.creator_id)

    def check_turn(self, metadata: SessionMetadata, envelope: Envelope, state: TalkState) -> None:
        if envelope.sender_id != state.speaker:
            raise ProtocolError(f"monologue {metadata.session_id} hears only {state.speaker}")

    def fold_turn(self, envelope: Envelope, state: TalkState) -> TalkState:
        if envelope.sender_id != state.speaker:
            return state
        return attrs.evolve(state, count=state.count + 1)

    def turn_accepted(
        self, metadata: SessionMetadata, envelope: Envelope, state: TalkState
    ) -> Transition | None:
        return Transition(state=SessionState.CLOSED, reason="said") if state.count == 3 else None

    def next_turn(self, metadata: SessionMetadata, state: TalkState) -> ExpectedTurn | None:
        return ExpectedTurn(agent_id=state.speaker)


def test_a_type_built_on_the_base_satisfies_the_protocol_and_runs() -> None:
    mono: SessionType[TalkState] = Monologue()
    run = Run(mono, metadata("monologue", ["a", "b", "c"]))
    with pytest.raises(ProtocolError, match="monologue s1 hears only a"):
        run.say("b")
    run.post(envelope("b", event_type=EV_EXPECTATION_VIOLATED))
    for _ in range(3):
        run.say("a")
    assert run.transitions == [Transition(state=SessionState.CLOSED, reason="said")]
    assert mono.expected_next(run.meta, run.state) is None
    assert mono.load_state(mono.dump_state(run.state)) == TalkState(speaker="a", count=3)
    assert mono.default_view_policy(run.meta, "a").name == "full_transcript"


def test_the_base_checks_its_participant_bounds() -> None:
    with pytest.raises(ProtocolError, match="monologue s1 needs at least 2 participants, got 1"):
        Monologue().validate_create(metadata("monologue", ["a"]))
    with pytest.raises(ProtocolError, match="monologue s1 allows at most 3 participants, got 4"):
        Monologue().validate_create(metadata("monologue", ["a", "b", "c", "d"]))


def test_a_protocol_event_never_takes_a_turn_even_if_listed() -> None:
    class Greedy(Monologue):
        turn_events = frozenset({EV_TEXT, EV_SESSION_OPENED})

    greedy = Greedy()
    assert greedy.takes_turn(EV_TEXT)
    assert not greedy.takes_turn(EV_SESSION_OPENED)


class Mood(enum.Enum):
    CALM = "calm"


def strings(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(items)


@attrs.frozen(kw_only=True)
class RichState:
    order: tuple[str, ...] = attrs.field(converter=strings)
    mood: Mood = attrs.field(converter=Mood)
    context: dict[str, Any] = attrs.field(factory=dict)
    _hidden: int = 0


class Rich(BaseSessionType[RichState]):
    name = "rich"
    state_type = RichState

    def initial_state(self, metadata: SessionMetadata) -> RichState:
        return RichState(order=metadata.participant_ids(), mood=Mood.CALM)

    def fold_turn(self, envelope: Envelope, state: RichState) -> RichState:
        return state


def test_snapshots_rebuild_tuples_enums_dicts_and_private_fields() -> None:
    state = RichState(order=("a", "b"), mood=Mood.CALM, context={"k": [1, {"x": None}]}, hidden=2)
    data = Rich().dump_state(state)
    assert data == {
        "order": ["a", "b"],
        "mood": "calm",
        "context": {"k": [1, {"x": None}]},
        "hidden": 2,
    }
    assert Rich().load_state(json.loads(json.dumps(data))) == state


def test_the_base_needs_initial_state_and_fold_turn() -> None:
    class Incomplete(BaseSessionType[TalkState]):
        name = "incomplete"
        state_type = TalkState

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]
