"""Properties over random move sequences: refolding is exact, snapshots round-trip, and
``expected_next`` agrees with ``validate_send``."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.test_session_types._helpers import Run, envelope, metadata, refold
from troupe import ProtocolError
from troupe.model import EV_EXPECTATION_VIOLATED, EV_SESSION_OPENED, EV_TEXT, SessionMetadata
from troupe.session_types import AnySessionType, builtin_types

# Texts three times as often as anything else, so sequences get deep into each machine.
KINDS = [EV_TEXT, EV_TEXT, EV_TEXT, EV_SESSION_OPENED, EV_EXPECTATION_VIOLATED, "user.note"]
STRANGER = "stranger"


@st.composite
def sessions(draw: st.DrawFn) -> tuple[AnySessionType, list[str]]:
    session_type = draw(st.sampled_from(builtin_types()))
    count = draw(st.integers(2, 5)) if session_type.name == "discussion" else 2
    return session_type, [f"p{i}" for i in range(count)]


def play(data: st.DataObject) -> tuple[Run, list[Any]]:
    """Drive a random session with random moves, keeping those the type accepts."""
    session_type, ids = data.draw(sessions())
    run = Run(session_type, metadata(session_type.name, ids))
    reached = [run.state]
    for _ in range(data.draw(st.integers(0, 25))):
        if run.meta.is_terminal():
            break
        turn = session_type.expected_next(run.meta, run.state)
        # Lean towards the expected speaker so refusals do not stall every sequence.
        likely = [turn.agent_id] * len(ids) if turn else []
        sender = data.draw(st.sampled_from([*ids, STRANGER, *likely]))
        kind = data.draw(st.sampled_from(KINDS))
        try:
            run.post(envelope(sender, event_type=kind))
        except ProtocolError:
            assert kind == EV_TEXT, "only turns are ever refused"
        reached.append(run.state)
    return run, reached


@given(st.data())
def test_folding_the_same_wal_twice_from_scratch_gives_the_same_state(data: st.DataObject) -> None:
    run, _ = play(data)
    first = refold(run.session_type, run.meta, run.wal)
    second = refold(run.session_type, run.meta, run.wal)
    assert first == second == run.state


@given(st.data())
def test_every_reachable_state_survives_a_json_snapshot(data: st.DataObject) -> None:
    run, reached = play(data)
    for state in reached:
        dumped = json.dumps(run.session_type.dump_state(state))
        assert run.session_type.load_state(json.loads(dumped)) == state


def accepts(session_type: AnySessionType, meta: SessionMetadata, state: Any, sender: str) -> bool:
    try:
        session_type.validate_send(meta, envelope(sender), state)
    except ProtocolError:
        return False
    return True


@given(st.data())
def test_expected_next_names_the_one_sender_a_text_is_accepted_from(
    data: st.DataObject,
) -> None:
    run, _ = play(data)
    if run.meta.is_terminal():
        return
    session_type = run.session_type
    ids = [p.agent_id for p in run.meta.participants]
    turn = session_type.expected_next(run.meta, run.state)
    accepted = {s for s in [*ids, STRANGER] if accepts(session_type, run.meta, run.state, s)}
    if turn is None:
        # Only free-form types wait on nobody: then every participant may speak.
        assert accepted == set(ids)
        return
    assert accepted == {turn.agent_id}
    texts = [env.envelope_id for env in run.wal if env.event_type == EV_TEXT]
    assert turn.triggering_envelope_id == (texts[-1] if texts else None)
