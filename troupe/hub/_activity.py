"""A session's activity summary: what the expectation evaluators read instead of its WAL.

Rules:

- The session actor notes every envelope it accepts, in WAL order, both live and while
  recovering, so a recovered summary equals the one that ran. It is published on the
  session's directory entry, where the expectation sweeper reads it (reference weakness 30:
  the reference re-read every WAL on every tick).
- Times are the envelopes' ``created_at`` on the hub clock, in seconds; each mark also keeps
  the envelope's ``seq``, which names the episode a violation belongs to.
- *Content* is every substantive envelope but expectation notices (a warning does not end a
  silence). *Messages* are content that speaks to someone: ``EV_TEXT`` and ``EV_PACKET``.
- ``content``: the last content. ``turn``: the last content or ``hide`` / ``remove`` notice
  (those hand the floor on, so the next speaker's clock starts there). ``sent[p]``: the last
  message ``p`` sent. ``received[p]``: the last message sent to ``p`` by someone else (its
  audience, or everyone when it has none).
- ``to_json`` / ``from_json`` round-trip exactly; the session actor saves the summary with
  each snapshot so recovery reads only the WAL after it.
- ``Activity`` is pure (no trio, no clock; O(audience) per envelope); the helpers at the end
  save it with a snapshot and load it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs

from ..model import (
    EV_EXPECTATION_VIOLATED,
    EV_PACKET,
    EV_TEXT,
    Envelope,
    SessionMetadata,
    is_protocol_event,
)
from ..model import parse_iso as _parse_iso
from ..session_types._stalls import STALL_ACTIONS
from ..store import Store

#: Event types that count as messages for ``reply_within``.
MESSAGE_EVENTS: Final = frozenset({EV_TEXT, EV_PACKET})


@attrs.frozen
class Mark:
    """When something happened (hub-clock seconds) and at which WAL position."""

    at: float
    seq: int


@attrs.define
class Activity:
    """The summary of one session's activity (see the module docstring)."""

    content: Mark | None = None
    turn: Mark | None = None
    sent: dict[str, Mark] = attrs.field(factory=dict)
    received: dict[str, Mark] = attrs.field(factory=dict)
    last_seq: int = 0

    def note(
        self, envelope: Envelope, participants: Sequence[str], at: float | None = None
    ) -> None:
        """Account for an accepted envelope.

        Args:
            envelope: A stamped envelope, the next in the WAL.
            participants: The session's participant ids (an audience-less message reaches
                all of them but the sender).
            at: ``parse_iso(envelope.created_at)``, when the caller has it (it stamped it).
        """
        self.last_seq = envelope.seq
        kind = envelope.event_type
        if is_protocol_event(kind):
            return
        mark = Mark(_parse_iso(envelope.created_at) if at is None else at, envelope.seq)
        if kind == EV_EXPECTATION_VIOLATED:
            if envelope.event_data.get("on_violation") in STALL_ACTIONS:
                self.turn = mark
            return
        self.content = self.turn = mark
        if kind not in MESSAGE_EVENTS:
            return
        sender = envelope.sender_id
        self.sent[sender] = mark
        audience = envelope.audience if envelope.audience is not None else participants
        for recipient in audience:
            if recipient != sender:
                self.received[recipient] = mark

    def to_json(self) -> dict[str, Any]:
        """JSON data for a snapshot.

        Returns:
            Marks as ``[at, seq]`` pairs.
        """

        def pair(mark: Mark | None) -> list[float] | None:
            return None if mark is None else [mark.at, mark.seq]

        return {
            "content": pair(self.content),
            "turn": pair(self.turn),
            "sent": {k: pair(v) for k, v in self.sent.items()},
            "received": {k: pair(v) for k, v in self.received.items()},
            "last_seq": self.last_seq,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Activity:
        """Rebuild a summary from ``to_json`` data.

        Args:
            data: What ``to_json`` returned (possibly after a JSON round trip).

        Returns:
            An equal summary.

        Raises:
            KeyError, TypeError, ValueError: When ``data`` is not such data.
        """

        def mark(pair: list[Any] | None) -> Mark | None:
            return None if pair is None else Mark(float(pair[0]), int(pair[1]))

        def marks(table: dict[str, Any]) -> dict[str, Mark]:
            return {k: Mark(float(v[0]), int(v[1])) for k, v in table.items()}

        return cls(
            content=mark(data["content"]),
            turn=mark(data["turn"]),
            sent=marks(data["sent"]),
            received=marks(data["received"]),
            last_seq=int(data["last_seq"]),
        )


# -- persistence (the only part that awaits: a store, never trio) ------------------------------

#: A session's summary is kept under ``(ACTIVITY_NS + session_id, "summary")``.
ACTIVITY_NS: Final = "troupe.activity:"


async def save_activity(store: Store, session_id: str, activity: Activity) -> None:
    """Keep ``activity`` next to the snapshot just saved at ``activity.last_seq``.

    Args:
        store: The hub's store.
        session_id: The session.
        activity: Its summary.
    """
    await store.put_kv(ACTIVITY_NS + session_id, "summary", activity.to_json())


async def load_activity(store: Store, metadata: SessionMetadata, since: int) -> Activity:
    """The summary after envelope ``since`` (a snapshot's seq): saved, or rebuilt from the WAL.

    Args:
        store: The hub's store.
        metadata: The session.
        since: The seq the session's snapshot was taken at (0: no snapshot).

    Returns:
        The summary as it was after ``since``. It is rebuilt from the WAL up to ``since``
        when none was saved at exactly that seq (a crash between the two writes).
    """
    if since == 0:
        return Activity()
    sid = metadata.session_id
    data = (await store.load_kv(ACTIVITY_NS + sid)).get("summary")
    if isinstance(data, dict):
        try:
            saved = Activity.from_json(data)
        except (KeyError, TypeError, ValueError, IndexError):
            saved = None
        if saved is not None and saved.last_seq == since:
            return saved
    activity = Activity()
    ids = metadata.participant_ids()
    for envelope in await store.read(sid, until=since):
        activity.note(envelope, ids)
    return activity


async def forget_activity(store: Store, session_id: str) -> None:
    """Drop a finished session's saved summary.

    Args:
        store: The hub's store.
        session_id: The session.
    """
    await store.delete_kv(ACTIVITY_NS + session_id)
