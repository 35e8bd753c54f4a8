"""From sessions to connections: the connections' tables, the messages dispatch sends.

``Routes``: the connections' two tables, endpoint id -> connection actor and agent id ->
the connection it is bound to. ``Deliver`` and ``CatchUp``: what a session's dispatch
(``_delivery``) sends a connection (and a cluster node, for another node's hint: a
``CatchUp``). ``CatchUps``: the catch-ups queued and not handled.

The tables are the connections' (``_connection``, ``_serve``): a connection enters itself
as it starts and leaves as it ends, binds an identity to itself and lets go only of what
it holds, so no other actor can drop or overwrite another connection's entries. The write
methods are on :class:`Routes`, which ``open_hub`` hands to the connections alone (through
the hub handle's ``attach_endpoint``); everyone else — session actors dispatching, the hub
actor telling a connection to ``Unbind``, the inspector — reads ``HubCore.bindings`` and
``HubCore.connections``, read-only mappings (a write through them raises; mypy refuses it).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ..actors import ActorRef, Message
from ..model import Envelope

#: A connection actor's ref (the connection's message types live in ``_connection``).
ConnectionRef = ActorRef[Any, Any]


class Routes:
    """The connections' tables (module rules)."""

    __slots__ = ("_connections", "_direct", "_refs", "bindings", "connections", "direct")

    def __init__(self) -> None:
        self._connections: dict[str, Any] = {}
        self._direct: dict[ConnectionRef, Any] = {}
        self._refs: dict[str, ConnectionRef] = {}
        #: endpoint id -> its ``ConnectionActor``, read-only.
        self.connections: Mapping[str, Any] = MappingProxyType(self._connections)
        #: agent id -> the connection actor it is bound to, read-only (a
        #: ``MappingProxyType``: reads cost about what a dict's do).
        self.bindings: Mapping[str, ConnectionRef] = MappingProxyType(self._refs)
        #: A connection actor's ref -> the actor, for the in-process connections a dispatch
        #: may notify itself (``ConnectionActor.notify_now``), read-only.
        self.direct: Mapping[ConnectionRef, Any] = MappingProxyType(self._direct)

    def attach(self, endpoint_id: str, actor: Any, *, direct: bool = False) -> None:
        """Enter ``actor`` (a running ``ConnectionActor``) as the connection of
        ``endpoint_id``; with ``direct``, also as one a dispatch may notify itself."""
        self._connections[endpoint_id] = actor
        if direct:
            self._direct[actor.ref] = actor

    def detach(self, endpoint_id: str, actor: Any) -> None:
        """Remove ``endpoint_id``'s entries if they are ``actor``'s (the connection ended)."""
        if self._connections.get(endpoint_id) is actor:
            del self._connections[endpoint_id]
        ref = getattr(actor, "ref", None)  # (unset: it never started)
        if ref is not None and self._direct.get(ref) is actor:
            del self._direct[ref]

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


@attrs.frozen
class Deliver(Message[None]):
    """To a connection: notify ``recipient_id`` of ``envelope``.

    ``redelivery``: sent again by a restarted session; if the connection already has it,
    it gives back the inbox count the dispatch took.
    """

    envelope: Envelope
    recipient_id: str
    redelivery: bool = False


@attrs.frozen
class CatchUp(Message[None]):
    """To a connection: ``recipient_id`` missed deliveries of ``session_id``; read the WAL.

    ``counted``: the dispatch counted what was missed in the inbox ledger (a full
    mailbox); not so for what was held back from an invitee until it acked.
    ``hinted``: another cluster node, the session's owner, dispatched to the recipient,
    bound here (a hint: nothing was counted, and what was sent before is not sent again).
    """

    recipient_id: str
    session_id: str
    counted: bool = True
    hinted: bool = False


class CatchUps:
    """The catch-ups queued to connections and not yet handled: at most one per
    (connection, recipient, session), however many dispatches missed.

    A service with its own API: dispatch queues one when a connection's mailbox is full
    (:meth:`queue`); the connection marks it handled as it starts reading the WAL
    (:meth:`handled`: a dispatch missed after that queues another), and forgets all of its
    own when it stops (:meth:`forget`).
    """

    __slots__ = ("_queued",)

    def __init__(self) -> None:
        self._queued: set[tuple[str, str, str]] = set()

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, key: object) -> bool:
        """Whether ``(connection name, recipient, session)`` has a catch-up queued."""
        return key in self._queued

    def queue(
        self,
        conn: ActorRef[Any, Any],
        recipient_id: str,
        session_id: str,
        *,
        hinted: bool = False,
    ) -> None:
        """Queue a catch-up of ``session_id`` for ``recipient_id`` in ``conn``'s system lane,
        unless one is queued and not handled yet (``hinted``: for a cluster node's hint,
        see :class:`CatchUp`).

        Raises:
          MailboxClosed: the connection is ending (its replay on reconnect catches up).
        """
        key = (conn.name, recipient_id, session_id)
        if key not in self._queued:
            conn.mailbox.send_system(
                CatchUp(recipient_id, session_id, counted=not hinted, hinted=hinted)
            )
            self._queued.add(key)

    def handled(self, conn_name: str, recipient_id: str, session_id: str) -> None:
        self._queued.discard((conn_name, recipient_id, session_id))

    def forget(self, conn_name: str) -> None:
        """Forget the catch-ups queued to ``conn_name`` (it stopped)."""
        self._queued = {key for key in self._queued if key[0] != conn_name}
