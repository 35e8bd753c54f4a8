"""The node-to-node requests of a cluster that routes, and how a node answers them.

A peer link is an ordinary hub connection (WebSocket, or a ``LocalLink`` in one process)
whose requests are these records, sent with ``RemoteHub.call`` like any other:

- ``peer_challenge`` → a fresh nonce, kept for this connection only;
- ``peer_hello(node_id, proof)``: ``proof`` is ``HMAC-SHA256(cluster key, nonce | node id)``
  in hex; the node compares it in constant time (``hmac.compare_digest``) and, if it holds,
  marks the connection as that peer's. The key itself never travels, and a nonce serves
  one hello. A hub with no cluster key refuses both;
- ``peer_forward(op, params, on_behalf)``: a session-scoped request record (its ``op`` and
  fields) a peer forwards to this node, the session's owner, which runs it
  (``Hub.serve_forwarded``) and answers with its result or its error (a ``not_owner``
  goes back to the peer, which re-reads the shard map: a forwarded request is never
  forwarded again). ``on_behalf``: the identities bound to the peer's caller, against
  which the record's owner is checked here (None: the peer's trusted in-process caller);
- ``peer_presence(bound, gone, full, fresh)``: identities bound to (or let go by) the
  peer's connections, so that this node knows where to send delivery hints;
- ``peer_hints(pairs)``: ``(recipient, session)`` pairs whose deliveries this node, the
  recipient's holder, is to catch up from the store (``CatchUp``).

Every record but the challenge and the hello is refused (``access_denied``) on a
connection that has not proved the key: a client cannot act as a peer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .._errors import AccessDeniedError, AuthError, DecodeError
from ..api import REQUESTS, PostEnvelope, Request
from ..model import structure

if TYPE_CHECKING:
    from collections.abc import Iterable, MutableMapping

    from ..hub import Hub
    from ..hub._connection import Caller


class Router(Protocol):
    """What these handlers ask of the node's router (``_routing.Router``)."""

    secret: str
    #: Per connection actor: the nonce it was given, the peer node it proved to be.
    nonces: MutableMapping[Any, str]
    peers: MutableMapping[Any, str]

    def learn_presence(self, node_id: str, presence: Presence) -> None: ...

    def catch_up(self, pairs: Iterable[tuple[str, str]]) -> None: ...

    async def checkpoint(self) -> None: ...


@attrs.frozen(kw_only=True)
class PeerChallenge(Request[str]):
    """A nonce for this connection's ``peer_hello``."""

    op = "peer_challenge"
    retry = False


@attrs.frozen(kw_only=True)
class PeerHello(Request[None]):
    """Prove the cluster key for ``node_id`` (see the module docstring)."""

    op = "peer_hello"
    retry = False
    node_id: str
    proof: str


@attrs.frozen(kw_only=True)
class Forward(Request[Any]):
    """Run a session-scoped request for a peer (see the module docstring)."""

    op = "peer_forward"
    retry = False
    request_op: str
    params: dict[str, Any]
    on_behalf: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class Presence(Request[None]):
    """Identities bound to (``bound``) or let go by (``gone``) the peer's connections.

    ``full``: ``bound`` is all of them (what this node knew of the peer before is
    replaced); ``fresh``: identities that asked to be replayed what they missed, whose
    sessions here are hinted to the peer at once.
    """

    op = "peer_presence"
    retry = False
    bound: tuple[str, ...] = ()
    gone: tuple[str, ...] = ()
    full: bool = False
    fresh: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Hints(Request[None]):
    """``(recipient, session)`` pairs to catch up from the store (the peer owns them)."""

    op = "peer_hints"
    retry = False
    pairs: tuple[tuple[str, str], ...]


def proof(secret: str, nonce: str, node_id: str) -> str:
    """``HMAC-SHA256(secret, nonce | node_id)`` in hex: what a peer hello presents."""
    message = f"{nonce}|{node_id}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def forwardable(kind: type[Request[Any]]) -> bool:
    """Whether records of ``kind`` are routed to a session's owner (and so may be forwarded)."""
    return kind is PostEnvelope or kind.owner == "session"


def _router(hub: Hub) -> Router:
    """This hub's router; ``access_denied`` on a hub that does not route (no cluster key)."""
    cluster = hub.core.cluster
    router = getattr(cluster, "router", None)
    if router is None:
        raise AccessDeniedError(
            "this hub is not a cluster node that accepts peers (no cluster key)"
        )
    found: Router = router
    return found


def _peer(hub: Hub, caller: Caller | None) -> tuple[Router, str]:
    """The router and the peer's node id; ``access_denied`` unless the caller proved the key."""
    router = _router(hub)
    node_id = router.peers.get(caller.actor) if caller is not None else None
    if node_id is None:
        raise AccessDeniedError(
            "only a cluster peer that proved the cluster key (peer_hello) may send this"
        )
    return router, node_id


async def _challenge(hub: Hub, request: PeerChallenge, caller: Caller | None) -> str:
    router = _router(hub)
    if caller is None:
        raise AccessDeniedError("a peer challenge is for a connection")
    nonce = secrets.token_hex(16)
    router.nonces[caller.actor] = nonce
    return nonce


async def _hello(hub: Hub, request: PeerHello, caller: Caller | None) -> None:
    router = _router(hub)
    if caller is None:
        raise AccessDeniedError("a peer hello is for a connection")
    nonce = router.nonces.pop(caller.actor, None)  # one hello per nonce
    secret = router.secret
    expected = proof(secret, nonce or "", request.node_id)
    # Compared even without a nonce, so that the time taken says nothing either way.
    matches = hmac.compare_digest(expected.encode(), request.proof.encode())
    if nonce is None or not matches:
        raise AuthError(
            f"peer hello from node {request.node_id!r} refused: no challenge was asked on "
            "this connection, or the proof does not match the cluster key"
        )
    router.peers[caller.actor] = request.node_id


async def _forward(hub: Hub, request: Forward, caller: Caller | None) -> Any:
    _peer(hub, caller)
    kind = REQUESTS.get(request.request_op)
    if kind is None or not forwardable(kind):
        raise DecodeError(
            f"peer_forward: {request.request_op!r} is not a session-scoped request",
            record="Forward",
            field="request_op",
        )
    inner = structure(request.params, kind)
    on_behalf = None if request.on_behalf is None else frozenset(request.on_behalf)
    return await hub.serve_forwarded(inner, on_behalf)


async def _presence(hub: Hub, request: Presence, caller: Caller | None) -> None:
    router, node_id = _peer(hub, caller)
    router.learn_presence(node_id, request)
    await router.checkpoint()


async def _hints(hub: Hub, request: Hints, caller: Caller | None) -> None:
    router, _ = _peer(hub, caller)
    router.catch_up(request.pairs)
    await router.checkpoint()


def install() -> None:
    """Make these records hub operations (the hub's one handler table)."""
    from ..hub._hub import HANDLERS

    HANDLERS[PeerChallenge] = _challenge
    HANDLERS[PeerHello] = _hello
    HANDLERS[Forward] = _forward
    HANDLERS[Presence] = _presence
    HANDLERS[Hints] = _hints
