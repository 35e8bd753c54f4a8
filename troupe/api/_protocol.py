"""What the layers above the hub hold it by: ``HubApi`` (any hub) and ``LocalHub`` (in process).

``client/`` and ``transport/`` type the hub against these protocols, so neither imports
``hub/`` (nor, through it, the store and sqlite3): ``troupe.hub.Hub`` satisfies both, and
``troupe.client.RemoteHub`` satisfies ``HubApi``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from ..model import Frame, StreamChunk
from ..session_types import AnySessionType, ViewPolicy
from ._requests import Request

R = TypeVar("R")


class HubApi(Protocol):
    """One generic call per request record: the in-process ``Hub`` and ``RemoteHub`` alike."""

    async def call(self, request: Request[R]) -> R:
        """Run ``request`` on the hub and return its result (of the request's result type).

        Raises:
          DecodeError: a field of the request does not fit (``field`` names it).
          NetworkError: the hub refused the request (the subclass says why).
        """
        ...

    def name_for(self, agent_id: str) -> str:
        """The name of ``agent_id`` as far as known here (the id itself if it is not)."""
        ...


class Endpoint(Protocol):
    """The hub's end of a connection."""

    @property
    def endpoint_id(self) -> str: ...

    @property
    def alive(self) -> bool:
        """Whether the connection may still carry frames (False once either end closed)."""
        ...

    def encode(self, frame: Frame) -> Frame | str | None:
        """What ``send_frame`` is to be given for ``frame``: the frame itself, its wire text
        (a ``str``, whose length counts against the connection's outbound bytes), or None
        when nothing can be sent for it."""
        ...

    async def send_frame(self, frame: Frame | str) -> None: ...

    def frames(self) -> AsyncIterator[Frame | list[Frame]]:
        """What the client sends: frames, and lists of them (a batch, in order)."""
        ...

    async def aclose(self) -> None: ...


class LocalHub(HubApi, Protocol):
    """A hub in this process, as a ``HubClient`` over a ``LocalLink`` and a server use it."""

    async def attach_endpoint(self, endpoint: Endpoint) -> str:
        """Serve a new connection (its frames, its deliveries); return its endpoint id."""
        ...

    async def bind_endpoint(
        self,
        endpoint_id: str,
        agent_id: str,
        *,
        since: dict[str, int] | None = None,
        takeover: bool = False,
    ) -> None:
        """Route ``agent_id``'s deliveries to this endpoint (replaying from ``since``)."""
        ...

    async def unregister_after_failed_bind(self, agent_id: str, cause: Exception) -> Any:
        """Roll back a registration whose first bind failed; raise ``cause``."""
        ...

    async def host(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``await nursery.start(fn, *args)`` in the hub's nursery for in-process clients."""
        ...

    def can_send(
        self, session_id: str, sender_id: str, *, event_type: str | None = None
    ) -> bool: ...

    def session_state(self, session_id: str) -> Any: ...

    def default_view_policy(self, session_id: str, participant_id: str) -> ViewPolicy: ...

    def session_type(self, name: str, version: int) -> AnySessionType | None: ...

    def stream_chunk(self, chunk: StreamChunk) -> int: ...
