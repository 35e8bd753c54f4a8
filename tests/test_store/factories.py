"""Small record factories for the store tests."""

from __future__ import annotations

from typing import Any

from troupe.model import (
    Envelope,
    Participant,
    ParticipantRole,
    Passport,
    Resume,
    Rule,
    SessionMetadata,
    SessionState,
    TaskMetadata,
    TaskSpec,
)
from troupe.store import AgentRecord


def env(session_id: str, seq: int, **fields: Any) -> Envelope:
    """A stamped envelope, as the session actor hands it to the store."""
    fields.setdefault("event_data", {"text": f"message {seq}"})
    return Envelope(
        session_id=session_id,
        sender_id=fields.pop("sender_id", "alice"),
        event_type=fields.pop("event_type", "troupe.text"),
        envelope_id=fields.pop("envelope_id", f"{session_id}-{seq}"),
        seq=seq,
        created_at=fields.pop("created_at", "2025-01-01T00:00:00.000000+00:00"),
        **fields,
    )


def envs(session_id: str, first: int, last: int, **fields: Any) -> list[Envelope]:
    return [env(session_id, seq, **fields) for seq in range(first, last + 1)]


def agent(agent_id: str, *capabilities: str, **resume: Any) -> AgentRecord:
    return AgentRecord(
        passport=Passport(name=f"name-{agent_id}", agent_id=agent_id),
        resume=Resume(claimed_capabilities=capabilities, **resume),
        rule=Rule(),
    )


def session(session_id: str, state: SessionState = SessionState.ACTIVE) -> SessionMetadata:
    return SessionMetadata(
        session_id=session_id,
        manifest_type="consulting",
        manifest_version=1,
        creator_id="alice",
        participants=(
            Participant(agent_id="alice", role=ParticipantRole.INITIATOR, order=0),
            Participant(agent_id="bob", role=ParticipantRole.RESPONDENT, order=1),
        ),
        state=state,
        created_at="2025-01-01T00:00:00.000000+00:00",
        knobs={"max_turns": 4},
    )


def task(task_id: str, **fields: Any) -> TaskMetadata:
    return TaskMetadata(task_id=task_id, owner_id="alice", spec=TaskSpec(title=task_id), **fields)
