"""What an agent is given on its turn, and what it may answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ..model import Envelope, SessionMetadata
from ..session_types import HistoryItem
from ._streaming import ChunkStream

if TYPE_CHECKING:
    from ._agent_client import AgentClient


class _StreamSlot:
    """Where a turn keeps its stream once it streamed, and its history once built (a Turn
    itself is frozen)."""

    __slots__ = ("history", "stream")

    def __init__(self) -> None:
        self.stream: ChunkStream | None = None
        self.history: list[HistoryItem] | None = None


@attrs.frozen(kw_only=True)
class Turn:
    """One turn of an agent in one session.

    ``text`` is the trigger rendered by the session type; ``history`` is the session type's
    view of the session for this agent, up to (not including) the trigger. It is built when
    first read (``history=`` takes the items, or a function that builds them), and each read
    returns the same list.

    ``await turn.stream(text)`` sends part of the reply ahead of it (for an LLM, tokens as
    they come); ``respond`` still returns the whole reply, which the default turn handler
    posts with this turn's :attr:`stream_id`.
    """

    text: str
    envelope: Envelope
    session: SessionMetadata
    _history: list[HistoryItem] | Callable[[], list[HistoryItem]] = attrs.field(
        alias="history", repr=False, eq=False
    )
    client: AgentClient = attrs.field(repr=False)
    _slot: _StreamSlot = attrs.field(init=False, factory=_StreamSlot, repr=False, eq=False)

    @property
    def history(self) -> list[HistoryItem]:
        """The session type's view of the session before the trigger, for this agent."""
        slot = self._slot
        if slot.history is None:
            source = self._history
            slot.history = source() if callable(source) else source
        return slot.history

    @property
    def session_id(self) -> str:
        return self.envelope.session_id

    @property
    def agent_id(self) -> str:
        return self.client.agent_id

    @property
    def stream_id(self) -> str | None:
        """The id of this turn's stream, or None if it did not stream."""
        stream = self._slot.stream
        return stream.stream_id if stream is not None else None

    async def stream(self, text: str) -> None:
        """Send ``text`` as the next chunk of this turn's reply (best effort).

        The chunks go to the participants the reply will go to (the session type decides:
        everyone else, or in an auction the trigger's sender only), tagged with the
        trigger's id as ``parent_envelope_id``. An empty ``text`` sends nothing.

        Raises:
          TypeError: ``text`` is not a string.
        """
        slot = self._slot
        if slot.stream is None:
            slot.stream = ChunkStream(
                self.client,
                self.session_id,
                audience=self._reply_audience(),
                parent_envelope_id=self.envelope.envelope_id,
                checked=True,  # the turn handler asked can_send before the turn
            )
        await slot.stream.send(text)

    def _reply_audience(self) -> tuple[str, ...] | None:
        """The audience the session type gives this turn's reply (asked with a probe).

        When the session type cannot say, the trigger's sender only: chunks must never
        reach someone the reply would not.
        """
        stype = self.client.hub_client.session_type_for(self.session)
        builder = getattr(stype, "build_reply", None)
        if builder is None:
            return None
        try:
            probe = builder(self.session, self.agent_id, "\u2026", self.envelope)
        except (TypeError, ValueError):
            probe = None
        if not isinstance(probe, Envelope):
            return (self.envelope.sender_id,)
        return probe.audience


class Agent(Protocol):
    """Anything with ``async def respond(self, turn)``: return text to reply, None for silence."""

    async def respond(self, turn: Turn) -> Any: ...
