"""The inspector's live feed: a hub's events as Server-Sent Events, one stream per viewer.

Rules:

- Each viewer reads its own ``hub.events()`` subscription of ``capacity`` events. A viewer
  that reads slower than the hub publishes loses the newest events, never slows the hub: the
  hub's publish only appends to a bounded buffer. The viewer then gets a ``missed`` event
  (with the count) and reloads what it shows.
- At most ``max_viewers`` feeds at once; one more is answered 503.
- A comment line every ``KEEPALIVE_S`` seconds of quiet, so a viewer that left is noticed
  (its socket errors) and proxies keep the connection open.
- The feed ends (an ``end`` event) when the hub closes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs
import orjson
import trio

from ..hub import (
    Audited,
    EnvelopeAccepted,
    EventStream,
    Hub,
    HubEvent,
    Missed,
    SessionActorCrashed,
    SessionActorRestarted,
    SessionClosed,
    SessionOpened,
)
from ._sources import envelope_json

#: Events one viewer's feed may hold unread before the newest are dropped.
FEED_CAPACITY: Final = 256
#: Feeds served at once.
MAX_VIEWERS: Final = 32
#: Seconds of quiet before a keep-alive comment.
KEEPALIVE_S: Final = 15.0
#: What a feed filtered to one session subscribes to.
SESSION_EVENTS: Final = (
    EnvelopeAccepted,
    SessionOpened,
    SessionClosed,
    SessionActorCrashed,
    SessionActorRestarted,
)


def _kind(name: str) -> str:
    out = [name[0].lower()]
    for ch in name[1:]:
        out.append(f"_{ch.lower()}" if ch.isupper() else ch)
    return "".join(out)


def event_json(event: HubEvent) -> dict[str, Any]:
    """One event as the feed sends it: ``kind`` (snake case of its record) and its fields."""
    if isinstance(event, EnvelopeAccepted):
        return {
            "kind": "envelope_accepted",
            "at": event.at,
            "session_id": event.session_id,
            "seq": event.seq,
            "envelope": envelope_json(event.envelope),
        }
    if isinstance(event, Missed):
        return {"kind": "missed", "count": event.count}
    if isinstance(event, Audited):
        return {"kind": "audited", "at": event.at, "audit_kind": event.kind, "data": event.data}
    return {"kind": _kind(type(event).__name__), **attrs.asdict(event, recurse=True)}


def _default(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    return repr(value)


def sse(event: str, data: object) -> bytes:
    """One Server-Sent Event (its data is one line of JSON)."""
    return (
        b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data, default=_default) + b"\n\n"
    )


class Viewers:
    """How many feeds are open, against the limit."""

    def __init__(self, limit: int = MAX_VIEWERS) -> None:
        if limit < 1:
            raise ValueError(f"max_viewers must be >= 1, got {limit!r}")
        self.limit = limit
        self.open = 0


def open_feed(hub: Hub, session_id: str | None, capacity: int) -> EventStream:
    """The subscription one viewer reads (only its session's events when it names one)."""
    if session_id is None:
        return hub.events(capacity=capacity)
    return hub.events(*SESSION_EVENTS, capacity=capacity)


async def next_message(stream: EventStream, session_id: str | None) -> bytes | None:
    """The next SSE message for this viewer; a keep-alive after ``KEEPALIVE_S`` of quiet;
    ``None`` once the hub closed.
    """
    with trio.move_on_after(KEEPALIVE_S):
        while True:
            try:
                event = await stream.receive()
            except trio.EndOfChannel:
                return None
            if session_id is not None and not isinstance(event, Missed):
                if getattr(event, "session_id", None) != session_id:
                    continue
            data = event_json(event)
            return sse(data["kind"], data)
    return b": keepalive\n\n"
