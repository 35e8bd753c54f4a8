"""HubClient: one connection to a hub, serving any number of identities (the seed's API).

In process (``HubClient(LocalLink(hub))``) control calls go straight to the ``Hub`` and only
deliveries and receipts travel over the link; the client's receive loop runs in the hub's
nursery, so the client needs no nursery of its own and ends with the hub at the latest (its
identities are then disconnected: their waiters get ``Disconnected``); ``close()`` (the end
of ``async with``) waits for that loop and its turns to end.

Over a network (``async with HubClient(WsLink(url)) as hc:``) control calls are RPCs
correlated by request id; the client owns a nursery (hence the ``async with``), reconnects
with exponential backoff and jitter when the connection drops (bounded by
``reconnect_within`` seconds), re-binds its identities and is replayed what they had not
acked.

Deliveries are handled per (identity, session) in WAL order, by a task that exists while
that session has deliveries waiting; different sessions are handled concurrently. After an
envelope is handled the hub gets a receipt (``ack``, or ``nack`` if the handler raised), which
advances that identity's cursor: on a reconnect the hub replays what was not acked, and the
client drops what it already handled, so a handler never sees a duplicate.

This module holds the client side of a hub connection as one concept: ``HubClient`` and
what it serves, the identities (``Identity``, ``AgentClient``, ``HumanClient``), their
``Channel`` handles and ``Turn`` s, the streamed chunks' router and the delivery router.
They refer to each other in both directions, so they live in one module rather than in
files that import each other.
"""

from __future__ import annotations

import contextvars
import logging
import math
import random
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self, TypeVar

import attrs
import trio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from .. import _tracing
from .._errors import (
    ConnectionLost,
    DecodeError,
    HandshakeFailed,
    IdentityInUse,
    MailboxClosed,
    NetworkError,
    NotFoundError,
    ProtocolError,
    StoreError,
)
from .._log import USER_CODE
from .._tracing import turn_span
from ..api import (
    Accepted,
    CanSend,
    FindAgentId,
    GetAgent,
    GetResume,
    GetRule,
    HubApi,
    HubCalls,
    LocalHub,
    PendingTurn,
    PendingTurnsFor,
    PostEnvelope,
    ReadWal,
    Register,
    Request,
    Unregister,
)
from ..mailbox import Mailbox
from ..model import (
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_CHANNEL_INVITE_REJECT,
    EV_TEXT,
    ChunkFrame,
    Envelope,
    ErrorFrame,
    Frame,
    InvalidFrame,
    NotifyFrame,
    Passport,
    ReceiptFrame,
    ResponseFrame,
    Resume,
    Rule,
    SessionMetadata,
    SessionState,
    SessionStatus,
    StreamChunk,
    WelcomeFrame,
    is_protocol_event,
    is_substantive,
)
from ..session_types import AnySessionType, HistoryItem, ViewPolicy, builtin_types
from ..session_types._views import PolicyFold, ViewFold, start_view
from ..transport import LocalLink, LocalLinkClient, WsLink, WsLinkClient
from ._inbox import ENDED_KEPT, ENDINGS, Disconnected, Inboxes, Predicate, seed_timeout, wait_in
from ._remote import RemoteHub

if TYPE_CHECKING:
    from ..api import LocalHub


# -- Channel: a participant's handle on one session (the seed's word for it). ------------------

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


# -- Streaming on the client: sending a reply as chunks, and handing received chunks on. -------
#
# Sending: a :class:`ChunkStream` numbers the chunks of one stream and sends each to the hub
# (in process a direct call, over a network a ``ChunkFrame``); the final envelope, posted as
# usual, carries the stream's id (``Envelope.stream_id``). In a turn, ``await
# turn.stream(text)`` does this and the default turn handler stamps the reply.
#
# Receiving: chunks for an identity wait in a queue of at most ``CLIENT_CHUNK_BUFFER``
# (beyond that they are dropped and counted); one task per identity hands them, in order, to
# ``receive_chunk``, which runs the identity's chunk callbacks. Chunks are not acked or
# replayed, and may reach a callback after the final envelope reached the envelope callbacks
# (the two travel on different queues): the final envelope is the truth.

log = logging.getLogger("troupe.client")

ChunkCallback = Callable[[StreamChunk], Awaitable[None]]

#: Chunks that may wait per identity on the client before they are dropped.
CLIENT_CHUNK_BUFFER: Final = 256


class ChunkStream:
    """One stream of chunks from one identity into one session.

    Get one from :meth:`AgentClient.new_stream` / :meth:`HumanClient.new_stream`, or use
    ``turn.stream(text)`` in ``respond``. Post the final envelope with
    ``stream_id=stream.stream_id``.
    """

    def __init__(
        self,
        identity: Identity,
        session_id: str,
        *,
        audience: Sequence[str] | None = None,
        parent_envelope_id: str = "",
        checked: bool = False,
    ) -> None:
        self._identity = identity
        self._session_id = session_id
        self._audience = tuple(audience) if audience is not None else None
        self._parent = parent_envelope_id
        self._checked = checked
        self._next = 0
        self.stream_id = uuid.uuid4().hex

    @property
    def sent(self) -> int:
        """How many chunks were sent (the next chunk's index)."""
        return self._next

    async def send(self, text: str) -> None:
        """Send ``text`` as the stream's next chunk (best effort; an empty text is skipped).

        Before the first chunk the hub is asked whether this identity may post in the
        session now; each chunk is checked again by the hub, which drops (and counts) one
        that fails.

        Raises:
          ProtocolError: this identity may not post in the session now.
          TypeError: ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(f"a chunk is text, got {type(text).__name__}")
        identity = self._identity
        identity._check_connected()
        hc = identity.hub_client
        if not self._checked:
            if not await hc.acan_send(self._session_id, identity.agent_id):
                raise ProtocolError(
                    f"{identity._who()} may not post in session {self._session_id} now, "
                    "so it may not stream there"
                )
            self._checked = True
        if not text:
            await trio.lowlevel.checkpoint()
            return
        chunk = StreamChunk(
            session_id=self._session_id,
            sender_id=identity.agent_id,
            stream_id=self.stream_id,
            index=self._next,
            text=text,
            parent_envelope_id=self._parent,
            audience=self._audience,
        )
        self._next += 1
        await hc.stream_chunk(chunk)


class ChunkRouter:
    """The receiving side: per identity, a bounded queue drained by one task."""

    def __init__(self, clients: dict[str, Identity], router: Router) -> None:
        self._clients = clients
        self._router = router
        self._queues: dict[str, deque[StreamChunk]] = {}
        #: Chunks dropped because an identity's queue was full (or it is unknown here).
        self.dropped = 0

    def route(self, chunk: StreamChunk, recipient_id: str) -> None:
        nursery = self._router.nursery
        if recipient_id not in self._clients or nursery is None:
            self.dropped += 1
            return
        queue = self._queues.get(recipient_id)
        if queue is None:
            queue = self._queues[recipient_id] = deque()
            nursery.start_soon(self._drain, recipient_id, queue)
        if len(queue) >= CLIENT_CHUNK_BUFFER:
            self.dropped += 1
            return
        queue.append(chunk)

    async def _drain(self, recipient_id: str, queue: deque[StreamChunk]) -> None:
        try:
            while queue:
                chunk = queue.popleft()
                identity = self._clients.get(recipient_id)
                if identity is None or identity.disconnected:
                    continue
                try:
                    await identity.receive_chunk(
                        chunk,
                        channel_id=chunk.session_id,
                        parent_envelope_id=chunk.parent_envelope_id,
                    )
                except Exception:
                    log.exception("%s: receive_chunk failed", identity)
        finally:
            del self._queues[recipient_id]


async def run_chunk_callbacks(
    identity: Identity, callbacks: list[ChunkCallback], chunk: StreamChunk
) -> None:
    """Call each callback in order; one that raises is logged and the others still run."""
    for callback in list(callbacks):
        try:
            await callback(chunk)
        except Exception:
            log.exception(
                "chunk callback raised: %s session=%s stream=%s",
                identity,
                chunk.session_id,
                chunk.stream_id,
            )


# -- What AgentClient and HumanClient share: identity, outbound posts, inboxes, waits. ---------


class Identity:
    """One registered identity served by a HubClient connection."""

    #: Whether an invite to this identity is acked as it arrives (else it answers itself).
    _auto_ack_invites: bool

    def __init__(
        self, *, passport: Passport, resume: Resume, rule: Rule, hub_client: HubClient
    ) -> None:
        assert passport.agent_id is not None
        self._passport = passport
        self._resume = resume
        self._rule = rule
        self._hub_client = hub_client
        self._disconnected = False
        self._inboxes = Inboxes(self._who())
        self._chunk_callbacks: list[ChunkCallback] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._passport.name} {self.agent_id}>"

    @property
    def agent_id(self) -> str:
        assert self._passport.agent_id is not None
        return self._passport.agent_id

    @property
    def passport(self) -> Passport:
        return self._passport

    @property
    def resume(self) -> Resume:
        return self._resume

    @property
    def rule(self) -> Rule:
        return self._rule

    @property
    def hub_client(self) -> HubClient:
        return self._hub_client

    @property
    def hub(self) -> LocalHub | None:
        """The in-process hub (None over a remote link)."""
        return self._hub_client.hub

    @property
    def disconnected(self) -> bool:
        return self._disconnected

    def _who(self) -> str:
        """This identity in error messages: ``HumanClient 'bea' (<agent id>)``."""
        return f"{type(self).__name__} {self._passport.name!r} ({self.agent_id})"

    def _check_connected(self) -> None:
        if self._disconnected:
            raise Disconnected(f"{self._who()} is disconnected")

    async def receive(self, envelope: Envelope) -> None:
        """Handle one delivered envelope (the HubClient acks it afterwards)."""
        raise NotImplementedError

    def _holds(self, envelope: Envelope) -> bool:
        """Whether ``envelope``, still being handled, is already taken in for good.

        Closing the client acks such a delivery rather than leave it to be replayed. An
        agent holds nothing before its turn ends (a turn cut short is owed again).
        """
        return False

    # -- outbound ----------------------------------------------------------------------------

    async def post_envelope(self, envelope: Envelope) -> str:
        """Post any envelope; an empty ``sender_id`` is filled with this identity's id."""
        self._check_connected()
        if envelope.sender_id == "":
            envelope = attrs.evolve(envelope, sender_id=self.agent_id)
        accepted = await self._hub_client.post(envelope)
        self._posted(envelope, accepted)
        return accepted.envelope_id

    def _posted(self, envelope: Envelope, accepted: Accepted) -> None:
        """What this identity posted, as the hub accepted it (an agent folds it into its view)."""

    async def send_envelope(self, envelope: Envelope) -> str:
        """Alias of :meth:`post_envelope` (what Channel calls)."""
        return await self.post_envelope(envelope)

    async def send(
        self,
        channel_id: str,
        text: str,
        *,
        audience: Sequence[str] | None = None,
        causation_id: str | None = None,
    ) -> str:
        """Post an ``EV_TEXT`` envelope into ``channel_id`` (a session id); return its id."""
        return await self.post_envelope(
            Envelope(
                session_id=channel_id,
                sender_id=self.agent_id,
                event_type=EV_TEXT,
                event_data={"text": text},
                audience=tuple(audience) if audience is not None else None,
                causation_id=causation_id,
            )
        )

    async def open(
        self,
        *,
        type: str,  # noqa: A002 - the seed's parameter name
        target: str | Sequence[str],
        ttl: str | int | None = None,
        knobs: dict[str, object] | None = None,
        intent: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Channel:
        """Open a session of ``type`` with ``target`` (names or ids) and return its Channel.

        Returns once every invitee has acked (the session is ACTIVE).
        """
        self._check_connected()
        targets = [target] if isinstance(target, str) else list(target)
        ids = []
        for name_or_id in targets:
            ids.append((await self._hub_client.get_agent(name_or_id)).agent_id or name_or_id)
        metadata = await self._hub_client.create_session(
            creator_id=self.agent_id,
            manifest_type=type,
            participants=ids,
            ttl=ttl,
            knobs=knobs,
            intent=intent,
            labels=labels,
        )
        self._inboxes.ensure(metadata.session_id)
        return Channel(metadata, self)

    async def close_channel(self, channel_id: str, reason: str = "") -> SessionMetadata:
        self._check_connected()
        return await self._hub_client.close_session(channel_id, reason=reason)

    async def _ack_if_invited(self, envelope: Envelope) -> None:
        """Ack an invite to this identity as it arrives, unless it answers invites itself."""
        if (
            self._auto_ack_invites
            and envelope.event_type == EV_CHANNEL_INVITE
            and envelope.sender_id != self.agent_id
        ):
            try:
                await self.accept_invite(envelope)
            except NetworkError as exc:
                log.warning("%s could not ack invite %s: %s", self, envelope.envelope_id, exc)

    async def accept_invite(self, invite: Envelope) -> str:
        """Ack an invite (for clients that do not ack automatically)."""
        return await self._answer_invite(invite, EV_CHANNEL_INVITE_ACK, {})

    async def reject_invite(self, invite: Envelope, reason: str = "") -> str:
        """Refuse an invite: the session is closed with reason ``invite_rejected``."""
        return await self._answer_invite(invite, EV_CHANNEL_INVITE_REJECT, {"reason": reason})

    async def _answer_invite(self, invite: Envelope, kind: str, data: dict[str, Any]) -> str:
        return await self.post_envelope(
            Envelope(
                session_id=invite.session_id,
                sender_id=self.agent_id,
                event_type=kind,
                event_data={"session_id": invite.session_id, **data},
                causation_id=invite.envelope_id,
            )
        )

    # -- streaming ---------------------------------------------------------------------------

    def new_stream(
        self,
        channel_id: str,
        *,
        audience: Sequence[str] | None = None,
        parent_envelope_id: str = "",
    ) -> ChunkStream:
        """A stream of chunks into ``channel_id`` (a session id) from this identity.

        Send chunks with ``await stream.send(text)``, then post the final envelope with
        ``stream_id=stream.stream_id`` (and the same ``audience``): the chunks reach only
        the participants that envelope would reach.
        """
        return ChunkStream(
            self, channel_id, audience=audience, parent_envelope_id=parent_envelope_id
        )

    def on_chunk(self, callback: ChunkCallback) -> None:
        """Call ``callback`` for every streamed chunk received, in registration order.

        Chunks are best effort (see ``StreamChunk.index`` for gaps); an exception in a
        callback is logged and does not stop the others.
        """
        self._chunk_callbacks.append(callback)

    def remove_chunk_callback(self, callback: ChunkCallback) -> None:
        """Detach a chunk callback; no-op if it is not attached."""
        if callback in self._chunk_callbacks:
            self._chunk_callbacks.remove(callback)

    async def receive_chunk(
        self, delta: object, *, channel_id: str, parent_envelope_id: str
    ) -> None:
        """Hub delivery of a streamed chunk (``delta`` is a :class:`StreamChunk`).

        Runs the :meth:`on_chunk` callbacks. Override it to handle chunks otherwise (the
        seed's signature).
        """
        if self._disconnected or not isinstance(delta, StreamChunk):
            await trio.lowlevel.checkpoint()
            return
        await run_chunk_callbacks(self, self._chunk_callbacks, delta)

    # -- waiting -----------------------------------------------------------------------------

    def ensure_channel_inbox(self, channel_id: str) -> Mailbox[Envelope]:
        """The session's inbox, created if needed (create it before sending, then wait)."""
        return self._inboxes.ensure(channel_id)

    def discard_channel_inbox(self, channel_id: str) -> None:
        self._inboxes.discard(channel_id)

    async def wait_for_channel_event(
        self,
        *,
        channel_id: str,
        predicate: Predicate,
        timeout: float = 300.0,  # noqa: ASYNC109 - the seed's parameter
    ) -> Envelope:
        """Wait for an envelope of ``channel_id`` that ``predicate`` accepts.

        Takes only the envelope that matched: others stay for other waiters.

        Raises:
          TimeoutError: nothing matched within ``timeout`` seconds (the message names the
            last turn in this session that failed in this client's process, if any).
          Disconnected: this identity is (or becomes) disconnected (a RuntimeError).
          ProtocolError: the session ended without a match.
        """
        self._check_connected()
        try:
            with seed_timeout(timeout, f"session {channel_id}"):
                return await self._inboxes.wait(channel_id, predicate)
        except TimeoutError as exc:
            # A wait that timed out because an agent's respond() raised should say so.
            failure = self._hub_client.turn_failure(channel_id)
            if failure is None:
                raise
            raise TimeoutError(f"{exc}; {failure}") from None

    # -- lifecycle ---------------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Stop handling deliveries and wake every waiter. Idempotent."""
        await trio.lowlevel.checkpoint()
        self._lose_connection()

    def _lose_connection(self) -> None:
        """:meth:`disconnect`, without a checkpoint (for a loop that is ending). Idempotent."""
        if self._disconnected:
            return
        self._disconnected = True
        self._inboxes.close_all()
        self._on_disconnect()

    def _on_disconnect(self) -> None:
        """Subclasses wake their own waiters."""


# -- Routing deliveries to identities: per (identity, session) in WAL order, acked after. ------
#
# Each (identity, session) with deliveries waiting has one task draining them in order;
# different sessions are handled concurrently. After an envelope is handled the hub gets a
# receipt (``ack``, or ``nack`` if the handler raised), which advances that identity's cursor:
# on a reconnect the hub replays what was not acked, and the router drops what it already
# handled (re-acking it), so a handler never sees a duplicate. An envelope that was nacked is
# handled again when it is replayed.


SendFrame = Callable[[Frame], Awaitable[None]]


class Router:
    """The delivery side of one HubClient."""

    def __init__(
        self,
        clients: dict[str, Identity],
        send: SendFrame,
        send_nowait: Callable[[Frame], bool] | None = None,
    ) -> None:
        self._clients = clients
        self._send = send
        #: Sends a frame at once if it can (whether it did): in process, with room.
        self._send_nowait = send_nowait
        self.nursery: trio.Nursery | None = None
        #: (identity, session) -> highest seq routed to a handler / fully handled.
        self._routed: dict[tuple[str, str], int] = {}
        self._handled: dict[tuple[str, str], int] = {}
        #: Per session, how many identities hold a mark in ``_routed`` (have deliveries of it
        #: and have not handled its end): the session's status is kept until none does.
        self._live: dict[str, int] = {}
        #: Sessions that ended, with the last seq handled (the oldest forgotten first).
        self._ended: OrderedDict[tuple[str, str], int] = OrderedDict()
        #: (identity, session, seq) handled with a nack: a replay of it is handled again.
        self._nacked: set[tuple[str, str, int]] = set()
        #: Deliveries waiting per (identity, session); each has one task draining it.
        self._queues: dict[tuple[str, str], deque[Envelope]] = {}
        #: The delivery each drain has handed to its identity and not yet receipted, and
        #: those of them handled with an ack (their receipt is being sent): what
        #: :meth:`flush` acks when the client closes.
        self._inflight: dict[tuple[str, str], Envelope] = {}
        self._settled: set[tuple[str, str]] = set()
        #: (identity, session, seq) queued or being handled that the hub sent fresh (by the
        #: dispatch of its post, not from the WAL): nobody can have answered them yet.
        self.fresh: set[tuple[str, str, int]] = set()
        #: Called with a session's id once the last of its identities on this client that had
        #: deliveries of it handled the session's end (another may still need its status).
        self.ended: Callable[[str], None] | None = None

    def marks(self) -> int:
        """How many live (identity, session) marks are kept (ended sessions not counted)."""
        return len(self._routed)

    def route(self, envelope: Envelope, recipient_id: str, *, fresh: bool = False) -> None:
        assert self.nursery is not None
        identity = self._clients.get(recipient_id)
        if identity is None:
            self.nursery.start_soon(
                self._receipt, envelope, recipient_id, "nack", "no such identity on this client"
            )
            return
        key = (recipient_id, envelope.session_id)
        retry = (recipient_id, envelope.session_id, envelope.seq)
        ended = self._ended.get(key)
        if ended is not None and envelope.seq <= ended:
            # A session that ended here, replayed (its last receipts were lost): re-ack.
            self.nursery.start_soon(self._receipt, envelope, recipient_id, "ack", "")
            return
        routed = self._routed.get(key)
        if retry in self._nacked:
            self._nacked.discard(retry)  # it failed before: handle it again
        elif routed is not None and envelope.seq <= routed:
            if envelope.seq <= self._handled.get(key, 0):
                # Handled before (its receipt was lost): ack again, do not handle twice.
                self.nursery.start_soon(self._receipt, envelope, recipient_id, "ack", "")
            return
        if routed is None:
            self._mark(key, envelope.seq)
        elif envelope.seq > routed:
            self._routed[key] = envelope.seq
        if fresh:
            self.fresh.add(retry)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self.nursery.start_soon(self._drain, key, queue)
        queue.append(envelope)

    async def _drain(self, key: tuple[str, str], queue: deque[Envelope]) -> None:
        """Hand the session's deliveries, in order, to whoever holds the identity now.

        The handle is looked up for each envelope: an identity attached again on this client
        takes over what is queued. With no connected handle left, the rest is not acked (the
        hub replays it) and its marks are taken back, so that a replay routes it again.
        """
        agent_id, session_id = key
        try:
            while queue:
                envelope = queue[0]
                identity = self._clients.get(agent_id)
                if identity is None or identity.disconnected:
                    break
                status, reason = "ack", ""
                self._inflight[key] = envelope
                try:
                    await identity.receive(envelope)
                except Exception as exc:
                    log.exception("%s failed to handle %s", identity, envelope.envelope_id)
                    status, reason = "nack", f"{type(exc).__name__}: {exc}"
                    self._nacked.add((agent_id, session_id, envelope.seq))
                self.fresh.discard((agent_id, session_id, envelope.seq))
                queue.popleft()
                self._handled[key] = max(envelope.seq, self._handled.get(key, 0))
                if envelope.event_type in ENDINGS and status == "ack":
                    self._forget_session(key)
                if status == "ack":
                    self._settled.add(key)
                if not self._receipt_nowait(envelope, agent_id, status, reason):
                    await self._receipt(envelope, agent_id, status, reason)
                elif queue:
                    # One checkpoint per delivery of a burst (the last one goes without: the
                    # drain ends right after, which lets the others run). The receipt went
                    # without waiting, straight to the hub where it can (see LocalLink).
                    await trio.lowlevel.checkpoint()
                self._inflight.pop(key, None)
                self._settled.discard(key)
        finally:
            self._inflight.pop(key, None)
            self._settled.discard(key)
            if queue:
                for left in queue:
                    self.fresh.discard((agent_id, session_id, left.seq))
                queue.clear()
                self._mark(key, self._handled.get(key, 0))
            del self._queues[key]

    async def flush(self) -> None:
        """Ack the deliveries handed over whose receipt is not sent yet (``close()``).

        Those handled already (their drain is sending the receipt), and those an identity
        holds (a person's: queued for them to take) although its handling (a callback) is
        still running. Without this a client closed right after taking an envelope lost
        that receipt, and the hub replayed the envelope to the next connection. A receipt
        sent twice is ignored by the hub.
        """
        for key, envelope in list(self._inflight.items()):
            identity = self._clients.get(key[0])
            if key in self._settled or (identity is not None and identity._holds(envelope)):
                await self._receipt(envelope, key[0], "ack", "")

    def _mark(self, key: tuple[str, str], seq: int) -> None:
        """Set the mark of ``key`` (identity, session), counting the session's identities."""
        if key not in self._routed:
            session_id = key[1]
            self._live[session_id] = self._live.get(session_id, 0) + 1
        self._routed[key] = seq

    def _forget_session(self, key: tuple[str, str]) -> None:
        """A session ended: keep one number for it (bounded), not its live marks."""
        session_id = key[1]
        if self._routed.pop(key, None) is not None:
            left = self._live[session_id] - 1
            if left:
                self._live[session_id] = left
            else:
                del self._live[session_id]
        if session_id not in self._live and self.ended is not None:
            self.ended(session_id)
        self._ended[key] = self._handled.pop(key, 0)
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    async def _receipt(
        self, envelope: Envelope, recipient_id: str, status: str, reason: str
    ) -> None:
        await self._send(_receipt_frame(envelope, recipient_id, status, reason))

    def _receipt_nowait(
        self, envelope: Envelope, recipient_id: str, status: str, reason: str
    ) -> bool:
        """Send the receipt now if the connection takes it without waiting (whether it did)."""
        if self._send_nowait is None:
            return False
        return self._send_nowait(_receipt_frame(envelope, recipient_id, status, reason))


def _receipt_frame(envelope: Envelope, recipient_id: str, status: str, reason: str) -> ReceiptFrame:
    return ReceiptFrame(
        envelope_id=envelope.envelope_id,
        status=status,
        recipient_id=recipient_id,
        session_id=envelope.session_id,
        seq=envelope.seq,
        reason=reason,
    )


# -- What an agent is given on its turn, and what it may answer. -------------------------------


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


# -- AgentClient: a registered agent plus the default turn handler that drives it. -------------


Observer = Callable[[Envelope], Awaitable[None]]
#: How many envelopes one WAL read of a turn's history asks for at most (a session's first turn
#: in this process folds the WAL before its trigger page by page, never all of it at once).
WAL_PAGE = 1000
#: How many of its own posts an agent's view keeps ahead of what it folded (posts after a
#: gap it has not seen yet); beyond that the next turn reads them from the WAL.
OWN_AHEAD = 64


@attrs.define(slots=True)
class SessionView:
    """One session's view for one agent, folded up to ``seq``: every envelope of the WAL
    with a seq up to ``seq``, and none after it, is folded into ``fold``."""

    policy: ViewPolicy
    fold: ViewFold | PolicyFold
    seq: int = 0
    #: This agent's own posts accepted after ``seq`` (by seq), folded once the view reaches
    #: them: the hub does not deliver an agent's posts back to it.
    own: dict[int, Envelope] = attrs.field(factory=dict)
    #: The session's metadata ``policy`` was chosen for (a turn with the same metadata
    #: object keeps the policy without asking the session type again).
    metadata: SessionMetadata | None = None

    def advance(self, envelope: Envelope) -> None:
        """Fold ``envelope`` (the next seq), then the own posts that follow it."""
        self.fold.fold(envelope)
        self.seq = envelope.seq
        own = self.own
        while own:
            mine = own.pop(self.seq + 1, None)
            if mine is None:
                for seq in [seq for seq in own if seq <= self.seq]:
                    del own[seq]
                return
            self.fold.fold(mine)
            self.seq = mine.seq


#: What handles an agent's deliveries: ``await handler(envelope, client)``. The default is
#: :meth:`AgentClient.handle`; a replacement may call it for what it does not handle itself.
Handler = Callable[[Envelope, "AgentClient"], Awaitable[None]]


def _describe(exc: BaseException) -> str:
    """``RuntimeError: my bug``, the way a traceback's last line names an exception."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class AgentClient(Identity):
    """What ``HubClient.register`` returns: one agent on one connection.

    Deliveries are acked to the hub once handled. Invites are acked at once unless
    ``auto_ack_invites`` is False (then call :meth:`accept_invite` / :meth:`reject_invite`).
    Then the handler runs: ``handler`` if one was given (see :meth:`set_handler`), else the
    default turn handler, :meth:`handle`: on a substantive envelope
    that gives this agent the floor (the session type's rules, ``can_send``; where the
    session type names the envelope that gave it, only that one), the agent's
    ``respond(turn)`` runs and its answer is posted with ``causation_id`` = the trigger.
    ``None`` or ``""`` is a silent round. A trigger already answered is not answered again (also
    after a reconnect). A ``respond`` that raises is reported (audit ``turn_failed``) and
    nothing is posted for it.

    ``async with`` returns the client and unregisters the agent on exit (as the
    reference's does); the HubClient's own ``close()`` leaves it registered.
    """

    def __init__(
        self,
        *,
        agent: Agent,
        passport: Passport,
        resume: Resume,
        rule: Rule,
        hub_client: HubClient,
        handler: Handler | None = None,
        auto_ack_invites: bool = True,
    ) -> None:
        super().__init__(passport=passport, resume=resume, rule=rule, hub_client=hub_client)
        self._agent = agent
        self._handler = handler
        self._auto_ack_invites = auto_ack_invites
        self._observers: list[Observer] = []
        #: Per session: this agent's view, folded as envelopes arrive (for turn history).
        self._views: dict[str, SessionView] = {}

    async def __aenter__(self) -> Self:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.unregister()

    @property
    def agent(self) -> Agent:
        return self._agent

    @property
    def handler(self) -> Handler | None:
        """The handler that replaces the default turn handler (None: the default)."""
        return self._handler

    def set_handler(self, handler: Handler | None) -> None:
        """Handle deliveries with ``await handler(envelope, client)`` instead of the default
        turn handler (:meth:`handle`, which it may call); ``None`` restores the default.

        Invites are still acked before it runs unless the agent was registered with
        ``auto_ack_invites=False``.
        """
        self._handler = handler

    def on_envelope(self, callback: Observer) -> None:
        """Also call ``callback`` for every delivery, before the turn handler."""
        self._observers.append(callback)

    async def receive(self, envelope: Envelope) -> None:
        if self._disconnected:
            await trio.lowlevel.checkpoint()
            return
        if envelope.seq == 1 and envelope.session_id not in self._views:
            self._start_view(envelope.session_id)  # nothing before it: no WAL to read
        self._inboxes.put(envelope)
        for observer in self._observers:
            await observer(envelope)
        await self._ack_if_invited(envelope)
        if self._handler is not None:
            await self._handler(envelope, self)
        else:
            await self.handle(envelope)
        if envelope.event_type in ENDINGS:
            self._views.pop(envelope.session_id, None)
        else:
            view = self._views.get(envelope.session_id)
            if view is not None and envelope.seq == view.seq + 1:
                view.advance(envelope)

    def _start_view(self, session_id: str) -> None:
        """An empty view of a session whose status a delivery brought (else none yet)."""
        status = self._hub_client.session_status(session_id)
        if status is None or status.metadata is None:
            return
        try:
            stype = self._hub_client.session_type_for(status.metadata)
        except NotFoundError:
            return
        policy = stype.default_view_policy(status.metadata, self.agent_id)
        self._views[session_id] = SessionView(
            policy, start_view(policy, self.agent_id, stype.render)
        )

    def _posted(self, envelope: Envelope, accepted: Accepted) -> None:
        view = self._views.get(envelope.session_id)
        if view is None or accepted.duplicate or accepted.seq <= view.seq:
            return
        if not isinstance(view.fold, ViewFold):
            return  # a policy's own projection may read what the hub stamps: the WAL has it
        mine = envelope.stamped(accepted.envelope_id, accepted.seq, envelope.created_at)
        if accepted.seq == view.seq + 1:
            view.advance(mine)
        elif len(view.own) < OWN_AHEAD:
            view.own[accepted.seq] = mine

    # -- the default turn handler ------------------------------------------------------------

    async def handle(self, envelope: Envelope) -> None:
        """The default turn handler (see the class docstring); invites are acked before it."""
        me = self.agent_id
        kind = envelope.event_type
        if is_protocol_event(kind) or envelope.sender_id == me:
            await trio.lowlevel.checkpoint()
            return
        hc = self._hub_client
        sid = envelope.session_id
        status = hc.session_status(sid)
        known = status.metadata if status is not None else None
        if status is not None and known is not None:
            # What the deliveries brought: the session as its actor published it with the
            # latest of them. A stale status may start a turn the hub then refuses (its
            # post is checked there); it never lets through what the hub would refuse.
            metadata = known
            stype = hc.session_type_for(metadata)
            if not hc.has_floor(status, me, envelope):
                return
            text = stype.render(envelope)
            if text is None:
                return
        else:
            metadata = await hc.get_session(sid)
            if metadata.state is not SessionState.ACTIVE or not await hc.acan_send(sid, me):
                return
            stype = hc.session_type_for(metadata)
            text = stype.render(envelope)
            if text is None:
                return
            owed = await hc.pending_turn(sid, me)
            if owed is not None and owed.triggering_envelope_id not in (
                None,
                envelope.envelope_id,
            ):
                return  # a stale trigger (a replay): a later envelope gave me the floor
        if (me, sid, envelope.seq) not in hc.fresh_deliveries and (
            await hc.find_envelope_by_causation(
                sid, sender_id=me, causation_id=envelope.envelope_id
            )
        ):
            return  # answered before (a redelivery after a reconnect)
        history = await self._history(metadata, stype, envelope)
        turn = Turn(text=text, envelope=envelope, session=metadata, history=history, client=self)
        token = HANDLING_DEPTH.set(envelope.depth)
        try:
            with turn_span(envelope, me):
                reply = await self._agent.respond(turn)
                answer = self._reply(metadata, stype, envelope, reply)
                if answer is not None and turn.stream_id is not None:
                    answer = attrs.evolve(answer, stream_id=turn.stream_id)  # ends the stream
                if answer is not None:
                    accepted = await hc.post(answer)
                    self._posted(answer, accepted)
        except Exception as exc:
            USER_CODE.error(
                "agent %r failed its turn on %s in session %s",
                self._passport.name,
                envelope.envelope_id,
                sid,
                exc_info=exc,
            )
            hc.note_turn_failure(
                sid, f"agent {self._passport.name!r} failed its turn: {_describe(exc)}"
            )
            await hc.report_turn_failure(
                session_id=sid, agent_id=me, envelope_id=envelope.envelope_id, exc=exc
            )
        finally:
            HANDLING_DEPTH.reset(token)

    def _reply(
        self, metadata: SessionMetadata, stype: AnySessionType, trigger: Envelope, reply: Any
    ) -> Envelope | None:
        if isinstance(reply, str) and not reply:
            return None  # an empty body is a silent round (as in the reference)
        builder = getattr(stype, "build_reply", None)
        if builder is not None:
            built: Envelope | None = builder(metadata, self.agent_id, reply, trigger)
            return built
        if reply is None:
            return None
        if not isinstance(reply, str):
            raise TypeError(
                f"respond() returned {type(reply).__name__}; a {stype.name} session expects "
                "str or None"
            )
        return Envelope(
            session_id=trigger.session_id,
            sender_id=self.agent_id,
            event_type=EV_TEXT,
            event_data={"text": reply},
            causation_id=trigger.envelope_id,
            depth=trigger.depth,
        )

    async def _history(
        self, metadata: SessionMetadata, stype: AnySessionType, trigger: Envelope
    ) -> Callable[[], list[HistoryItem]]:
        """The session type's view of the session before ``trigger``, for this agent (built
        when the turn reads it).

        The view is folded as deliveries arrive; what this agent was not delivered (its own
        posts, what its inbound rules held back) is read from the WAL before the turn, only
        the envelopes after the last one folded. The first turn of a session in this
        process folds the WAL before the trigger, a page at a time.
        """
        sid, me, until = trigger.session_id, self.agent_id, trigger.seq - 1
        view = self._views.get(sid)
        if view is not None and view.metadata is metadata:
            policy = view.policy  # (the same metadata: the same policy)
        else:
            policy = stype.default_view_policy(metadata, me)
            if view is None or view.policy != policy:
                view = self._views[sid] = SessionView(policy, start_view(policy, me, stype.render))
            view.metadata = metadata
        if view.seq > until:
            # An older trigger (a turn owed again after later envelopes were folded): fold
            # the WAL before it afresh, leaving the session's view as it is.
            view = SessionView(policy, start_view(policy, me, stype.render))
        await self._fold_wal(sid, view, until)
        if self._hub_client.remote:  # (in process ``name_for`` knows every name)
            await self._hub_client.learn_names(list(view.fold.senders()))
        build, name_for = view.fold.freeze(), self._hub_client.name_for
        return lambda: build(name_for)

    async def _fold_wal(self, session_id: str, view: SessionView, until: int) -> None:
        """Fold the WAL's envelopes after ``view.seq`` up to seq ``until`` into ``view``."""
        while view.seq < until:
            end = min(until, view.seq + WAL_PAGE)
            page = await self._hub_client.read_wal(session_id, since=view.seq, until=end)
            for envelope in page:
                if envelope.seq > view.seq:  # a delivery may have folded it meanwhile
                    view.fold.fold(envelope)
                    view.seq = envelope.seq
            view.seq = max(view.seq, end)

    async def resume_pending_turns(self) -> int:
        """Re-run the turns the hub says this agent owes (after a restart); return how many.

        Each trigger is delivered again, through :meth:`receive` like any delivery: the
        ``on_envelope`` observers and the session's inbox see it, then the turn handler,
        which skips a trigger already answered, so this is safe to repeat.
        """
        count = 0
        for turn in await self._hub_client.pending_turns_for(self.agent_id):
            if turn.triggering_envelope_id is None:
                continue
            wal = await self._hub_client.read_wal(turn.session_id)
            trigger = next((e for e in wal if e.envelope_id == turn.triggering_envelope_id), None)
            if trigger is not None:
                await self.receive(trigger)
                count += 1
        return count

    # -- identity ----------------------------------------------------------------------------

    async def unregister(self) -> None:
        """Unregister this agent from the hub and disconnect it."""
        if self._disconnected:
            await trio.lowlevel.checkpoint()
            return
        await self._hub_client.unregister_agent(self.agent_id)
        await self.disconnect()

    async def set_resume(self, resume: Resume) -> None:
        await self._hub_client.set_resume(self.agent_id, resume)
        self._resume = await self._hub_client.get_resume(self.agent_id)

    async def set_skill(self, skill_md: str | None) -> None:
        await self._hub_client.set_skill(self.agent_id, skill_md)

    async def set_rule(self, rule: Rule) -> None:
        await self._hub_client.set_rule(self.agent_id, rule)
        self._rule = await self._hub_client.get_rule(self.agent_id)


# -- HumanClient: a participant driven by a person (a UI), not by ``respond``. -----------------


EnvelopeCallback = Callable[[Envelope], Awaitable[None]]

#: Envelopes the pull queue keeps for next_envelope()/envelopes() (the oldest are dropped).
PULL_CAPACITY = 1024


class HumanClient(Identity):
    """What ``HubClient.register_human`` returns (the seed's API, on trio).

    Every delivery is acked to the hub after it was queued for pulling and every push
    callback ran. Invites are acked at once unless ``auto_ack_invites`` is False (then call
    :meth:`accept_invite` / :meth:`reject_invite`).

    The pull queue keeps the newest ``PULL_CAPACITY`` envelopes (``drop_oldest``): a UI that
    stops pulling loses the oldest, never blocks the hub. ``next_envelope(predicate=...)``
    takes the first match and leaves the others queued (the seed discarded them; then two
    consumers could lose each other's envelopes).
    """

    def __init__(
        self,
        *,
        passport: Passport,
        resume: Resume,
        rule: Rule,
        hub: LocalHub | None = None,
        hub_client: HubClient,
        auto_ack_invites: bool = True,
    ) -> None:
        # ``hub`` is the seed's parameter; the hub is always ``hub_client``'s (None remote).
        if hub is not None and hub is not hub_client.hub:
            raise ValueError("HumanClient(hub=...) must be the hub its hub_client talks to")
        super().__init__(passport=passport, resume=resume, rule=rule, hub_client=hub_client)
        self._auto_ack_invites = auto_ack_invites
        self._callbacks: list[EnvelopeCallback] = []
        self._pull: Mailbox[Envelope] = Mailbox(PULL_CAPACITY, "drop_oldest", name="pull")
        #: Ids of the deliveries queued for pulling whose callbacks are still running.
        self._held: set[str] = set()

    async def receive(self, envelope: Envelope) -> None:
        """Hub delivery: ack invites (unless disabled), queue, then run push callbacks."""
        if self._disconnected:
            await trio.lowlevel.checkpoint()
            return
        await self._ack_if_invited(envelope)
        self._inboxes.put(envelope)
        self._pull.send_nowait(envelope)
        self._held.add(envelope.envelope_id)
        try:
            for callback in list(self._callbacks):
                try:
                    await callback(envelope)
                except Exception:
                    USER_CODE.exception(
                        "human callback raised: human=%s session=%s event=%s",
                        self._passport.name,
                        envelope.session_id,
                        envelope.event_type,
                    )
        finally:
            self._held.discard(envelope.envelope_id)

    def _holds(self, envelope: Envelope) -> bool:
        """Queued for this person (its callbacks may still run): closing acks it."""
        return envelope.envelope_id in self._held

    def on_envelope(self, callback: EnvelopeCallback) -> None:
        """Call ``callback`` for every delivery, in registration order; errors are logged."""
        self._callbacks.append(callback)

    def remove_envelope_callback(self, callback: EnvelopeCallback) -> None:
        """Detach a callback; no-op if it is not attached."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    async def next_envelope(
        self,
        *,
        predicate: Predicate | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the seed's parameter
    ) -> Envelope:
        """The next delivered envelope (that ``predicate`` accepts).

        Unlike the seed, which discarded the envelopes its predicate rejected on the way,
        this takes only the first match: the others stay queued, in order, for later
        ``next_envelope()`` calls and ``envelopes()`` (so two consumers with different
        predicates cannot lose each other's envelopes). A ``timeout`` of zero or less does
        not wait.

        Raises:
          TimeoutError: nothing matched within ``timeout`` seconds.
          Disconnected: this identity is (or becomes) disconnected (a RuntimeError).
        """
        self._check_connected()
        what = f"the inbox of {self._passport.name!r}"
        with seed_timeout(timeout, what):
            return await wait_in(
                self._pull, predicate, what=what, who=self._who(), disconnected=lambda: True
            )

    async def envelopes(self) -> AsyncIterator[Envelope]:
        """Every delivered envelope, in arrival order, until disconnect."""
        while True:
            try:
                envelope = await self._pull.receive()
            except MailboxClosed:
                return
            yield envelope

    def _on_disconnect(self) -> None:
        self._pull.close()

    async def close_channel(self, channel_id: str, reason: str = "human_closed") -> SessionMetadata:
        """Close a session this human is in (reason ``human_closed`` by default)."""
        return await super().close_channel(channel_id, reason)


# -- HubClient: one connection to a hub, serving any number of identities (the seed's API). ----


#: Sessions whose last failed turn a client remembers for its wait timeouts.
TURN_FAILURES_KEPT = 256

Link = LocalLink | WsLink
R = TypeVar("R")

#: How long (seconds) an in-process ``close()`` waits for the client's loop and the turns
#: in it to end after they were cancelled (a turn in a worker thread cannot be cancelled).
CLOSE_WAIT_S = 5.0


class HubClient(HubCalls):
    """One connection to a hub. A process should hold one per hub it talks to.

    Use it as an async context manager (``close()`` on exit: the connection ends, the
    identities stay registered) or, in process only, call :meth:`close` / :meth:`shutdown`
    yourself.

    Args:
      link: ``LocalLink(hub)`` (in process) or ``WsLink(url)`` (over a network).
      hub: the in-process hub (defaults to ``link.hub`` for a LocalLink).
      reconnect_within: over a network, how long (seconds) to keep trying to reconnect
        a connection that was up before giving up; calls then fail with
        :class:`ConnectionLost`. (The first connection is tried once: a hub that cannot be
        reached at the start fails ``async with`` at once, with the reason.)
      reconnect_seed: seeds the reconnect jitter (a reproducible schedule, for tests);
        ``None`` draws from the system's randomness.
    """

    def __init__(
        self,
        link: Link,
        *,
        hub: LocalHub | None = None,
        reconnect_within: float = 60.0,
        reconnect_seed: int | None = None,
    ) -> None:
        self._link = link
        self._jitter = random.Random(reconnect_seed)
        self._hub: LocalHub | None = hub if hub is not None else getattr(link, "hub", None)
        self._api: HubApi = self._hub if self._hub is not None else RemoteHub()
        self._reconnect_within = reconnect_within
        self._conn: LocalLinkClient | WsLinkClient | None = None
        self._scope: trio.CancelScope | None = None
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        #: In process: the receive loop's task, and an event set once it (and every delivery
        #: task under it) has ended.
        self._loop_task: trio.lowlevel.Task | None = None
        self._loop_done: trio.Event | None = None
        self._clients: dict[str, Identity] = {}
        #: Per session, the last turn that failed in this process (for wait timeouts).
        self._turn_failures: dict[str, str] = {}
        self._router = Router(self._clients, self._send_frame, self._send_frame_nowait)
        self._chunks = ChunkRouter(self._clients, self._router)
        self._closed = False
        #: Why the hub closed this connection for good (an identity was taken over), if it did.
        self._taken_over: str | None = None
        #: Set to make the remote runner look up: the connection ended, or close() was called.
        self._wake = trio.Event()
        self._connecting = trio.Lock()
        self._session_types: dict[tuple[str, int], AnySessionType] = {
            (t.name, t.version): t for t in builtin_types()
        }
        #: Per session, the latest status its deliveries brought (see :meth:`session_status`).
        self._statuses: dict[str, SessionStatus] = {}
        #: Per (session, identity): the probe envelope :meth:`has_floor` validates.
        self._probes: dict[tuple[str, str], Envelope] = {}
        self._router.ended = self._forget_status

    async def __aenter__(self) -> Self:
        if isinstance(self._link, WsLink):
            self._stack = AsyncExitStack()
            self._nursery = await self._stack.enter_async_context(trio.open_nursery())
            self._router.nursery = self._nursery
        connected = False
        try:
            await self._ensure_connected()
            connected = True
        finally:
            if not connected and self._stack is not None:
                # __aexit__ will not run: leave the nursery here, or trio's nursery
                # stack is corrupted when the exception unwinds past it.
                await self._stack.aclose()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.close()
        finally:
            # Also when close() is cancelled: the nursery must be left in this task.
            if self._stack is not None:
                await self._stack.aclose()

    @property
    def hub(self) -> LocalHub | None:
        """The in-process hub, or None over a network."""
        return self._hub

    @property
    def remote(self) -> bool:
        return self._hub is None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def endpoint_id(self) -> str | None:
        return self._conn.endpoint_id if self._conn is not None else None

    def identities(self) -> list[Identity]:
        return list(self._clients.values())

    # -- the connection ----------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        async with self._connecting:
            if self._closed:
                raise RuntimeError("HubClient is closed")
            if self._scope is not None:
                return
            if isinstance(self._link, WsLink):
                if self._nursery is None:
                    raise RuntimeError(
                        "a HubClient over a WsLink needs 'async with HubClient(WsLink(...))'"
                    )
                self._scope = await self._nursery.start(self._run_remote, self._link)
            else:
                assert self._hub is not None
                conn = self._link.client()
                await conn.open()
                self._conn = conn
                self._scope = await self._hub.host(self._run_local, conn)

    async def _run_local(
        self, conn: LocalLinkClient, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        self._loop_task = trio.lowlevel.current_task()
        done = self._loop_done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = self._router.nursery = nursery
                    task_status.started(scope)
                    # Deliveries the hub sends while this loop waits are routed in the
                    # hub's task (see LocalLink): the same work, without this loop's step.
                    conn.take_directly(self._take_notify)
                    try:
                        async with aclosing(conn.frames()) as frames:
                            async for frame in frames:
                                self._on_frame(frame)
                    finally:
                        conn.take_directly(None)
                    nursery.cancel_scope.cancel()
        finally:
            # However the loop ended (close(), the hub closing the connection, or the hub
            # shutting down and cancelling it), nothing more will be delivered: the
            # identities' waiters must not hang.
            for identity in self._clients.values():
                identity._lose_connection()
            done.set()

    def _in_loop(self) -> bool:
        """Whether the current task runs under the receive loop (a turn, a callback)."""
        task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
        while task is not None:
            if task is self._loop_task:
                return True
            parent = task.parent_nursery
            task = parent.parent_task if parent is not None else None
        return False

    async def _send_frame(self, frame: Frame) -> None:
        """Send on the current connection; dropped between connections (a replay follows)."""
        conn = self._conn
        if conn is not None:
            await conn.send_frame(frame)
        else:
            await trio.lowlevel.checkpoint()

    def _send_frame_nowait(self, frame: Frame) -> bool:
        """Send on the current in-process connection if it has room (whether it was sent)."""
        conn = self._conn
        if isinstance(conn, LocalLinkClient):
            return conn.send_frame_nowait(frame)
        return False

    def _take_notify(self, frame: Frame) -> bool:
        """Route a delivery the hub hands over directly (in process); whether it was one."""
        if type(frame) is not NotifyFrame:
            return False
        self._on_frame(frame)
        return True

    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, NotifyFrame):
            if frame.session is not None:
                self._learn_status(frame.envelope.session_id, frame.session)
            self._router.route(frame.envelope, frame.recipient_id, fresh=frame.fresh)
        elif isinstance(frame, ChunkFrame):
            self._chunks.route(frame.chunk, frame.recipient_id)
        elif (
            isinstance(frame, ErrorFrame)
            and frame.code == IdentityInUse.code
            and not frame.request_id
            and isinstance(self._api, RemoteHub)
        ):
            # Another connection took an identity over with its key, and the hub closes this
            # one: reconnecting would take it back, and so on. Stop, and say why.
            log.error("the hub closed this connection: %s", frame.message)
            self._taken_over = frame.message
            self._api.fail(f"the hub closed this connection: {frame.message}")
            self._wake.set()
        elif isinstance(frame, ResponseFrame | WelcomeFrame | ErrorFrame | InvalidFrame):
            if isinstance(frame, InvalidFrame):
                log.warning("undecodable frame from the hub: %s", frame.reason)
            if isinstance(self._api, RemoteHub):
                self._api.answer(frame)  # (an undecodable answer fails its call)

    async def close(self) -> None:
        """End the connection and its loops; identities stay registered. Idempotent.

        First the receipts of the deliveries already handed over are sent (a person's
        envelope taken while its callbacks still ran), so the hub does not replay them.

        In process, returns once the receive loop and its turns have ended (waiting, even
        when cancelled, at most ``CLOSE_WAIT_S`` seconds for turns that ignore a cancel).
        From then on every call to the hub raises ``RuntimeError`` naming the method.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        for identity in self._clients.values():
            await identity.disconnect()
        # What was handed over must not be replayed to the next connection: its receipts
        # go before the connection ends (shielded: an outer cancel must not lose them).
        with trio.move_on_after(CLOSE_WAIT_S, shield=True):
            await self._router.flush()
        if isinstance(self._api, RemoteHub):
            self._api.fail("the HubClient is closed")
            self._wake.set()  # the runner closes the connection and ends
            if self._conn is None and self._scope is not None:
                # Between connections: stop trying to reconnect (that may take up to
                # reconnect_within seconds).
                self._scope.cancel()
            await trio.lowlevel.checkpoint()
            return
        if self._conn is not None:
            await self._conn.aclose()
        if self._scope is not None:
            self._scope.cancel()
        await self._wait_loop_done()

    async def _wait_loop_done(self) -> None:
        """Wait, shielded and bounded, until the in-process receive loop has ended.

        Its delivery tasks run in the hub's nursery: without this wait a turn that cannot be
        cancelled (a blocking call in a worker thread) would outlive ``async with HubClient``.
        Not from under the loop itself (a turn closing its own client): that would wait for
        itself.
        """
        done = self._loop_done
        if done is None or done.is_set() or self._in_loop():
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(CLOSE_WAIT_S, shield=True) as waited:
            await done.wait()
        if waited.cancelled_caught:
            log.warning(
                "HubClient.close(): its deliveries did not end within %ss; leaving them to the hub",
                CLOSE_WAIT_S,
            )

    async def shutdown(self) -> None:
        """Unregister every identity of this client, then :meth:`close`."""
        for identity in list(self._clients.values()):
            try:
                await self._api.call(Unregister(agent_id=identity.agent_id))
            except NetworkError as exc:
                log.warning("shutdown: could not unregister %s: %s", identity, exc)
        await self.close()  # disconnects them all: their waiters wake
        self._clients.clear()

    # -- identities --------------------------------------------------------------------------

    def _with_link_auth(self, passport: Passport) -> Passport:
        """Present the link's API key for this name when the passport carries no auth."""
        if isinstance(self._link, WsLink) and passport.auth.scheme in ("none", ""):
            scheme, claim = self._link.claim_for(passport.name)
            if scheme != "none":
                return attrs.evolve(
                    passport, auth=attrs.evolve(passport.auth, scheme=scheme, claim=claim)
                )
        return passport

    async def _register(
        self,
        passport: Passport,
        resume: Resume | None,
        skill_md: str | None,
        rule: Rule | None,
    ) -> tuple[Passport, Resume, Rule]:
        await self._ensure_connected()
        stamped = await self._api.call(
            Register(
                passport=self._with_link_auth(passport),
                resume=resume or Resume(),
                skill_md=skill_md,
                rule=rule,
            )
        )
        agent_id = stamped.agent_id
        assert agent_id is not None
        if self._hub is not None:
            assert self._conn is not None
            try:
                await self._hub.bind_endpoint(self._conn.endpoint_id, agent_id)
            except StoreError as exc:
                await self._hub.unregister_after_failed_bind(agent_id, exc)
        # (over a network, the 'register' op bound this connection already)
        return (
            stamped,
            await self._api.call(GetResume(agent_id=agent_id)),
            await self._api.call(GetRule(agent_id=agent_id)),
        )

    def note_turn_failure(self, session_id: str, what: str) -> None:
        """Remember that a turn in ``session_id`` failed, for a wait there that times out."""
        failures = self._turn_failures
        failures.pop(session_id, None)
        failures[session_id] = what
        if len(failures) > TURN_FAILURES_KEPT:
            del failures[next(iter(failures))]  # the session whose failure is oldest

    def turn_failure(self, session_id: str) -> str | None:
        """The last turn failure noted in ``session_id`` (``"agent 'x' failed its turn: ..."``)."""
        return self._turn_failures.get(session_id)

    async def register(
        self,
        agent: Agent,
        passport: Passport,
        resume: Resume | None = None,
        *,
        skill_md: str | None = None,
        rule: Rule | None = None,
        attach_plugin: bool = True,
        handler: Handler | None = None,
        auto_ack_invites: bool = True,
        exist_ok: bool = False,
    ) -> AgentClient:
        """Register an agent and return its AgentClient (bound to this connection).

        ``handler`` replaces the default turn handler (see :meth:`AgentClient.set_handler`);
        with ``auto_ack_invites=False`` invites are not acked for the agent (its handler
        calls ``accept_invite`` / ``reject_invite``). With ``exist_ok=True`` an agent already
        registered under ``passport.name`` is attached instead (as :meth:`attach` does: same
        id, replayed what it had not acked; its stored passport, resume, rule and skill are
        kept, not replaced), so a program can run again on the same store, also after a run
        that failed before :meth:`shutdown`. ``attach_plugin`` is accepted for compatibility
        with the seed and does nothing.

        Raises:
          ValueError: ``passport.kind`` is ``"human"`` (use :meth:`register_human`), or with
            ``exist_ok`` the name is a human's.
          ProtocolError: the name is registered already (without ``exist_ok``).
          RuntimeError: this client is closed.
        """
        self._check_open("register")
        if passport.kind == "human":
            raise ValueError(f"passport {passport.name!r} is a human's: use register_human()")
        if exist_ok:
            found = await self._attach_existing(
                agent, passport.name, human=False, auto_ack_invites=auto_ack_invites
            )
            if found is not None:
                assert isinstance(found, AgentClient)
                if handler is not None:
                    found.set_handler(handler)
                return found
        stamped, resume, rule = await self._register(passport, resume, skill_md, rule)
        client = AgentClient(
            agent=agent,
            passport=stamped,
            resume=resume,
            rule=rule,
            hub_client=self,
            handler=handler,
            auto_ack_invites=auto_ack_invites,
        )
        self._clients[client.agent_id] = client
        return client

    async def register_human(
        self,
        passport: Passport,
        resume: Resume | None = None,
        *,
        skill_md: str | None = None,
        rule: Rule | None = None,
        auto_ack_invites: bool = True,
        exist_ok: bool = False,
    ) -> HumanClient:
        """Register a person and return their HumanClient.

        ``exist_ok=True`` attaches a person already registered under ``passport.name``
        instead (see :meth:`register`).

        Raises:
          ValueError: ``passport.kind`` is set and is not ``"human"``, or with ``exist_ok``
            the name is an agent's.
          ProtocolError: the name is registered already (without ``exist_ok``).
          RuntimeError: this client is closed.
        """
        self._check_open("register_human")
        if passport.kind not in (None, "human"):
            raise ValueError(
                f"register_human requires kind='human', passport {passport.name!r} has "
                f"kind={passport.kind!r}"
            )
        if exist_ok:
            found = await self._attach_existing(
                None, passport.name, human=True, auto_ack_invites=auto_ack_invites
            )
            if found is not None:
                assert isinstance(found, HumanClient)
                return found
        stamped, resume, rule = await self._register(
            attrs.evolve(passport, kind="human"), resume, skill_md, rule
        )
        client = HumanClient(
            passport=stamped,
            resume=resume,
            rule=rule,
            hub_client=self,
            auto_ack_invites=auto_ack_invites,
        )
        self._clients[client.agent_id] = client
        return client

    async def attach(
        self,
        agent: Agent | None,
        name: str,
        *,
        passport: Passport | None = None,
        resume: Resume | None = None,
        rule: Rule | None = None,
        skill_md: str | None = None,
        auto_ack_invites: bool = True,
    ) -> AgentClient | HumanClient:
        """Re-bind an existing identity (after a restart or reconnect) by name.

        The hub replays, in WAL order, what the identity had not acked. If ``name`` is not
        registered, ``passport`` and ``resume`` register it (human passports via
        :meth:`register_human`).

        Raises:
          ValueError: ``name`` is unknown and no passport/resume were given, or an agent
            identity is attached without an ``agent``.
          AuthError: over a network, the link's key for ``name`` is missing or wrong.
          RuntimeError: this client is closed.
        """
        self._check_open("attach")
        found = await self._attach_existing(agent, name, auto_ack_invites=auto_ack_invites)
        if found is not None:
            return found
        if passport is None or resume is None:
            raise ValueError(
                f"nothing is registered as {name!r}: attach re-binds an existing identity "
                "(give passport= and resume= to register it when it is missing)"
            )
        if passport.kind == "human":
            return await self.register_human(
                passport,
                resume,
                skill_md=skill_md,
                rule=rule,
                auto_ack_invites=auto_ack_invites,
            )
        if agent is None:
            raise ValueError(f"attaching agent {name!r} needs the agent object")
        return await self.register(
            agent,
            passport,
            resume,
            skill_md=skill_md,
            rule=rule,
            auto_ack_invites=auto_ack_invites,
        )

    async def _attach_existing(
        self,
        agent: Agent | None,
        name: str,
        *,
        human: bool | None = None,
        auto_ack_invites: bool = True,
    ) -> AgentClient | HumanClient | None:
        """Bind the identity registered as ``name`` to this connection; None if there is none.

        ``human`` (when not None) is the kind the caller expects: the other is a ValueError.
        """
        await self._ensure_connected()
        api = self._api
        agent_id = await api.call(FindAgentId(name=name))
        if agent_id is None:
            return None
        stamped = await api.call(GetAgent(name_or_id=agent_id))
        is_human = stamped.effective_kind == "human"
        if human is not None and is_human != human:
            registered, wanted = (
                ("a human", "register()") if is_human else ("an agent", "register_human()")
            )
            raise ValueError(f"{name!r} is registered as {registered}: {wanted} cannot attach it")
        common: dict[str, Any] = {
            "passport": stamped,
            "resume": await api.call(GetResume(agent_id=agent_id)),
            "rule": await api.call(GetRule(agent_id=agent_id)),
            "hub_client": self,
        }
        client: AgentClient | HumanClient
        if stamped.effective_kind == "human":
            client = HumanClient(auto_ack_invites=auto_ack_invites, **common)
        elif agent is None:
            raise ValueError(f"attaching agent {name!r} needs the agent object")
        else:
            client = AgentClient(agent=agent, auto_ack_invites=auto_ack_invites, **common)
        earlier = self._clients.get(agent_id)
        # Known before the bind: replayed deliveries arrive right after it; and before the
        # old handle is let go, so that what is queued for it goes to the new one.
        self._clients[agent_id] = client
        if earlier is not None:
            await earlier.disconnect()  # the old handle's waiters must not hang
        try:
            if self._hub is not None:
                assert self._conn is not None
                await self._hub.bind_endpoint(self._conn.endpoint_id, agent_id, since={})
            else:
                assert isinstance(self._link, WsLink)
                assert isinstance(api, RemoteHub)
                scheme, claim = self._link.claim_for(name)
                await api.hello(name, scheme, claim, since={})
        except NetworkError:
            del self._clients[agent_id]
            raise
        return client

    # -- the hub's operations ----------------------------------------------------------------

    def _check_open(self, method: str) -> None:
        """Refuse a call of ``method`` once the client is closed (every call to the hub).

        In process the hub would still answer; over a network the call would fail with
        another error. Either way the caller gets the one error that says what happened.

        Raises:
          RuntimeError: this client is closed.
        """
        if self._closed:
            raise RuntimeError(f"HubClient is closed: cannot call {method}")

    async def call(self, request: Request[R], *, method: str | None = None) -> R:
        """Run any hub request (a ``troupe.api`` record) and return its typed result.

        Every method below is this with its record; an operation with no method of its
        own is reached the same way: ``await hc.call(GetTask(task_id=...))``.

        Raises:
          RuntimeError: this client is closed (naming ``method``, the op by default).
          DecodeError: a field of the request does not fit its type (named).
          NetworkError: what the hub refused the request with.
        """
        self._check_open(method or request.op)
        return await self._api.call(request)

    async def unregister_agent(self, agent_id: str) -> None:
        await self.call(Unregister(agent_id=agent_id), method="unregister_agent")
        identity = self._clients.pop(agent_id, None)
        if identity is not None:
            await identity.disconnect()

    async def post_envelope(self, envelope: Envelope) -> str:
        self._check_open("post_envelope")
        return (await self.post(envelope)).envelope_id

    async def post(self, envelope: Envelope) -> Accepted:
        """Like :meth:`post_envelope`, returning the ``envelope_id``, ``seq`` and ``duplicate``.

        Every post of this client goes through here (its identities' too): a subclass that
        wraps posts overrides this one.
        """
        self._check_open("post")
        tracer = _tracing.ACTIVE
        if tracer is not None:
            return await tracer.client_post(self._post, envelope)
        return await self._post(envelope)

    async def _post(self, envelope: Envelope) -> Accepted:
        return await self._api.call(PostEnvelope(envelope=envelope))

    async def stream_chunk(self, chunk: StreamChunk) -> None:
        """Send a streamed chunk to the hub (best effort; see ``ChunkStream``).

        A chunk the hub refuses is dropped and counted by it (over a network it is not
        answered, and in process it is not raised either, so both behave alike).
        """
        self._check_open("stream_chunk")
        if isinstance(self._api, RemoteHub):
            await self._api.stream_chunk(chunk)
            return
        await trio.lowlevel.checkpoint()
        assert self._hub is not None
        try:
            self._hub.stream_chunk(chunk)
        except NetworkError as exc:
            log.debug("chunk of stream %s refused: %s", chunk.stream_id, exc)

    async def read_wal(
        self, session_id: str, *, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        """The slice ``wal[since:until]`` of the session's envelopes (negative bounds count
        from the end, as in Python: ``since=-2`` is the last two).

        Over a network the hub answers a bounded page at a time: read here page by page.
        """
        found: list[Envelope] = []
        while True:
            page = await self.call(ReadWal(session_id=session_id, since=since, until=until))
            found.extend(page.envelopes)
            if not page.more or not page.envelopes:
                return found
            since = page.envelopes[-1].seq

    def can_send(self, session_id: str, sender_id: str, *, event_type: str | None = None) -> bool:
        """Whether the session type would accept a post from ``sender_id`` now (a turn probe).

        Synchronous, as in the seed, in process only: over a network use :meth:`acan_send`.
        """
        self._check_open("can_send")
        if self._hub is None:
            raise RuntimeError("can_send is synchronous in process only; use 'await acan_send()'")
        return self._hub.can_send(session_id, sender_id, event_type=event_type)

    def session_status(self, session_id: str) -> SessionStatus | None:
        """The session as its actor published it with the latest delivery this client got
        of it (its metadata, the session type's state, ``last_seq``); None when no delivery
        brought one, or when this client cannot read its state (its type is unknown here).

        It may be behind the hub: what it allows, the hub still checks when it is posted.
        """
        return self._statuses.get(session_id)

    def has_floor(self, status: SessionStatus, agent_id: str, trigger: Envelope) -> bool:
        """Whether, by ``status``, ``trigger`` gives ``agent_id`` a turn: the session is
        ACTIVE, the agent takes part and has acked its invite, the session type would take a
        text from it (``can_send``), and when the type names whose turn it is and what gave
        it, that it is this agent's turn by this trigger (not by a later envelope)."""
        md = status.metadata
        assert md is not None
        if (
            md.state is not SessionState.ACTIVE
            or md.role_of(agent_id) is None
            or agent_id in md.pending_acks
        ):
            return False
        stype = self.session_type_for(md)
        key = (md.session_id, agent_id)
        probe = self._probes.get(key)
        if probe is None:
            probe = self._probes[key] = Envelope(
                session_id=md.session_id,
                sender_id=agent_id,
                event_type=EV_TEXT,
                event_data={"text": ""},
            )
        try:
            stype.validate_send(md, probe, status.state)
        except ProtocolError:
            return False
        turn = stype.expected_next(md, status.state)
        return not (
            turn is not None
            and turn.agent_id == agent_id
            and turn.triggering_envelope_id not in (None, trigger.envelope_id)
        )

    @property
    def fresh_deliveries(self) -> set[tuple[str, str, int]]:
        """(identity, session, seq) of the deliveries being handled that the hub sent with
        their post: no one can have answered them yet (replays from the WAL are not here)."""
        return self._router.fresh

    def _learn_status(self, session_id: str, status: SessionStatus) -> None:
        """Keep ``status`` if it is the latest of the session this client was given."""
        known = self._statuses.get(session_id)
        if known is not None and status.last_seq < known.last_seq:
            return
        md = status.metadata
        if md is None:
            if known is None:
                return
            md = known.metadata
        assert md is not None
        state = status.state
        if state is None:
            self._statuses.pop(session_id, None)  # no state to decide with: ask the hub
            return
        if isinstance(self._api, RemoteHub):
            self._api.remember_session(md)
            try:
                state = self.session_type_for(md).load_state(state)
            except (NotFoundError, DecodeError) as exc:
                log.debug("session %s: status not kept: %s", session_id, exc)
                self._statuses.pop(session_id, None)
                return
        if md is status.metadata and state is status.state:
            self._statuses[session_id] = status
        else:
            self._statuses[session_id] = SessionStatus(
                metadata=md, state=state, last_seq=status.last_seq
            )

    def _forget_status(self, session_id: str) -> None:
        """A session ended here: let its status and probes go."""
        self._statuses.pop(session_id, None)
        for agent_id in self._clients:
            self._probes.pop((session_id, agent_id), None)

    async def acan_send(
        self, session_id: str, sender_id: str, *, event_type: str | None = None
    ) -> bool:
        """:meth:`can_send`, awaitable, in process and over a network."""
        request = CanSend(session_id=session_id, sender_id=sender_id, event_type=event_type)
        return await self.call(request, method="acan_send")

    async def adapter_state(self, session_id: str) -> Any:
        """The session type's state of the session (the reference's "adapter state").

        In process: the hub's last published state (``Hub.session_state``). Over a network,
        or for a session the hub has not loaded since it opened: folded here from the
        session's WAL (over a network only a participant may read it).

        Raises:
          NotFoundError: no such session, or its session type is not registered here.
        """
        self._check_open("adapter_state")
        if self._hub is not None:
            state = self._hub.session_state(session_id)
            if state is not None:
                await trio.lowlevel.checkpoint()
                return state
        metadata = await self.get_session(session_id)
        stype = self.session_type_for(metadata)
        state = stype.initial_state(metadata)
        for envelope in await self.read_wal(session_id):
            if is_substantive(envelope.event_type):
                state = stype.fold(envelope, state)
        return state

    def default_view_policy(self, session_id: str, participant_id: str) -> ViewPolicy:
        """The session type's view for ``participant_id`` (over a network: of a session this
        client has fetched or opened)."""
        self._check_open("default_view_policy")
        if self._hub is not None:
            return self._hub.default_view_policy(session_id, participant_id)
        assert isinstance(self._api, RemoteHub)
        metadata = self._api.cached_session(session_id)
        if metadata is None:
            raise NotFoundError(
                f"session {session_id} is not known to this client yet: get_session() it first"
            )
        return self.session_type_for(metadata).default_view_policy(metadata, participant_id)

    # -- what the turn handler needs ---------------------------------------------------------

    def register_session_type(self, stype: AnySessionType) -> None:
        """Make a custom session type known to this client's turn handler."""
        self._session_types[(stype.name, stype.version)] = stype

    def session_type_for(self, metadata: SessionMetadata) -> AnySessionType:
        key = (metadata.manifest_type, metadata.manifest_version)
        stype = self._session_types.get(key)
        if stype is None and self._hub is not None:
            stype = self._hub.session_type(*key)
        if stype is None:
            raise NotFoundError(
                f"no session type registered for {key[0]}@v{key[1]} on this client "
                "(register_session_type)"
            )
        return stype

    async def pending_turn(self, session_id: str, agent_id: str) -> PendingTurn | None:
        """``agent_id``'s turn in the session by its session type, and what triggered it.

        None when it is not that agent's turn, or when the session type names no one (a
        free-form session).
        """
        request = PendingTurnsFor(agent_id=agent_id, session_id=session_id)
        turns = await self.call(request, method="pending_turn")
        return turns[0] if turns else None

    def name_for(self, agent_id: str) -> str:
        return self._api.name_for(agent_id)

    async def learn_names(self, agent_ids: Sequence[str]) -> None:
        self._check_open("learn_names")
        if isinstance(self._api, RemoteHub):
            await self._api.learn_names(agent_ids)
        else:
            await trio.lowlevel.checkpoint()  # in process ``name_for`` knows every name

    # -- the network side: one WebSocket connection at a time, reconnecting ------------------
    #
    # The runner owns the connection: it connects (tenacity backoff with full jitter, bounded
    # by ``reconnect_within`` on trio's clock), reads frames, and when the connection drops it
    # reconnects, re-binds every identity with a Hello that replays what it had not acked, and
    # lets the calls waiting for the connection go once they are bound again.

    async def _run_remote(
        self, link: WsLink, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """Own the WebSocket connection: connect, read, and reconnect until closed."""
        api = self._api
        assert isinstance(api, RemoteHub)
        with trio.CancelScope() as scope:
            first = True
            while not self._closing():
                failure: OSError | HandshakeFailed | trio.TooSlowError | None = None
                async with trio.open_nursery() as conn_nursery:
                    try:
                        # The first connection is tried once: a wrong address or a hub that
                        # is down should say so now, not after reconnect_within. Backoff is
                        # for connections that were up.
                        conn = await (
                            self._connect_once(link, conn_nursery)
                            if first
                            else self._connect(link, conn_nursery)
                        )
                    except (OSError, HandshakeFailed, trio.TooSlowError) as exc:
                        failure = exc
                    else:
                        if first:
                            api.attach(conn)
                            api.ready(conn)
                            task_status.started(scope)
                        await self._serve_connection(conn, conn_nursery, link, rebind=not first)
                        first = False
                # Raised here, outside the connection's nursery, so that callers get a
                # ConnectionLost and not an exception group.
                if failure is not None:
                    why = f"could not reach {link.url}: {self._describe(failure, link, first)}"
                    log.error("giving up: %s", why)
                    api.fail(why)
                    if first:
                        raise ConnectionLost(why) from failure
                    await self._lose_identities()
                    return
                if self._taken_over is not None:
                    # The hub closed this connection because another took an identity
                    # over: calls fail saying so (api.fail), the identities are let go.
                    await self._lose_identities()
                    return
                if not self._closing():
                    log.warning("lost the connection to %s; reconnecting", link.url)

    async def _serve_connection(
        self, conn: WsLinkClient, nursery: trio.Nursery, link: WsLink, *, rebind: bool
    ) -> None:
        """Read ``conn`` until it ends or close() is called; after a reconnect, re-bind."""
        api = self._api
        assert isinstance(api, RemoteHub)
        self._conn = conn
        self._wake = wake = trio.Event()
        if self._closing():
            wake.set()  # close() ran while this connection was being made
        nursery.start_soon(self._read, conn, wake)
        if rebind:
            # Calls wait until every identity is bound again: a post retried now would
            # otherwise reach the hub before its sender's binding and be refused.
            api.attach(conn)
            nursery.start_soon(self._rebind, link, conn)
        await wake.wait()  # the connection ended, or close() was called
        self._conn = None
        api.detach("the connection closed")
        # Close while the library's reader still runs, so that a closing handshake can
        # complete (bounded); when the hub dropped us this frees the socket.
        await conn.aclose()
        nursery.cancel_scope.cancel()

    def _closing(self) -> bool:
        # A call, not an attribute read: mypy would narrow ``self._closed`` across awaits.
        return self._closed or self._taken_over is not None

    async def _read(self, conn: WsLinkClient, wake: trio.Event) -> None:
        async with aclosing(conn.frames()) as frames:
            async for item in frames:
                if isinstance(item, list):
                    for frame in item:  # a batch, in order
                        self._on_frame(frame)
                else:
                    self._on_frame(item)
        wake.set()

    async def _connect_once(self, link: WsLink, nursery: trio.Nursery) -> WsLinkClient:
        """One attempt (``link.connect_timeout`` bounds it)."""
        return await link.connect(nursery)

    def _backoff(self, state: RetryCallState) -> float:
        """Full jitter: a random wait up to 0.05 s * 2**(attempt - 1), at most 5 s, drawn
        from the client's own generator (``reconnect_seed``), so clients dropped together
        do not come back together and a seeded schedule is the same every run."""
        return self._jitter.uniform(0, min(5.0, 0.05 * 2 ** (state.attempt_number - 1)))

    async def _connect(self, link: WsLink, nursery: trio.Nursery) -> WsLinkClient:
        """Connect, retrying with exponential backoff and jitter for ``reconnect_within`` s.

        Raises:
          OSError, HandshakeFailed: the last attempt's failure, once the deadline passed.
        """
        last: OSError | HandshakeFailed | trio.TooSlowError | None = None
        with trio.move_on_after(self._reconnect_within):
            async for attempt in AsyncRetrying(
                sleep=trio.sleep,
                wait=self._backoff,
                retry=retry_if_exception_type((OSError, HandshakeFailed, trio.TooSlowError)),
                reraise=True,
            ):
                with attempt:
                    try:
                        return await link.connect(nursery)
                    except (OSError, HandshakeFailed, trio.TooSlowError) as exc:
                        last = exc
                        raise
        if last is not None:
            raise last  # the reason the hub could not be reached, not just "too slow"
        raise trio.TooSlowError  # (no attempt finished within reconnect_within)

    def _describe(
        self, failure: OSError | HandshakeFailed | trio.TooSlowError, link: WsLink, first: bool
    ) -> str:
        """Why a connection failed, never an empty string."""
        if isinstance(failure, trio.TooSlowError):
            reason = f"no answer within {link.connect_timeout}s"
        else:
            reason = str(failure) or type(failure).__name__
            # trio's "all attempts to connect to H:P failed" keeps the OS's reasons as its
            # cause: name them.
            cause = failure.__cause__
            causes = cause.exceptions if isinstance(cause, BaseExceptionGroup) else (cause,)
            details = [str(c) for c in causes if isinstance(c, OSError) and str(c)]
            if details:
                reason = f"{reason} ({'; '.join(details)})"
        if first:
            return reason
        return f"{reason} (kept trying for {self._reconnect_within}s)"

    async def _rebind(self, link: WsLink, conn: WsLinkClient) -> None:
        """After a reconnect: bind every identity again and be replayed what it missed;
        then let the calls waiting for the connection go."""
        api = self._api
        assert isinstance(api, RemoteHub)
        for identity in list(self._clients.values()):
            scheme, claim = link.claim_for(identity.passport.name)
            try:
                await self._hello_again(identity, scheme, claim)
            except ConnectionLost:
                return  # this connection is gone too; the next one re-binds
            except NetworkError as exc:
                log.error("could not re-bind %s: %s", identity, exc)
        api.ready(conn)

    async def _hello_again(self, identity: Identity, scheme: str, claim: dict[str, Any]) -> None:
        """Re-bind one identity. The hub may still hold it on the connection that dropped
        (it lets a dead connection go within its ping interval + timeout): an anonymous
        bind is refused until then, so ``IdentityInUse`` is retried, with backoff, for at
        most ``reconnect_within`` seconds; then it is raised."""
        api = self._api
        assert isinstance(api, RemoteHub)

        def say_once(state: RetryCallState) -> None:
            if state.attempt_number == 1:
                log.warning(
                    "%s is still bound to another connection at the hub (the one that "
                    "dropped, until the hub lets it go): retrying for up to %ss",
                    identity,
                    self._reconnect_within,
                )

        with trio.move_on_after(self._reconnect_within):
            async for attempt in AsyncRetrying(
                sleep=trio.sleep,
                wait=wait_random_exponential(multiplier=0.05, max=2.0),
                retry=retry_if_exception_type(IdentityInUse),
                before_sleep=say_once,
            ):
                with attempt:
                    await api.hello(identity.passport.name, scheme, claim, since={}, early=True)
                    return
        await api.hello(identity.passport.name, scheme, claim, since={}, early=True)

    async def _lose_identities(self) -> None:
        # Not closed: calls go on failing with the ConnectionLost that says why (api.fail).
        for identity in self._clients.values():
            await identity.disconnect()
