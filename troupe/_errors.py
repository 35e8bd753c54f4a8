"""Every exception troupe raises, in one tree.

::

    TroupeError
    ├── NetworkError                 raised by the hub and the clients (the reference's names)
    │   ├── NotFoundError            an unknown agent, session, task or session type
    │   ├── AccessDeniedError        a rule said no (globs, depth, concurrency caps)
    │   │   └── RateLimited          the sender's rate block is exhausted
    │   ├── InboxFull                a recipient's inbox is at ``max_pending``
    │   ├── ProtocolError            a session-type rule, a handshake or a lifecycle step said no
    │   │   ├── DecodeError          JSON (or a value) that does not fit a troupe record
    │   │   ├── IllegalTransition    a state machine was asked for a move it does not have
    │   │   └── WorkflowGraphError   a workflow graph with unknown names or a bad shape
    │   ├── AuthError                an unknown auth scheme or a bad claim
    │   ├── IdentityInUse            the identity is bound to another live connection
    │   └── ConnectionLost           a remote hub's connection dropped before it answered
    ├── MailboxFull                  a ``reject`` mailbox is full (also a ``trio.WouldBlock``)
    ├── MailboxClosed                a send to, or a receive from, a closed mailbox
    ├── ActorDead                    an ask to an actor that is dead or died before replying
    ├── RestartIntensityExceeded     a supervisor saw too many crashes and gave up
    └── StoreError                   the store could not do what was asked
        ├── IncompatibleStore        a file that is not a troupe store, or from a newer schema
        ├── StoreLocked              another hub has the store open for writing
        ├── NameTaken                an agent's name is held by another agent (unique)
        └── NotOwner                 a cluster node does not own the session's shard (now)

Each message names the id that was wrong.
"""

from __future__ import annotations

from typing import Any, ClassVar

import trio


class TroupeError(Exception):
    """Base of every exception troupe raises on purpose."""


class NetworkError(TroupeError):
    """Base of the errors raised by the hub and the clients."""

    #: The code this error travels under in an ``ErrorFrame`` / ``ResponseFrame``.
    code: str = "error"


class NotFoundError(NetworkError):
    """Raised when an agent, session, task or session type is not known to the hub."""

    code = "not_found"


class AccessDeniedError(NetworkError):
    """Raised when a rule forbids the operation (access globs, depth, concurrency caps)."""

    code = "access_denied"


class RateLimited(AccessDeniedError):
    """Raised when a sender has used up its ``rate`` block (per minute plus burst)."""


class InboxFull(NetworkError):
    """Raised when a recipient already has ``inbox.max_pending`` envelopes outstanding."""

    code = "inbox_full"


class ProtocolError(NetworkError):
    """Raised when a session type, a handshake or a lifecycle step refuses the operation."""

    code = "protocol_error"


class DecodeError(ProtocolError):
    """Raised when JSON data does not fit the troupe record it is decoded into, or a value
    handed to the hub does not fit its field (a wrong type, data JSON cannot carry).

    ``record`` names the record and ``field`` the dotted path of the field that was wrong
    (empty when the data was not an object at all).
    """

    code = "bad_frame"

    def __init__(self, message: str, *, record: str, field: str = "") -> None:
        super().__init__(message)
        self.record = record
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        # The keyword-only fields are not in ``args``: pickle them explicitly.
        return (_decode_error, (str(self), self.record, self.field))


class IllegalTransition(ProtocolError):
    """Raised when a state machine is asked for a move its table does not have.

    ``state`` names the state it was in and ``event`` what was asked of it (empty when not
    known, as for an error that came over the wire); the machine is left as it was.
    """

    def __init__(self, message: str, *, state: str = "", event: str = "") -> None:
        super().__init__(message)
        self.state = state
        self.event = event


class WorkflowGraphError(ProtocolError):
    """Raised when a workflow graph names an unknown condition or target, or is malformed."""


class AuthError(NetworkError):
    """Raised when an auth scheme is unknown or a claim does not validate."""

    code = "auth_failed"


class IdentityInUse(NetworkError):
    """Raised when an identity is bound to another live connection and may not be taken.

    Without an API key nobody may take an identity from a live connection; with the right
    key a bind takes it over, and the connection that held it gets this error and is closed.
    """

    code = "identity_in_use"


class ConnectionLost(NetworkError):
    """Raised when the connection to a remote hub dropped before an answer arrived.

    The operation may or may not have taken effect; ``HubClient`` retries the ones that are
    safe to repeat (reads, and posts, which carry an idempotency key) after it reconnects.
    """

    code = "connection_lost"


class MailboxFull(TroupeError, trio.WouldBlock):
    """Raised when a message is sent to a full mailbox whose overflow policy is ``reject``."""


class MailboxClosed(TroupeError):
    """Raised when sending to a closed mailbox, or receiving from a closed, drained one."""


class ActorDead(TroupeError):
    """Raised when an ask goes to an actor that is dead or that dies before it replies.

    When the actor crashed while handling this very message, the crash is the ``__cause__``.
    """


class RestartIntensityExceeded(TroupeError):
    """Raised when a supervisor saw more than ``max_restarts`` crashes in ``within_s``.

    The supervisor then stopped every child and gave up; this leaves its block, bare, with
    the last crash as the ``__cause__``.
    """


class StoreError(TroupeError):
    """Raised when the store cannot carry out an operation (I/O error, full disk, conflict)."""


class IncompatibleStore(StoreError):
    """Raised when a file is not a troupe store, or was written by a newer schema."""


class StoreLocked(StoreError):
    """Raised when another hub (this process or another) has the store open for writing.

    The message names the file and the holder (pid, host, since when) as it recorded them.
    """


class NameTaken(StoreError):
    """Raised when a store is asked to save an agent under a name another agent holds:
    names are unique by the store's constraint (two hubs on one store cannot both take one).

    Nothing was written. ``name`` is the name, ``holder`` the id of the agent holding it
    (empty when the store could not tell).
    """

    def __init__(self, message: str, *, name: str = "", holder: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.holder = holder

    def __reduce__(self) -> tuple[Any, ...]:
        return (_name_taken, (str(self), self.name, self.holder))


class NotOwner(StoreError):
    """Raised when a cluster node is asked to run or write a session whose shard it does not
    own (now): another node owns it, nobody does yet, or this node's lease ran out.

    Nothing was written. ``shard`` is the session's shard, ``owner`` the node that owns it
    as far as this node knows (``None``: nobody, or unknown), ``epoch`` its epoch and
    ``address`` the address that owner advertises (``None``: unknown). A caller re-reads the
    shard map (or takes ``address``) and retries with the same idempotency key on the owner.
    Over a wire it travels under the code ``not_owner`` with these fields, and a client
    raises it again with them.
    """

    code: ClassVar[str] = "not_owner"

    def __init__(
        self,
        message: str,
        *,
        shard: int,
        owner: str | None = None,
        epoch: int = 0,
        address: str | None = None,
    ) -> None:
        super().__init__(message)
        self.shard = shard
        self.owner = owner
        self.epoch = epoch
        self.address = address

    def __reduce__(self) -> tuple[Any, ...]:
        return (_not_owner, (str(self), self.shard, self.owner, self.epoch, self.address))


def _decode_error(message: str, record: str, field: str) -> DecodeError:
    return DecodeError(message, record=record, field=field)


def _name_taken(message: str, name: str, holder: str) -> NameTaken:
    return NameTaken(message, name=name, holder=holder)


def _not_owner(
    message: str, shard: int, owner: str | None, epoch: int, address: str | None = None
) -> NotOwner:
    return NotOwner(message, shard=shard, owner=owner, epoch=epoch, address=address)


def _public_name() -> None:
    """Name every error after the package that exports it, so tracebacks read ``troupe.X``.

    Pickle finds a class by ``__module__`` + ``__qualname__``; ``troupe`` re-exports each
    of these names, so instances still pickle and unpickle.
    """
    for cls in (
        TroupeError,
        NetworkError,
        NotFoundError,
        AccessDeniedError,
        RateLimited,
        InboxFull,
        ProtocolError,
        DecodeError,
        IllegalTransition,
        WorkflowGraphError,
        AuthError,
        ConnectionLost,
        MailboxFull,
        MailboxClosed,
        ActorDead,
        RestartIntensityExceeded,
        StoreError,
        IncompatibleStore,
        StoreLocked,
        NameTaken,
        NotOwner,
        IdentityInUse,
    ):
        cls.__module__ = "troupe"


_public_name()
