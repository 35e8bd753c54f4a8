"""The workflow graph vocabulary: decisions, targets, factories and the serialised form."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_session_types.strategies import graphs
from troupe import ProtocolError
from troupe.workflow import (
    AgentTarget,
    Always,
    ContextEquals,
    Decision,
    FromSpeaker,
    RevertToInitiatorTarget,
    RoundRobinTarget,
    StayTarget,
    TerminateTarget,
    ToolCalled,
    Transition,
    TransitionGraph,
    WorkflowGraphError,
    round_robin,
    sequence,
)


@attrs.frozen(kw_only=True)
class View:
    """A stand-in for the workflow state conditions and targets read."""

    participant_order: tuple[str, ...] = ("a", "b", "c")
    creator_id: str = "a"
    last_speaker_id: str | None = "b"
    context_vars: dict[str, Any] = attrs.field(factory=dict)
    removed: tuple[str, ...] = ()


def test_conditions() -> None:
    view = View(context_vars={"stage": 2})
    assert Always().holds(view, "b", None)
    assert FromSpeaker("b").holds(view, "b", None)
    assert not FromSpeaker("c").holds(view, "b", None)
    assert ToolCalled("escalate").holds(view, "b", "escalate")
    assert not ToolCalled("escalate").holds(view, "b", None)
    assert ContextEquals("stage", 2).holds(view, "b", None)
    assert not ContextEquals("stage", 3).holds(view, "b", None)
    # A missing key never equals, not even None.
    assert not ContextEquals("missing", None).holds(view, "b", None)


def test_targets() -> None:
    view = View()
    assert AgentTarget("c").resolve(view) == Decision("c")
    assert RoundRobinTarget().resolve(view) == Decision("c")
    assert RoundRobinTarget().resolve(View(last_speaker_id="c")) == Decision("a")
    assert RoundRobinTarget().resolve(View(removed=("c",))) == Decision("a")
    assert StayTarget().resolve(view) == Decision("b")
    assert RevertToInitiatorTarget().resolve(view) == Decision("a")
    assert TerminateTarget("done").resolve(view) == Decision(None, "done")
    assert TerminateTarget().resolve(view) == Decision(None, "")


def test_round_robin_with_nobody_left_ends_the_workflow() -> None:
    nobody = View(removed=("a", "b", "c"))
    assert RoundRobinTarget().resolve(nobody) == Decision(None, "no_participants")


def test_decide_takes_the_first_matching_transition_by_ascending_priority() -> None:
    graph = TransitionGraph(
        "a",
        [
            Transition(Always(), AgentTarget("c"), priority=5),
            Transition(FromSpeaker("b"), AgentTarget("a"), priority=1),
            Transition(FromSpeaker("b"), StayTarget(), priority=1),  # a tie keeps list order
        ],
        default_target=TerminateTarget("fallthrough"),
    )
    assert graph.decide(View(), "b", None) == Decision("a")
    assert graph.decide(View(last_speaker_id="c"), "c", None) == Decision("c")
    empty = TransitionGraph("a", [], default_target=TerminateTarget("fallthrough"))
    assert empty.decide(View(), "b", None) == Decision(None, "fallthrough")


def test_round_robin_factory() -> None:
    graph = round_robin(["a", "b", "c"], max_turns=6)
    assert graph == TransitionGraph(
        "a", [Transition(Always(), RoundRobinTarget())], TerminateTarget(), 6
    )
    with pytest.raises(ValueError, match="round_robin needs at least one speaker"):
        round_robin([])


def test_sequence_factory() -> None:
    graph = sequence(["a", "b", "c"])
    assert graph == TransitionGraph(
        "a",
        [
            Transition(FromSpeaker("a"), AgentTarget("b")),
            Transition(FromSpeaker("b"), AgentTarget("c")),
        ],
        TerminateTarget("sequence_complete"),
        3,
    )
    assert graph.agent_ids() == {"a", "b", "c"}
    with pytest.raises(ValueError, match="sequence needs at least one step"):
        sequence([])


def test_the_serialised_form_is_the_references() -> None:
    graph = TransitionGraph(
        "a",
        [Transition(ContextEquals("k", [1]), TerminateTarget("x"), priority=-1)],
        StayTarget(),
    )
    assert graph.to_dict() == {
        "initial_speaker": "a",
        "transitions": [
            {
                "when": {"name": "context_equals", "args": {"key": "k", "value": [1]}},
                "then": {"name": "terminate", "args": {"reason": "x"}},
                "priority": -1,
            }
        ],
        "default_target": {"name": "stay", "args": {}},
        "max_turns": None,
    }


@settings(max_examples=50)
@given(st.data())
def test_every_graph_round_trips_through_dict_and_json(data: st.DataObject) -> None:
    graph = data.draw(graphs(["a", "b", "c"]))
    assert TransitionGraph.from_dict(graph.to_dict()) == graph
    assert TransitionGraph.loads(graph.dumps()) == graph
    assert TransitionGraph.loads(json.loads(graph.dumps())) == graph


def test_defaults_when_optional_parts_are_left_out() -> None:
    graph = TransitionGraph.from_dict({"initial_speaker": "a"})
    assert graph == TransitionGraph("a")
    assert graph.default_target == TerminateTarget()
    call = {"name": "from_speaker", "args": {"agent_id": "a"}}
    assert TransitionGraph.from_dict(
        {"initial_speaker": "a", "transitions": [{"when": call, "then": {"name": "stay"}}]}
    ) == TransitionGraph("a", [Transition(FromSpeaker("a"), StayTarget())])


def test_unknown_names_are_all_named_in_one_error() -> None:
    data = {
        "initial_speaker": "a",
        "transitions": [
            {"when": {"name": "sometimes", "args": {}}, "then": {"name": "nowhere", "args": {}}},
            {"when": {"name": "always", "args": {}}, "then": {"name": "agent", "args": {}}},
        ],
        "default_target": {"name": "limbo", "args": {}},
    }
    with pytest.raises(WorkflowGraphError) as info:
        TransitionGraph.from_dict(data)
    assert str(info.value) == (
        "workflow graph names unknown condition(s) 'sometimes' and unknown target(s)"
        " 'nowhere', 'limbo' (conditions: always, from_speaker, tool_called, context_equals;"
        " targets: agent, round_robin, stay, revert_to_initiator, terminate)"
    )
    assert isinstance(info.value, ProtocolError)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "workflow graph must be an object, got list"),
        ({}, "workflow graph needs an initial_speaker"),
        ({"initial_speaker": "a", "extra": 1}, "workflow graph has unknown key.s. extra"),
        ({"initial_speaker": 3}, "workflow graph does not fit"),
        ({"initial_speaker": "a", "transitions": "x"}, "transitions must be a list"),
        ({"initial_speaker": "a", "max_turns": 0}, "max_turns must be a positive int, got 0"),
        ({"initial_speaker": "a", "max_turns": True}, "max_turns must be a positive int"),
        (
            {"initial_speaker": "a", "transitions": [{"when": {"name": "always"}}]},
            "workflow transition needs when and then",
        ),
        (
            {
                "initial_speaker": "a",
                "transitions": [
                    {
                        "when": {"name": "from_speaker", "args": {"agent_id": 3}},
                        "then": {"name": "stay"},
                    }
                ],
            },
            "condition 'from_speaker' does not take {'agent_id': 3}",
        ),
        (
            {"initial_speaker": "a", "default_target": {"name": "agent", "args": {"x": 1}}},
            "target 'agent' does not take {'x': 1}",
        ),
        (
            {"initial_speaker": "a", "default_target": {"name": "stay", "args": []}},
            "target 'stay' args must be an object",
        ),
    ],
)
def test_malformed_graphs_say_what_is_wrong(data: Any, message: str) -> None:
    with pytest.raises(WorkflowGraphError, match=message):
        TransitionGraph.from_dict(data)


def test_loads_refuses_text_that_is_not_json() -> None:
    with pytest.raises(WorkflowGraphError, match="workflow graph is not JSON"):
        TransitionGraph.loads("{nope")
