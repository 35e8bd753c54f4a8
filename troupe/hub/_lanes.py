"""The hub's bookkeeping of streamed chunks (see ``_streaming.py``), kept apart so that
the core and the connections can hold it without importing the post path."""

from __future__ import annotations

import attrs

from ..actors import Message
from ..model import ChunkFrame


@attrs.frozen
class StreamStatistics:
    """What the hub did with streamed chunks since it started.

    ``forwarded`` counts chunk deliveries (one per recipient); ``dropped`` those not made
    because a recipient was ``CHUNK_BUFFER`` behind; ``refused`` chunks that failed the
    sender's checks (over a network they are not answered).
    """

    forwarded: int
    dropped: int
    refused: int


@attrs.define
class Lane:
    """One recipient's chunks queued at its connection."""

    queued: int = 0
    dropped: int = 0


@attrs.frozen(eq=False)
class ChunkOut(Message[None]):
    """To a connection: send ``frame``; ``lane`` counts it as no longer queued."""

    frame: ChunkFrame
    lane: Lane


@attrs.define
class Streams:
    """The hub's chunk lanes and counters (one per hub, on its core)."""

    lanes: dict[str, Lane] = attrs.field(factory=dict)
    forwarded: int = 0
    dropped: int = 0
    refused: int = 0

    def statistics(self) -> StreamStatistics:
        return StreamStatistics(self.forwarded, self.dropped, self.refused)
