"""Properties over random move sequences, for every built-in type: refolding is exact,
snapshots round-trip, and ``expected_next`` agrees with ``validate_send``."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_session_types._helpers import Run, envelope, refold
from tests.test_session_types.strategies import STRANGER, moves, sessions
from troupe import ProtocolError
from troupe.model import EV_TEXT, SessionMetadata
from troupe.session_types import AnySessionType, AuctionPhase, AuctionState, BroadcastState

# Each example plays up to 20 moves of any of the seven types; 60 keep a test under a second.
deep = settings(max_examples=60)


def play(data: st.DataObject) -> tuple[Run, list[Any]]:
    """Drive a random session with random moves, keeping those the type accepts."""
    session_type, meta = data.draw(sessions())
    ids = meta.participant_ids()
    run = Run(session_type, meta)
    reached = [run.state]
    for _ in range(data.draw(st.integers(0, 20))):
        if run.meta.is_terminal():
            break
        turn = session_type.expected_next(run.meta, run.state)
        # Lean towards the expected speaker so refusals do not stall every sequence.
        likely = [turn.agent_id] * len(ids) if turn else []
        try:
            run.post(data.draw(moves(session_type.name, ids, likely)))
        except ProtocolError:
            pass  # refused: nothing was appended (Run appends only after validate_send)
        reached.append(run.state)
    return run, reached


@deep
@given(st.data())
def test_folding_the_same_wal_twice_from_scratch_gives_the_same_state(data: st.DataObject) -> None:
    run, _ = play(data)
    first = refold(run.session_type, run.meta, run.wal)
    second = refold(run.session_type, run.meta, run.wal)
    assert first == second == run.state


@deep
@given(st.data())
def test_every_reachable_state_survives_a_json_snapshot(data: st.DataObject) -> None:
    run, reached = play(data)
    for state in {id(s): s for s in reached}.values():  # refused moves repeat a state
        dumped = json.dumps(run.session_type.dump_state(state))
        assert run.session_type.load_state(json.loads(dumped)) == state


def accepts(session_type: AnySessionType, meta: SessionMetadata, state: Any, sender: str) -> bool:
    try:
        session_type.validate_send(meta, envelope(sender), state)
    except ProtocolError:
        return False
    return True


def free_speakers(name: str, ids: list[str], state: Any) -> set[str]:
    """Who may send a text when nobody in particular owes a turn."""
    if name == "conversation":
        return set(ids)
    if name == "broadcast":
        assert isinstance(state, BroadcastState)
        return {state.initiator_id}
    assert name == "auction", f"{name} waits on nobody only when it is over"
    assert isinstance(state, AuctionState)
    if state.phase is AuctionPhase.BIDDING:
        return set(state.bidders) - set(state.bids)
    return {state.initiator_id, state.winner_id or ""}


@deep
@given(st.data())
def test_expected_next_names_the_one_sender_a_text_is_accepted_from(
    data: st.DataObject,
) -> None:
    run, _ = play(data)
    if run.meta.is_terminal():
        return
    session_type = run.session_type
    ids = run.meta.participant_ids()
    turn = session_type.expected_next(run.meta, run.state)
    accepted = {s for s in [*ids, STRANGER] if accepts(session_type, run.meta, run.state, s)}
    if turn is None:
        assert accepted == free_speakers(session_type.name, ids, run.state)
        return
    assert accepted == {turn.agent_id}
    wal_ids = {env.envelope_id for env in run.wal}
    assert turn.triggering_envelope_id is None or turn.triggering_envelope_id in wal_ids
    if session_type.name == "consulting":
        texts = [env.envelope_id for env in run.wal if env.event_type == EV_TEXT]
        assert turn.triggering_envelope_id == (texts[-1] if texts else None)
