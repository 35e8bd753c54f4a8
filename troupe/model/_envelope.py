"""The envelope — the only message shape between participants — and its event types.

Reference §2.5-2.6, with troupe's words and one addition: ``seq``, the envelope's position in
its session's WAL (1, 2, 3, … with no gaps), stamped by the session actor.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from ._convert import to_opt_tuple

# Substantive chat text: {"text": str}.
EV_TEXT: Final = "troupe.text"
# One agent round captured atomically (workflow): {"routing", "context_updates", "body"}.
EV_PACKET: Final = "troupe.packet"
# Session handshake, posted by the hub for the creator, one per invitee.
EV_CHANNEL_INVITE: Final = "troupe.session.invite"
EV_CHANNEL_INVITE_ACK: Final = "troupe.session.invite.ack"
EV_CHANNEL_INVITE_REJECT: Final = "troupe.session.invite.reject"
# Session lifecycle, posted by the hub with the creator as sender to every participant.
EV_SESSION_OPENED: Final = "troupe.session.opened"
EV_SESSION_CLOSED: Final = "troupe.session.closed"
EV_SESSION_EXPIRED: Final = "troupe.session.expired"
# A timed expectation was missed: {"expectation", "violators", "detail"}.
EV_EXPECTATION_VIOLATED: Final = "troupe.expectation.violated"
# Workflow context variables: {"set": {...}, "delete": [...]}.
EV_CONTEXT_SET: Final = "troupe.context.set"
# Tasks: {"task_id", "reason"}.
EV_TASK_CANCEL_REQUEST: Final = "troupe.task.cancel_request"
EV_TASK_CANCELLED: Final = "troupe.task.cancelled"

#: Event types that start with one of these are protocol events; all others are substantive.
PROTOCOL_PREFIXES: Final = ("troupe.session.", "troupe.task.")


def is_protocol_event(event_type: str) -> bool:
    """Protocol events (handshake, lifecycle, tasks) pass PENDING sessions and inbox caps."""
    return event_type.startswith(PROTOCOL_PREFIXES)


def is_substantive(event_type: str) -> bool:
    return not event_type.startswith(PROTOCOL_PREFIXES)


@attrs.frozen(kw_only=True)
class Envelope:
    """One message in one session.

    The sender fills ``session_id``, ``sender_id``, ``event_type``, ``event_data`` and
    optionally ``audience`` (``None`` = everyone else in the session; a list may name the
    sender to self-deliver). The hub stamps ``envelope_id``, ``seq`` and ``created_at`` on
    accept and hands back a stamped copy; the caller's object is never changed.

    ``stream_id``: the envelope ends the stream of chunks with this id (see
    :class:`StreamChunk`); ``trace_id``: a W3C ``traceparent`` when tracing is on (see
    ``troupe.tracing``).

    ``idempotency_key``: a second post with a key the session already accepted returns the
    original ``envelope_id`` and appends nothing (also after a restart).
    """

    session_id: str
    sender_id: str
    event_type: str
    event_data: dict[str, Any] = attrs.field(factory=dict)
    audience: tuple[str, ...] | None = attrs.field(default=None, converter=to_opt_tuple)
    envelope_id: str = ""
    seq: int = 0
    created_at: str = ""
    task_id: str | None = None
    causation_id: str | None = None
    idempotency_key: str | None = None
    trace_id: str | None = None
    priority: str = "normal"
    depth: int = 0
    stream_id: str | None = None

    @property
    def text(self) -> str | None:
        """``event_data["text"]`` when it is a string, else ``None``."""
        text = self.event_data.get("text")
        return text if isinstance(text, str) else None

    def stamped(self, envelope_id: str, seq: int, created_at: str) -> Envelope:
        """A copy with the hub's stamp: ``attrs.evolve`` for these three fields, at half its
        cost (it runs for every post)."""
        return Envelope(
            session_id=self.session_id,
            sender_id=self.sender_id,
            event_type=self.event_type,
            event_data=self.event_data,
            audience=self.audience,
            envelope_id=envelope_id,
            seq=seq,
            created_at=created_at,
            task_id=self.task_id,
            causation_id=self.causation_id,
            idempotency_key=self.idempotency_key,
            trace_id=self.trace_id,
            priority=self.priority,
            depth=self.depth,
            stream_id=self.stream_id,
        )

    def visible_to(self, participant_id: str) -> bool:
        """True for the sender, for everyone when ``audience`` is None, else for those listed."""
        return (
            self.audience is None
            or participant_id == self.sender_id
            or participant_id in self.audience
        )
