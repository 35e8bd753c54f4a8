"""LocalLink: an in-process connection between a client and a hub.

Two bounded trio memory channels, one per direction; frames are passed as objects (never
serialised on the in-process path). Closing either end ends both directions.

A frame sent without waiting (:meth:`_End.send_frame_nowait`) is handed straight to the
other side's taker (:meth:`_End.take_directly`), in the sender's task, when that side reads
nothing else meanwhile: its reader waits on an empty channel, so nothing sent before the
frame is still unread, and the order is the channel's. That saves the reader a scheduler
step per frame, which is most of a frame's cost in process: the hub's deliveries reach the
client's router, and the client's receipts the connection's cursors, with no task between.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

import trio

from ..model import Frame

if TYPE_CHECKING:
    from ..api import LocalHub

#: Frames that may wait in each direction before the sender waits.
BUFFER = 256

#: Takes a frame sent to this end in the sender's task: whether it did (else it is queued).
Taker = Callable[[Frame], bool]


class _End:
    """One end of a duplex pair of memory channels."""

    #: Frames travel as objects (the hub sends a session's status as it is, not dumped).
    carries_objects = True

    def __init__(
        self,
        endpoint_id: str,
        send: trio.MemorySendChannel[Frame],
        receive: trio.MemoryReceiveChannel[Frame],
    ) -> None:
        self._endpoint_id = endpoint_id
        self._send = send
        self._receive = receive
        #: This end's reader's :data:`Taker`, while it takes frames directly, and (a copy
        #: of) the reader's context, which the taker runs in.
        self._taker: Taker | None = None
        self._taker_context: contextvars.Context | None = None
        #: Frames the other end put in this end's channel that its reader has not taken
        #: out, and whether the reader waits for one (kept here: a channel's statistics()
        #: is an allocation, twice per envelope on the in-process path).
        self._unread = 0
        self._reading = False
        #: The other end (set by :meth:`LocalLink.client`): where a direct frame goes.
        self._peer: _End | None = None

    @property
    def endpoint_id(self) -> str:
        return self._endpoint_id

    @property
    def alive(self) -> bool:
        """Whether neither end has closed the connection."""
        return (
            self._send.statistics().open_receive_channels > 0
            and self._receive.statistics().open_send_channels > 0
        )

    def encode(self, frame: Frame) -> Frame:
        """Frames travel as objects in process: nothing to encode."""
        return frame

    async def send_frame(self, frame: Frame | str) -> None:
        """Send a frame; silently dropped once the connection is closed."""
        if isinstance(frame, str):
            raise TypeError("a LocalLink carries frames, not their wire text")
        peer = self._peer
        assert peer is not None  # (LocalLink.client pairs the ends)
        # Counted before it is in the channel (a waiting reader may take it out before this
        # task runs again), and uncounted if it never was.
        peer._unread += 1
        sent = False
        try:
            await self._send.send(frame)
            sent = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.lowlevel.checkpoint()
        finally:
            if not sent:
                peer._unread -= 1

    def send_frame_nowait(self, frame: Frame) -> bool:
        """Send a frame without waiting if the buffer has room (whether it was taken);
        silently dropped once the connection is closed (taken, as :meth:`send_frame` does).

        Handed to the other end's taker instead, in this task, when it has one and its
        reader waits on an empty channel (see the module's docstring).
        """
        peer = self._peer
        assert peer is not None  # (LocalLink.client pairs the ends)
        taker, context = peer._taker, peer._taker_context
        if (
            taker is not None
            and context is not None
            and peer._reading
            and not peer._unread
            and context.run(taker, frame)
        ):
            return True
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return True  # dropped
        peer._unread += 1
        return True

    def take_directly(self, taker: Taker | None) -> None:
        """While set, frames the other end sends without waiting may be handed to ``taker``
        in the sender's task instead of this end's channel (``None``: no longer).

        Set by the task that reads :meth:`frames`, for as long as it reads them: a frame
        ``taker`` takes is handled as if that task had read it, so ``taker`` must not wait
        or raise, and must not be set once that task stops handling frames. It runs in a copy
        of that task's context (taken now), not the sender's: what it starts carries the
        reader's context variables, as it would have had the reader handled the frame.
        """
        self._taker = taker
        self._taker_context = None if taker is None else contextvars.copy_context()

    async def frames(self) -> AsyncGenerator[Frame, None]:
        """The frames the other end sends, until either end closes."""
        receive = self._receive.receive
        while True:
            self._reading = True
            try:
                frame = await receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            finally:
                self._reading = False
            self._unread -= 1
            yield frame

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


class LocalEndpoint(_End):
    """The hub's end of a LocalLink connection."""


class LocalLinkClient(_End):
    """The client's end of a LocalLink connection; ``open()`` attaches it to the hub."""

    def __init__(
        self,
        hub: LocalHub,
        endpoint: LocalEndpoint,
        send: trio.MemorySendChannel[Frame],
        receive: trio.MemoryReceiveChannel[Frame],
    ) -> None:
        super().__init__(endpoint.endpoint_id, send, receive)
        self._hub = hub
        self._endpoint = endpoint
        self._opened = False

    async def open(self) -> None:
        if not self._opened:
            self._opened = True
            await self._hub.attach_endpoint(self._endpoint)


class LocalLink:
    """A link factory for a hub in this process: ``HubClient(LocalLink(hub))``."""

    def __init__(self, hub: LocalHub) -> None:
        self._hub = hub

    @property
    def hub(self) -> LocalHub:
        return self._hub

    def client(self) -> LocalLinkClient:
        """A fresh, unopened connection."""
        to_hub_send, to_hub_receive = trio.open_memory_channel[Frame](BUFFER)
        to_client_send, to_client_receive = trio.open_memory_channel[Frame](BUFFER)
        endpoint = LocalEndpoint(uuid.uuid4().hex, to_client_send, to_hub_receive)
        client = LocalLinkClient(self._hub, endpoint, to_hub_send, to_client_receive)
        endpoint._peer, client._peer = client, endpoint
        return client
