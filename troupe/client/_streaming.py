"""Streaming on the client: sending a reply as chunks, and handing received chunks on.

Sending: a :class:`ChunkStream` numbers the chunks of one stream and sends each to the hub
(in process a direct call, over a network a ``ChunkFrame``); the final envelope, posted as
usual, carries the stream's id (``Envelope.stream_id``). In a turn, ``await
turn.stream(text)`` does this and the default turn handler stamps the reply.

Receiving: chunks for an identity wait in a queue of at most ``CLIENT_CHUNK_BUFFER``
(beyond that they are dropped and counted); one task per identity hands them, in order, to
``receive_chunk``, which runs the identity's chunk callbacks. Chunks are not acked or
replayed, and may reach a callback after the final envelope reached the envelope callbacks
(the two travel on different queues): the final envelope is the truth.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

import trio

from .._errors import ProtocolError
from ..model import StreamChunk

if TYPE_CHECKING:
    from ._identity import Identity
    from ._router import Router

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
