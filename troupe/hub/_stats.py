"""Records the hub reports: statistics and health."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class HubStatistics:
    """A snapshot of a hub (trio's ``statistics()`` convention).

    Attributes:
      agents: registered identities.
      sessions / open_sessions: every session the hub knows / those not terminal.
      live_sessions: sessions whose actor is in memory.
      passivated_sessions: open sessions with no actor in memory (passivated, or not used
        since the hub opened); the next use starts them from snapshot + WAL.
      passivations / rehydrations: how often a session was passivated / started again.
      connections: attached endpoints.
      envelopes_accepted / envelopes_rejected / duplicates: envelopes appended to a WAL (the
        hub's own notices too: invites, opened, closed) / posts refused, wherever the check
        that refused them runs, or failed by the store at their append / posts answered
        with the original because they repeated one.
      session_restarts: session actors restarted after a crash (recovered from the WAL).
      sessions_crashed: sessions closed because their actor crashed too often.
      poison_envelopes: posts rejected because they crashed their session twice.
      dead_letters: messages no mailbox could deliver, all reasons.
      pending_inbox: substantive deliveries not yet receipted by their recipients.
      hub_mailbox_high_water / session_mailbox_high_water / connection_mailbox_high_water:
        the most messages ever queued at once in the hub actor's mailbox, in any session
        actor's, and in any attached connection's.
    """

    agents: int
    sessions: int
    open_sessions: int
    live_sessions: int
    passivated_sessions: int
    passivations: int
    rehydrations: int
    connections: int
    envelopes_accepted: int
    envelopes_rejected: int
    duplicates: int
    session_restarts: int
    sessions_crashed: int
    poison_envelopes: int
    dead_letters: int
    pending_inbox: int
    hub_mailbox_high_water: int
    session_mailbox_high_water: int
    connection_mailbox_high_water: int


@attrs.frozen(kw_only=True)
class HubHealth:
    """Whether a hub serves (``Hub.health()``): cheap to ask, for a liveness probe.

    Attributes:
      serving: the hub takes work: its block has not ended, its root supervisor runs and
        the store answered.
      supervisor: the root supervisor's state: ``"running"``, ``"restarting"`` (a child of
        it is down and being restarted), ``"stopping"`` or ``"failed"``.
      store_reachable: the store answered one small read within ``HEALTH_STORE_TIMEOUT_S``.
      live_sessions: sessions whose actor is in memory.
      connections: attached endpoints (in process and over the network).
    """

    serving: bool
    supervisor: str
    store_reachable: bool
    live_sessions: int
    connections: int
