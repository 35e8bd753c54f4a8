"""What an agent is given on its turn, and what it may answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ..model import Envelope, SessionMetadata
from ..session_types import HistoryItem

if TYPE_CHECKING:
    from ._agent_client import AgentClient


@attrs.frozen(kw_only=True)
class Turn:
    """One turn of an agent in one session.

    ``text`` is the trigger rendered by the session type; ``history`` is the session type's
    view of the session for this agent, up to (not including) the trigger.
    """

    text: str
    envelope: Envelope
    session: SessionMetadata
    history: list[HistoryItem]
    client: AgentClient = attrs.field(repr=False)

    @property
    def session_id(self) -> str:
        return self.envelope.session_id

    @property
    def agent_id(self) -> str:
        return self.client.agent_id


class Agent(Protocol):
    """Anything with ``async def respond(self, turn)``: return text to reply, None for silence."""

    async def respond(self, turn: Turn) -> Any: ...
