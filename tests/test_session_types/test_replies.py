"""What ``respond`` may return in a workflow, and the packet ``build_reply`` makes of it."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from tests.test_session_types._helpers import Run, envelope, metadata
from troupe.model import EV_PACKET, Envelope
from troupe.workflow import Handoff, Reply, WorkflowType, read_packet

WORKFLOW = WorkflowType()
META = metadata("workflow", ["a", "b", "c"])
TRIGGER = attrs.evolve(envelope("a", seq=4), depth=2)


def build(reply: Any) -> Envelope | None:
    return WORKFLOW.build_reply(META, "b", reply, TRIGGER)


@pytest.mark.parametrize("silent", [None, "", Reply()])
def test_silence_posts_nothing(silent: Any) -> None:
    assert build(silent) is None


def test_a_string_is_a_packet_the_graph_routes() -> None:
    env = build("done")
    assert env == Envelope(
        session_id="s1",
        sender_id="b",
        event_type=EV_PACKET,
        event_data={
            "body": "done",
            "routing": {"kind": "text"},
            "context_updates": {"set": {}, "delete": []},
        },
        causation_id="e4",
        depth=2,
    )


def test_a_handoff_names_the_target_and_why() -> None:
    env = build(Handoff("c", reason="c knows billing"))
    assert env is not None
    assert env.event_data["routing"] == {
        "kind": "handoff",
        "target": "c",
        "reason": "c knows billing",
    }
    assert env.event_data["body"] == ""


def test_a_reply_carries_text_handoff_and_context_in_one_packet() -> None:
    reply = Reply("refund approved", Handoff(tool="escalate"), {"stage": 2}, ["draft"])
    env = build(reply)
    assert env is not None
    assert env.event_data == {
        "body": "refund approved",
        "routing": {"kind": "handoff", "tool": "escalate"},
        "context_updates": {"set": {"stage": 2}, "delete": ["draft"]},
    }
    assert read_packet(env.event_data).to_json() == env.event_data


def test_context_alone_is_worth_a_packet() -> None:
    env = build(Reply(context={"k": 1}))
    assert env is not None
    assert env.event_data["context_updates"] == {"set": {"k": 1}, "delete": []}


def test_a_built_handoff_moves_the_floor_when_posted() -> None:
    run = Run(WORKFLOW, META)
    trigger = run.say("a")
    env = WORKFLOW.build_reply(run.meta, "b", Handoff("a", reason="back"), trigger)
    assert env is not None
    run.post(env)
    assert run.state.expected_next_speaker == "a"


def test_anything_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"respond.. returned int; a workflow session expects str"):
        build(3)


def test_a_handoff_needs_a_target_or_a_tool() -> None:
    with pytest.raises(ValueError, match="a Handoff needs a target"):
        Handoff(reason="nowhere")
    assert Handoff("b").target == "b"
    assert Handoff(tool="t").tool == "t"
