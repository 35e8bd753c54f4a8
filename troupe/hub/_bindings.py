"""Which connection each agent is bound to: read by every actor, written by connections.

The table is the connections' (``_connection``): a connection actor binds an identity to
itself and lets go only of what it holds, so no other actor can drop or overwrite another
connection's binding. The write methods are on :class:`Bindings`, which ``open_hub`` hands
to the connections alone (through the hub handle's ``attach_endpoint``); everyone else —
session actors dispatching, the hub actor telling a connection to ``Unbind``, the
inspector — holds its :attr:`Bindings.view` as ``HubCore.bindings``, a read-only mapping
(a write through it raises, and mypy refuses it).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..actors import ActorRef

#: A connection actor's ref (the connection's message types live in ``_connection``).
ConnectionRef = ActorRef[Any, Any]


class Bindings:
    """agent id -> the connection actor bound to it (module rules)."""

    __slots__ = ("_refs", "view")

    def __init__(self) -> None:
        self._refs: dict[str, ConnectionRef] = {}
        #: The table read-only (a ``MappingProxyType``: reads cost what a dict's do).
        self.view: Mapping[str, ConnectionRef] = MappingProxyType(self._refs)

    def get(self, agent_id: str) -> ConnectionRef | None:
        return self._refs.get(agent_id)

    def bind(self, agent_id: str, holder: ConnectionRef) -> ConnectionRef | None:
        """Bind ``agent_id`` to ``holder``; return the connection it was bound to before.

        Taking an identity from another live connection is the binder's decision, made
        before this call (``ConnectionActor._claim``: a takeover needs the identity's key).
        """
        previous = self._refs.get(agent_id)
        self._refs[agent_id] = holder
        return previous

    def release(self, agent_id: str, holder: ConnectionRef) -> bool:
        """Drop ``agent_id``'s binding if ``holder`` holds it; whether it did.

        A connection that was taken over releases nothing: the identity is another's now.
        """
        if self._refs.get(agent_id) is not holder:
            return False
        del self._refs[agent_id]
        return True
