"""From a session's WAL to its participants' connections.

A session actor never waits on a connection: it hands each delivery over with
``tell_nowait``. When a connection's mailbox is full it gets a ``CatchUp`` in its system lane
instead and reads what it missed from the WAL (the WAL is the truth; deliveries are hints):
one queued catch-up per (connection, recipient, session), however many deliveries missed.
That keeps one slow client from stalling a session, and keeps the post → deliver → reply →
post cycle free of deadlocks.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._errors import ActorDead, MailboxFull
from ..mailbox import DeadLetter
from ..model import (
    EV_CHANNEL_INVITE,
    EV_SESSION_CLOSED,
    EV_SESSION_EXPIRED,
    Envelope,
    SessionMetadata,
    is_substantive,
)
from ._core import HubCore
from ._routes import CatchUp, Deliver
from ._rules import accepts_inbound

#: What an invitee receives of a session before it acks its invite: the invite, and the
#: notice that ends the session (which withdraws the invite). Nothing else: no text, no
#: notice of the opening, whoever else acked. Once it acks, it is caught up from the WAL.
BEFORE_ACK = frozenset({EV_CHANNEL_INVITE, EV_SESSION_CLOSED, EV_SESSION_EXPIRED})


def held_back(metadata: SessionMetadata, envelope: Envelope, recipient_id: str) -> bool:
    """Whether ``envelope`` waits until ``recipient_id`` acks its invite to the session."""
    return recipient_id in metadata.pending_acks and envelope.event_type not in BEFORE_ACK


def recipients_of(metadata: SessionMetadata, envelope: Envelope) -> Iterable[str]:
    """The audience, or every participant but the sender."""
    if envelope.audience is not None:
        return envelope.audience
    sender = envelope.sender_id
    return [p.agent_id for p in metadata.participants if p.agent_id != sender]


def dispatch(
    core: HubCore, metadata: SessionMetadata, envelope: Envelope, *, redelivery: bool = False
) -> None:
    """Hand ``envelope`` to the connection of every recipient that may receive it.

    Recipients whose ``inbound_from`` refuses the sender are skipped silently (the post
    stood); recipients without a connection are skipped (they are replayed on reconnect; in a
    cluster that routes, the node holding their connection is hinted).
    ``redelivery``: a restarted session sends its last envelopes again, not knowing which
    ones reached the connections before the crash.
    """
    registry = core.registry
    sender_id = envelope.sender_id
    sender_name = registry.name_for(sender_id)
    substantive = is_substantive(envelope.event_type)
    for recipient_id in recipients_of(metadata, envelope):
        rule = registry.rule(recipient_id)
        if rule is None:
            continue
        if recipient_id != sender_id and not accepts_inbound(rule, sender_name):
            continue
        if held_back(metadata, envelope, recipient_id):
            continue
        conn = core.bindings.get(recipient_id)
        if conn is None:
            if core.cluster is not None:
                core.cluster.hint(recipient_id, metadata.session_id)  # bound elsewhere?
            continue
        inbox = rule.limits.inbox
        if (
            substantive
            and inbox.overflow == "drop_newest"
            and 0 < inbox.max_pending <= core.ledger.pending(recipient_id)
        ):
            # Accepted into the WAL, not delivered now: the agent's next replay brings it.
            core.dead_letters(
                DeadLetter(message=envelope, reason="inbox_full", mailbox=recipient_id)
            )
            core.audit(
                "inbox_overflow",
                agent_id=recipient_id,
                session_id=metadata.session_id,
                seq=envelope.seq,
            )
            continue
        direct = None if redelivery else core.direct.get(conn)
        try:
            if direct is None or not direct.notify_now(envelope, recipient_id):
                conn.tell_nowait(Deliver(envelope, recipient_id, redelivery))
        except MailboxFull:
            core.catch_ups.queue(conn, recipient_id, metadata.session_id)
            if redelivery:
                continue  # the catch-up counts what it sends; this one may be a repeat
        except ActorDead:
            continue
        if substantive:
            crossed = core.ledger.add(recipient_id, rule.limits.inbox)
            if crossed is not None:
                core.audit(
                    "inbox_pressure",
                    agent_id=recipient_id,
                    pending=crossed,
                    max_pending=rule.limits.inbox.max_pending,
                )


def catch_up_after_ack(core: HubCore, recipient_id: str, session_id: str) -> None:
    """An invitee acked a session that went on without it: send it what was held back."""
    conn = core.bindings.get(recipient_id)
    if conn is None:
        if core.cluster is not None:
            core.cluster.hint(recipient_id, session_id)  # bound on another node?
        return  # else its next bind replays it
    msg = CatchUp(recipient_id, session_id, counted=False)
    try:
        conn.tell_nowait(msg)
    except MailboxFull:
        conn.mailbox.send_system(msg)
    except ActorDead:
        pass
