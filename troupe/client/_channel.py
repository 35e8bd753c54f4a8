"""Channel: a participant's handle on one session (the seed's word for it)."""

from __future__ import annotations

import contextvars
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..model import EV_TEXT, Envelope, SessionMetadata, SessionState
from ._inbox import Predicate

if TYPE_CHECKING:
    from ._identity import Identity

#: The depth of the envelope whose turn is being handled in this context (None outside one).
HANDLING_DEPTH: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "troupe_handling_depth", default=None
)


class Channel:
    """What ``open`` returns: send into the session, wait in it, close it.

    ``channel_id`` is the session id (the seed's name); ``session_id`` says the same.
    """

    def __init__(self, metadata: SessionMetadata, client: Identity) -> None:
        self._metadata = metadata
        self._client = client

    def __repr__(self) -> str:
        return f"<Channel {self.session_id} {self._metadata.manifest_type} {self.state.value}>"

    @property
    def session_id(self) -> str:
        return self._metadata.session_id

    @property
    def channel_id(self) -> str:
        return self._metadata.session_id

    @property
    def metadata(self) -> SessionMetadata:
        """The metadata as of creation or the last :meth:`info`."""
        return self._metadata

    @property
    def state(self) -> SessionState:
        return self._metadata.state

    async def send(
        self,
        text: str,
        *,
        audience: Sequence[str] | None = None,
        causation_id: str | None = None,
        depth: int | None = None,
    ) -> str:
        """Post an ``EV_TEXT`` envelope; return its id.

        ``depth`` defaults to one more than the envelope whose turn is being handled (a
        delegation from inside a turn), else 0.
        """
        if depth is None:
            current = HANDLING_DEPTH.get()
            depth = 0 if current is None else current + 1
        envelope = Envelope(
            session_id=self.session_id,
            sender_id=self._client.agent_id,
            event_type=EV_TEXT,
            event_data={"text": text},
            audience=tuple(audience) if audience is not None else None,
            causation_id=causation_id,
            depth=depth,
        )
        return await self._client.send_envelope(envelope)

    async def wait_for(self, predicate: Predicate) -> Envelope:
        """Wait for an envelope of this session that ``predicate`` accepts.

        No deadline of its own: wrap it in ``trio.move_on_after`` / ``fail_after``.
        """
        return await self._client.wait_for_channel_event(
            channel_id=self.session_id, predicate=predicate, timeout=math.inf
        )

    async def info(self) -> SessionMetadata:
        """Fresh metadata from the hub."""
        self._metadata = await self._client.hub_client.get_session(self.session_id)
        return self._metadata

    async def close(self, reason: str = "") -> SessionMetadata:
        self._metadata = await self._client.hub_client.close_session(self.session_id, reason=reason)
        return self._metadata
