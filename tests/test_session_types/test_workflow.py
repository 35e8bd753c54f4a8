"""workflow@1: a graph decides who speaks; handoffs win; context variables; auto-close."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.test_session_types._helpers import SID, Run, envelope, metadata
from troupe import ProtocolError
from troupe.model import (
    EV_CONTEXT_SET,
    EV_EXPECTATION_VIOLATED,
    EV_PACKET,
    Envelope,
    Expectation,
    SessionState,
)
from troupe.session_types import ExpectedTurn, NamedWindowedSummary, Transition
from troupe.workflow import (
    AgentTarget,
    ContextEquals,
    FromSpeaker,
    RevertToInitiatorTarget,
    TerminateTarget,
    ToolCalled,
    TransitionGraph,
    WorkflowGraphError,
    WorkflowState,
    WorkflowType,
    round_robin,
    sequence,
)
from troupe.workflow import Transition as Edge

WORKFLOW = WorkflowType()
IDS = ["a", "b", "c"]


def run(graph: TransitionGraph, ids: list[str] = IDS, **knobs: Any) -> Run:
    return Run(WORKFLOW, metadata("workflow", ids, knobs={"graph": graph.to_dict(), **knobs}))


def packet(sender: str, body: str = "", **routing: Any) -> Envelope:
    data: dict[str, Any] = {"body": body}
    if routing:
        data["routing"] = routing
    return Envelope(session_id=SID, sender_id=sender, event_type=EV_PACKET, event_data=data)


def context_set(sender: str, **data: Any) -> Envelope:
    return Envelope(session_id=SID, sender_id=sender, event_type=EV_CONTEXT_SET, event_data=data)


def stall(action: str, *violators: str) -> Envelope:
    data = {
        "expectation": "turn_within",
        "on_violation": action,
        "violators": list(violators),
        "detail": {},
    }
    return Envelope(
        session_id=SID, sender_id="a", event_type=EV_EXPECTATION_VIOLATED, event_data=data
    )


def test_identity_and_expectations() -> None:
    assert (WORKFLOW.name, WORKFLOW.version) == ("workflow", 1)
    assert WORKFLOW.expectations == (
        Expectation(name="turn_within", on_violation="warn", params={"seconds": 120}),
        Expectation(name="turn_within", on_violation="auto_close", params={"seconds": 600}),
    )


@pytest.mark.parametrize(
    ("knobs", "error", "message"),
    [
        ({}, ProtocolError, r"^workflow s1 requires knobs\['graph'\] as a dict"),
        ({"graph": "a"}, ProtocolError, r"^workflow s1 requires knobs\['graph'\] as a dict"),
        (
            {"graph": {"initial_speaker": "a", "default_target": {"name": "limbo"}}},
            WorkflowGraphError,
            "^workflow s1: invalid workflow graph: workflow graph names unknown target.s. 'limbo'",
        ),
        (
            {"graph": sequence(["a", "x", "b", "y"]).to_dict()},
            ProtocolError,
            "^workflow s1: the graph names x, y, not participants$",
        ),
        (
            {"graph": round_robin(IDS).to_dict(), "context_vars": [1]},
            ProtocolError,
            r"context_vars'\] must be an object",
        ),
        ({"graph": round_robin(IDS).to_dict(), "seed": 1}, ProtocolError, "knob.s. seed"),
    ],
)
def test_create_refuses(knobs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        WORKFLOW.validate_create(metadata("workflow", IDS, knobs=knobs))


def test_create_needs_two_participants() -> None:
    with pytest.raises(ProtocolError, match="workflow s1 needs at least 2 participants, got 1"):
        WORKFLOW.validate_create(metadata("workflow", ["a"]))


def test_round_robin_cycles_back_and_max_turns_closes() -> None:
    r = run(round_robin(IDS, max_turns=4))
    assert WORKFLOW.expected_next(r.meta, r.state) == ExpectedTurn(agent_id="a")
    for sender in ["a", "b", "c"]:
        env = r.say(sender)
        assert r.transitions == []
    assert WORKFLOW.expected_next(r.meta, r.state) == ExpectedTurn(
        agent_id="a", triggering_envelope_id=env.envelope_id
    )
    r.say("a")
    assert r.transitions == [Transition(state=SessionState.CLOSED, reason="max_turns")]


def test_a_sequence_closes_with_sequence_complete_after_its_last_step() -> None:
    r = run(sequence(IDS))
    r.post(packet("a", "draft"))
    r.say("b")
    assert r.state.expected_next_speaker == "c"
    r.post(packet("c", "final"))
    assert r.transitions == [Transition(state=SessionState.CLOSED, reason="sequence_complete")]
    assert r.state.pending_close_reason == "sequence_complete"


@pytest.mark.parametrize("sender", ["b", "stranger"])
def test_only_the_expected_speaker_takes_a_turn(sender: str) -> None:
    r = run(round_robin(IDS))
    with pytest.raises(ProtocolError, match=f"^workflow s1 expects a to speak, got {sender}$"):
        r.say(sender)
    with pytest.raises(ProtocolError, match=f"^workflow s1 expects a to speak, got {sender}$"):
        r.post(packet(sender, "x"))
    assert r.wal == []


def test_a_terminated_workflow_refuses_further_turns() -> None:
    state = WORKFLOW.fold(
        envelope("a", seq=1), run(TransitionGraph("a", default_target=TerminateTarget())).state
    )
    assert state.expected_next_speaker is None
    with pytest.raises(ProtocolError, match=r"workflow s1 has ended \(workflow_terminated\)"):
        WORKFLOW.validate_send(metadata("workflow", IDS), envelope("a"), state)


def test_terminate_closes_with_its_reason_or_workflow_terminated() -> None:
    done = run(TransitionGraph("a", default_target=TerminateTarget("resolved")))
    done.say("a")
    assert done.transitions == [Transition(state=SessionState.CLOSED, reason="resolved")]
    plain = run(TransitionGraph("a"))
    plain.say("a")
    assert plain.transitions == [
        Transition(state=SessionState.CLOSED, reason="workflow_terminated")
    ]


def test_a_dynamic_handoff_wins_over_the_graph() -> None:
    r = run(round_robin(IDS))
    r.post(packet("a", "over to c", kind="handoff", target="c", reason="c knows"))
    assert r.state.expected_next_speaker == "c"
    r.post(packet("c", "back", kind="text", target="a"))  # a text routing's target is ignored
    assert r.state.expected_next_speaker == "a"


def test_a_handoff_outside_the_rotation_is_refused() -> None:
    r = run(round_robin(IDS))
    with pytest.raises(ProtocolError, match=r"^workflow s1: a hands off to z, who is not in"):
        r.post(packet("a", kind="handoff", target="z"))
    r.say("a")
    r.post(stall("remove", "b"))
    with pytest.raises(ProtocolError, match=r"^workflow s1: c hands off to b, who is not in"):
        r.post(packet("c", kind="handoff", target="b"))


def test_tool_called_routes_a_packet_by_its_tool() -> None:
    graph = TransitionGraph(
        "a",
        [
            Edge(ToolCalled("to_billing"), AgentTarget("c")),
            Edge(FromSpeaker("c"), AgentTarget("b")),
        ],
        RevertToInitiatorTarget(),
    )
    r = run(graph)
    r.post(packet("a", kind="handoff", tool="to_billing", reason="refund"))
    assert r.state.expected_next_speaker == "c"
    r.say("c")
    assert r.state.expected_next_speaker == "b"
    r.say("b")  # no transition holds: revert to the initiator
    assert r.state.expected_next_speaker == "a"


def test_context_variables_from_knobs_packets_and_context_sets() -> None:
    graph = TransitionGraph(
        "a", [Edge(ContextEquals("stage", "review"), AgentTarget("c"))], AgentTarget("b")
    )
    r = run(graph, context_vars={"stage": "draft", "keep": 1})
    r.post(context_set("b", set={"note": "x"}, delete=["keep"]))
    assert r.state.context_vars == {"stage": "draft", "note": "x"}
    assert r.state.expected_next_speaker == "a"  # a context set takes no turn
    r.post(
        Envelope(
            session_id=SID,
            sender_id="a",
            event_type=EV_PACKET,
            event_data={"body": "", "context_updates": {"set": {"stage": "review"}}},
        )
    )
    # The packet's own update is applied before the graph decides.
    assert r.state.expected_next_speaker == "c"
    r.post(context_set("a", delete=["stage", "note"], set={"note": "y"}))  # delete, then set
    assert r.state.context_vars == {"note": "y"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"set": []}, r"context set\.set must be an object"),
        ({"delete": "k"}, r"context set\.delete must be a list of strings"),
        ({"sett": {}}, "context set has unknown key.s. sett"),
    ],
)
def test_a_malformed_context_set_is_refused(data: dict[str, Any], message: str) -> None:
    r = run(round_robin(IDS))
    with pytest.raises(ProtocolError, match=f"^workflow s1: bad context set from b: {message}"):
        r.post(context_set("b", **data))


def test_context_sets_only_from_participants() -> None:
    r = run(round_robin(IDS))
    with pytest.raises(ProtocolError, match="only accepts EV_CONTEXT_SET from participants, got z"):
        r.post(context_set("z", set={"k": 1}))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"body": 3}, "packet body must be a string, got int"),
        ({"routing": {"kind": "jump"}}, "packet routing.kind must be 'text' or 'handoff'"),
        ({"routing": {"kind": "handoff"}}, "a handoff packet needs routing.target or routing.tool"),
        (
            {"routing": {"kind": "handoff", "target": 1}},
            r"packet routing\.target must be a string, got int",
        ),
        (
            {"context_updates": {"set": {"k": 1}, "x": 1}},
            "packet context_updates has unknown key.s. x",
        ),
        ({"extra": 1}, "packet has unknown key.s. extra"),
    ],
)
def test_a_malformed_packet_is_refused(data: dict[str, Any], message: str) -> None:
    r = run(round_robin(IDS))
    bad = Envelope(session_id=SID, sender_id="a", event_type=EV_PACKET, event_data=data)
    with pytest.raises(ProtocolError, match=f"^workflow s1: bad packet from a: {message}"):
        r.post(bad)


def test_a_malformed_packet_in_a_wal_folds_as_a_plain_turn() -> None:
    state = run(round_robin(IDS)).state
    odd = Envelope(
        session_id=SID, sender_id="a", event_type=EV_PACKET, event_data={"body": 3}, seq=1
    )
    after = WORKFLOW.fold(odd, state)
    assert (after.expected_next_speaker, after.turn_count) == ("b", 1)
    assert WORKFLOW.render(odd) is None


def test_hide_passes_the_floor_in_participant_order() -> None:
    graph = TransitionGraph("a", [Edge(FromSpeaker("a"), AgentTarget("b"))], AgentTarget("a"))
    r = run(graph)
    r.say("a")
    notice = r.post(stall("hide", "b"))
    assert r.state.expected_next_speaker == "c"
    assert WORKFLOW.expected_next(r.meta, r.state) == ExpectedTurn(
        agent_id="c", triggering_envelope_id=notice.envelope_id
    )
    assert r.state.turn_count == 1
    r.say("c")  # the graph sends c's turn back to a; b is only skipped, not removed
    r.say("a")
    assert r.state.expected_next_speaker == "b"


def test_a_stale_hide_changes_nothing() -> None:
    r = run(round_robin(IDS))
    r.say("a")
    before = r.state
    r.post(stall("hide", "a"))
    assert r.state == before


def test_remove_takes_a_participant_out_for_good() -> None:
    r = run(round_robin(IDS))
    r.say("a")
    r.post(stall("remove", "b"))
    assert (r.state.expected_next_speaker, r.state.removed) == ("c", ("b",))
    r.say("c")
    assert r.state.expected_next_speaker == "a"
    r.say("a")  # round robin skips b
    assert r.state.expected_next_speaker == "c"


def test_a_decision_naming_a_removed_participant_passes_on() -> None:
    graph = TransitionGraph("a", [Edge(FromSpeaker("a"), AgentTarget("b"))], AgentTarget("a"))
    r = run(graph)
    r.post(stall("remove", "b"))  # b does not hold the floor: just leaves the rotation
    assert (r.state.expected_next_speaker, r.state.removed) == ("a", ("b",))
    r.say("a")
    assert r.state.expected_next_speaker == "c"


def test_removing_everyone_closes_with_no_participants() -> None:
    r = run(round_robin(["a", "b"]), ids=["a", "b"])
    r.post(stall("remove", "b"))
    r.post(stall("remove", "a"))
    assert r.state.expected_next_speaker is None
    assert r.transitions == [Transition(state=SessionState.CLOSED, reason="no_participants")]


def test_a_warn_notice_is_information_only() -> None:
    r = run(round_robin(IDS))
    before = r.state
    r.post(stall("warn", "a"))
    assert r.state == before
    assert r.transitions == []
    assert WORKFLOW.render(r.wal[-1]) is None


def test_render() -> None:
    assert WORKFLOW.render(envelope("a", "plain")) == "plain"
    assert WORKFLOW.render(packet("a", "body")) == "body"
    assert (
        WORKFLOW.render(packet("a", "body", kind="handoff", target="b", tool="t", reason="why"))
        == "[Handed off via t] why\nbody"
    )
    assert WORKFLOW.render(packet("a", kind="handoff", target="b")) == "[Handed off via handoff]"
    assert WORKFLOW.render(packet("a")) is None
    assert WORKFLOW.render(stall("hide", "b")) == (
        "[turn_within] b missed their turn; the floor passes on."
    )
    assert WORKFLOW.render(stall("remove", "b")) == (
        "[turn_within] b left the rotation; the floor passes on."
    )


def test_default_view_keeps_two_rounds() -> None:
    assert WORKFLOW.default_view_policy(run(round_robin(IDS)).meta, "a") == NamedWindowedSummary(
        recent_n=6
    )


def test_the_snapshot_keeps_the_graph_in_its_serialised_form() -> None:
    graph = TransitionGraph("a", [Edge(ContextEquals("k", [1, 2]), AgentTarget("c"))])
    r = run(graph, context_vars={"k": [1, 2]})
    data = WORKFLOW.dump_state(r.state)
    assert data["graph"] == graph.to_dict()
    loaded = WORKFLOW.load_state(json.loads(json.dumps(data)))
    assert loaded == r.state
    assert isinstance(loaded, WorkflowState)
    assert loaded.graph == graph
