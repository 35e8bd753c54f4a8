"""Hypothesis strategies for session-type tests: sessions, workflow graphs and moves."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.test_session_types._helpers import SID, metadata
from troupe.model import (
    EV_CONTEXT_SET,
    EV_EXPECTATION_VIOLATED,
    EV_PACKET,
    EV_SESSION_OPENED,
    EV_TEXT,
    Envelope,
    SessionMetadata,
)
from troupe.session_types import EV_AUCTION_SELECT, AnySessionType, builtin_types
from troupe.workflow import (
    AgentTarget,
    Always,
    Condition,
    ContextEquals,
    FromSpeaker,
    RevertToInitiatorTarget,
    RoundRobinTarget,
    StayTarget,
    Target,
    TerminateTarget,
    ToolCalled,
    Transition,
    TransitionGraph,
)

STRANGER = "stranger"
TOOLS = ["to_billing", "escalate"]
KEYS = ["stage", "done"]
VALUES = [0, 1, "x", None]
#: Types whose sessions may have more than two participants.
MANY = ("auction", "broadcast", "discussion", "workflow")


def conditions(ids: list[str]) -> st.SearchStrategy[Condition]:
    return st.one_of(
        st.just(Always()),
        st.sampled_from(ids).map(FromSpeaker),
        st.sampled_from(TOOLS).map(ToolCalled),
        st.builds(ContextEquals, st.sampled_from(KEYS), st.sampled_from(VALUES)),
    )


def targets(ids: list[str], *, ending: bool = True) -> st.SearchStrategy[Target]:
    """Any target; with ``ending=False`` a terminating one only now and then."""
    others = [
        st.sampled_from(ids).map(AgentTarget),
        st.just(RoundRobinTarget()),
        st.just(StayTarget()),
        st.just(RevertToInitiatorTarget()),
    ]
    terminate = st.sampled_from(["", "done"]).map(TerminateTarget)
    return st.one_of(*others, terminate) if ending else st.one_of(*others, *others, terminate)


@st.composite
def graphs(draw: st.DrawFn, ids: list[str]) -> TransitionGraph:
    """A random graph over ``ids``: every condition and target, priorities, a turn cap."""
    transitions = draw(
        st.lists(
            st.builds(Transition, conditions(ids), targets(ids), st.integers(-2, 2)),
            max_size=5,
        )
    )
    return TransitionGraph(
        draw(st.sampled_from(ids)),
        transitions,
        draw(targets(ids, ending=False)),  # so that most sessions run a while
        draw(st.sampled_from([None, None, 1, 3, 8])),
    )


@st.composite
def sessions(draw: st.DrawFn) -> tuple[AnySessionType, SessionMetadata]:
    """A built-in type and a session of it (a workflow gets a random graph)."""
    stype = draw(st.sampled_from(builtin_types()))
    count = draw(st.integers(2, 5)) if stype.name in MANY else 2
    ids = [f"p{i}" for i in range(count)]
    knobs: dict[str, Any] | None = None
    if stype.name == "workflow":
        context = draw(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES)))
        knobs = {"graph": draw(graphs(ids)).to_dict(), "context_vars": context}
    return stype, metadata(stype.name, ids, knobs=knobs)


def _context() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "set": st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES)),
            "delete": st.lists(st.sampled_from(KEYS)),
        },
    )


def _routing(ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.just({"kind": "text"}),
        st.fixed_dictionaries(
            {"kind": st.just("handoff"), "target": st.sampled_from(ids)},
            optional={"tool": st.sampled_from(TOOLS), "reason": st.just("why")},
        ),
        st.fixed_dictionaries({"kind": st.just("handoff"), "tool": st.sampled_from(TOOLS)}),
    )


def payloads(kind: str, ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Event data for ``kind`` (well-formed, or a little off for notices and selects)."""
    if kind == EV_PACKET:
        return st.fixed_dictionaries(
            {"body": st.sampled_from(["", "done"]), "routing": _routing(ids)},
            optional={"context_updates": _context()},
        )
    if kind == EV_CONTEXT_SET:
        return _context()
    if kind == EV_AUCTION_SELECT:
        return st.fixed_dictionaries({"winner_id": st.sampled_from([*ids, STRANGER])})
    if kind == EV_EXPECTATION_VIOLATED:
        # Hypothesis favours the first branch: notices that act, before plain data.
        return st.one_of(
            st.fixed_dictionaries(
                {
                    "expectation": st.just("turn_within"),
                    "on_violation": st.sampled_from(["hide", "remove", "warn"]),
                    "violators": st.lists(st.sampled_from(ids), min_size=1, max_size=2),
                    "detail": st.just({}),
                }
            ),
            st.just({"text": "hi"}),
        )
    return st.just({"text": "hi"})


def kinds(type_name: str) -> list[str]:
    """Event types worth trying in a ``type_name`` session (texts weighted up)."""
    common = [EV_TEXT, EV_TEXT, EV_TEXT, EV_SESSION_OPENED, EV_EXPECTATION_VIOLATED, "user.note"]
    if type_name == "workflow":
        return [*common, EV_PACKET, EV_PACKET, EV_PACKET, EV_CONTEXT_SET, EV_EXPECTATION_VIOLATED]
    if type_name == "auction":
        return [*common, EV_AUCTION_SELECT]
    return common


@st.composite
def moves(draw: st.DrawFn, type_name: str, ids: list[str], likely: list[str]) -> Envelope:
    """One unstamped envelope; ``likely`` senders (the expected one) are drawn more often."""
    kind = draw(st.sampled_from(kinds(type_name)))
    if kind == EV_AUCTION_SELECT:
        likely = [ids[0]] * len(ids)  # only the initiator selects
    sender = draw(st.sampled_from([*ids, STRANGER, *likely]))
    return Envelope(
        session_id=SID, sender_id=sender, event_type=kind, event_data=draw(payloads(kind, ids))
    )
