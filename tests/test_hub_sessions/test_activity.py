"""The activity summary the session actor keeps for the expectation evaluators."""

from __future__ import annotations

import json
from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from troupe.hub._activity import Activity, Mark
from troupe.model import (
    EV_CONTEXT_SET,
    EV_EXPECTATION_VIOLATED,
    EV_PACKET,
    EV_SESSION_OPENED,
    EV_TEXT,
    Envelope,
    iso,
)

IDS = ["a", "b", "c"]
T0 = 1_700_000_000.0


def env(
    seq: int,
    sender: str = "a",
    kind: str = EV_TEXT,
    *,
    audience: list[str] | None = None,
    data: Mapping[str, object] | None = None,
) -> Envelope:
    return Envelope(
        session_id="s",
        sender_id=sender,
        event_type=kind,
        event_data=dict(data) if data is not None else {"text": "x"},
        audience=audience,
        envelope_id=f"e{seq}",
        seq=seq,
        created_at=iso(T0 + seq),
    )


def at(seq: int) -> Mark:
    return Mark(T0 + seq, seq)


def test_messages_mark_senders_and_their_audience() -> None:
    activity = Activity()
    activity.note(env(1, "a"), IDS)
    activity.note(env(2, "b", audience=["c"]), IDS)
    activity.note(env(3, "c", EV_PACKET, data={"body": "y"}), IDS)
    assert activity == Activity(
        content=at(3),
        turn=at(3),
        sent={"a": at(1), "b": at(2), "c": at(3)},
        received={"b": at(3), "c": at(2), "a": at(3)},
        last_seq=3,
    )


def test_other_content_ends_a_silence_but_is_not_a_message() -> None:
    activity = Activity()
    activity.note(env(1, "a", EV_CONTEXT_SET, data={"set": {}}), IDS)
    assert (activity.content, activity.turn, activity.sent, activity.received) == (
        at(1),
        at(1),
        {},
        {},
    )


def test_notices_are_not_content_and_only_hide_and_remove_start_a_turn() -> None:
    activity = Activity()
    activity.note(env(1, "a"), IDS)
    warn = {"expectation": "turn_within", "on_violation": "warn", "violators": ["b"]}
    activity.note(env(2, "a", EV_EXPECTATION_VIOLATED, data=warn), IDS)
    assert (activity.content, activity.turn) == (at(1), at(1))
    hide = {**warn, "on_violation": "hide"}
    activity.note(env(3, "a", EV_EXPECTATION_VIOLATED, data=hide), IDS)
    assert (activity.content, activity.turn, activity.last_seq) == (at(1), at(3), 3)


def test_protocol_events_only_move_last_seq() -> None:
    activity = Activity()
    activity.note(env(1, "a", EV_SESSION_OPENED), IDS)
    assert activity == Activity(last_seq=1)


KINDS = [EV_TEXT, EV_PACKET, EV_CONTEXT_SET, EV_SESSION_OPENED, EV_EXPECTATION_VIOLATED]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(IDS),
            st.sampled_from(KINDS),
            st.none() | st.lists(st.sampled_from(IDS), max_size=2),
            st.sampled_from(["hide", "warn", "remove"]),
        ),
        max_size=20,
    )
)
def test_the_json_form_round_trips(moves: list[tuple[str, str, list[str] | None, str]]) -> None:
    activity = Activity()
    for seq, (sender, kind, audience, handler) in enumerate(moves, start=1):
        data = {"on_violation": handler} if kind == EV_EXPECTATION_VIOLATED else {"text": "x"}
        activity.note(env(seq, sender, kind, audience=audience, data=data), IDS)
        assert Activity.from_json(json.loads(json.dumps(activity.to_json()))) == activity
