"""Transport frames — reference §2.11, with a ``request_id`` echoed on every reply.

Every frame has a class-level ``kind``; on the wire it is one JSON object per message with
``"kind"`` as the discriminator (see ``_codec.py``). In-process links pass the objects.
Fixes over the reference: ``AcceptFrame`` and ``ErrorFrame`` echo the ``request_id`` of the
frame they answer, so concurrent posts on one connection can be told apart; cursors and
replay use per-session ``seq`` numbers, not envelope-id order.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeAlias

import attrs

from ._envelope import Envelope
from ._session import SessionMetadata
from ._stream import StreamChunk


@attrs.frozen(kw_only=True)
class HelloFrame:
    """Client → hub: bind this connection to a registered identity after auth.

    ``since`` ``None`` asks for no replay; a dict (possibly empty) asks to be replayed every
    envelope not yet acked, in WAL order, per session after ``max(hub cursor, since[sid])``.
    """

    kind: ClassVar[str] = "hello"
    name: str
    auth_scheme: str = "none"
    auth_claim: dict[str, Any] = attrs.field(factory=dict)
    since: dict[str, int] | None = None
    request_id: str = ""


@attrs.frozen(kw_only=True)
class WelcomeFrame:
    """Hub → client: the handshake succeeded."""

    kind: ClassVar[str] = "welcome"
    endpoint_id: str
    hub_time: str
    agent_id: str = ""
    request_id: str = ""


@attrs.frozen(kw_only=True)
class PingFrame:
    kind: ClassVar[str] = "ping"
    nonce: str = ""


@attrs.frozen(kw_only=True)
class PongFrame:
    kind: ClassVar[str] = "pong"
    nonce: str = ""


@attrs.frozen(kw_only=True)
class SendFrame:
    """Client → hub: post an envelope; answered by an Accept or an Error frame."""

    kind: ClassVar[str] = "send"
    envelope: Envelope
    request_id: str = ""


@attrs.frozen(kw_only=True)
class AcceptFrame:
    """Hub → client: the envelope was accepted (durable) with this id and seq."""

    kind: ClassVar[str] = "accept"
    envelope_id: str
    seq: int = 0
    request_id: str = ""


@attrs.frozen(kw_only=True)
class ErrorFrame:
    """Hub → client: a request failed. ``code`` is one of ``not_found``, ``access_denied``,
    ``protocol_error``, ``auth_failed``, ``inbox_full``, ``bad_frame``, ``store_error``,
    ``not_owner`` or ``error``. ``details``: what the code carries besides its message
    (``not_owner``: ``shard``, ``owner``, ``epoch``, ``address``); None for the others."""

    kind: ClassVar[str] = "error"
    code: str
    message: str
    envelope_id: str | None = None
    request_id: str = ""
    details: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class SessionStatus:
    """A session as its actor last published it: what a client's turn handler needs to
    decide, without asking the hub, whether a delivery gives its agent the floor.

    ``last_seq`` orders statuses (a client keeps the latest it was given). ``state`` is the
    session type's state: the object itself in process, its ``dump_state`` JSON over a
    wire. ``metadata`` may be left out over a wire when the connection already sent the
    same metadata for the session (the client keeps the last one it was given).
    """

    metadata: SessionMetadata | None = None
    state: Any = None
    last_seq: int = 0


@attrs.frozen(kw_only=True)
class NotifyFrame:
    """Hub → client: deliver an envelope to one identity on a multi-identity connection.

    ``session``: the session's published status when the envelope was sent (see
    :class:`SessionStatus`). ``fresh``: sent by the dispatch of the envelope's own post,
    not replayed from the WAL, so nobody can have answered it yet.
    """

    kind: ClassVar[str] = "notify"
    envelope: Envelope
    recipient_id: str = ""
    session: SessionStatus | None = None
    fresh: bool = False


@attrs.frozen(kw_only=True)
class ReceiptFrame:
    """Client → hub: the recipient handled (``ack``) or failed (``nack``) an envelope."""

    kind: ClassVar[str] = "receipt"
    envelope_id: str = ""
    status: str = "ack"
    recipient_id: str = ""
    session_id: str = ""
    seq: int = 0
    reason: str = ""


@attrs.frozen(kw_only=True)
class RequestFrame:
    """Client → hub: a control-plane call (``op`` names a hub method).

    ``traceparent``: the caller's W3C trace context when tracing is on (see
    ``troupe.tracing``); left out of the JSON when empty.
    """

    kind: ClassVar[str] = "request"
    request_id: str
    op: str
    params: dict[str, Any] = attrs.field(factory=dict)
    traceparent: str = ""


@attrs.frozen(kw_only=True)
class ResponseFrame:
    """Hub → client: the answer to the RequestFrame with the same ``request_id``."""

    kind: ClassVar[str] = "response"
    request_id: str
    ok: bool = True
    result: Any = None
    error_code: str = ""
    error_message: str = ""
    #: What ``error_code`` carries besides its message, as ``ErrorFrame.details``.
    error_details: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class ChunkFrame:
    """Both ways: a streamed chunk (best effort, unanswered, never stored).

    Client → hub: ``recipient_id`` is empty and the chunk's sender must be bound to the
    connection. Hub → client: the chunk for ``recipient_id``, one of its identities.
    """

    kind: ClassVar[str] = "chunk"
    chunk: StreamChunk
    recipient_id: str = ""


@attrs.frozen(kw_only=True)
class InvalidFrame:
    """Not a wire frame: what a transport hands the hub for a message it could not decode.

    The hub answers it with an ``ErrorFrame(code="bad_frame")`` and keeps serving.
    """

    kind: ClassVar[str] = "invalid"
    reason: str
    request_id: str = ""


Frame: TypeAlias = (
    HelloFrame
    | WelcomeFrame
    | PingFrame
    | PongFrame
    | SendFrame
    | AcceptFrame
    | ErrorFrame
    | NotifyFrame
    | ReceiptFrame
    | RequestFrame
    | ResponseFrame
    | ChunkFrame
    | InvalidFrame
)

FRAME_TYPES: tuple[type[Any], ...] = (
    HelloFrame,
    WelcomeFrame,
    PingFrame,
    PongFrame,
    SendFrame,
    AcceptFrame,
    ErrorFrame,
    NotifyFrame,
    ReceiptFrame,
    RequestFrame,
    ResponseFrame,
    ChunkFrame,
)
