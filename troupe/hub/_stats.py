"""Records the hub reports: statistics and pending turns."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class HubStatistics:
    """A snapshot of a hub (trio's ``statistics()`` convention)."""

    agents: int
    sessions: int
    open_sessions: int
    live_sessions: int
    passivated_sessions: int
    connections: int
    envelopes_accepted: int
    envelopes_rejected: int
    duplicates: int
    session_restarts: int
    sessions_crashed: int
    poison_envelopes: int
    dead_letters: int
    pending_inbox: int


@attrs.frozen(kw_only=True)
class PendingTurn:
    """A turn the session type says an agent owes (``pending_turns_for``)."""

    session_id: str
    triggering_envelope_id: str | None = None
