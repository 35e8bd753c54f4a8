"""The network side of HubClient: one WebSocket connection at a time, reconnecting.

The runner owns the connection: it connects (tenacity backoff with full jitter, bounded by
``reconnect_within`` on trio's clock), reads frames, and when the connection drops it
reconnects, re-binds every identity with a Hello that replays what it had not acked, and
lets the calls waiting for the connection go once they are bound again.
"""

from __future__ import annotations

import logging
import random
from contextlib import aclosing
from typing import Any

import trio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)
from trio_websocket import HandshakeError

from .._errors import ConnectionLost, IdentityInUse, NetworkError
from ..hub import Hub
from ..model import Frame
from ..transport import LocalLinkClient, WsLink, WsLinkClient
from ._identity import Identity
from ._remote import RemoteHub

log = logging.getLogger("troupe.client")


class RemoteRunner:
    """The reconnecting connection of a :class:`HubClient` over a WsLink (a mixin)."""

    _api: Hub | RemoteHub
    _closed: bool
    _taken_over: str | None
    _conn: LocalLinkClient | WsLinkClient | None
    _wake: trio.Event
    _clients: dict[str, Identity]
    _reconnect_within: float
    _jitter: random.Random

    def _on_frame(self, frame: Frame) -> None:
        raise NotImplementedError

    async def _run_remote(
        self, link: WsLink, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """Own the WebSocket connection: connect, read, and reconnect until closed."""
        api = self._api
        assert isinstance(api, RemoteHub)
        with trio.CancelScope() as scope:
            first = True
            while not self._closing():
                failure: OSError | HandshakeError | trio.TooSlowError | None = None
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
                    except (OSError, HandshakeError, trio.TooSlowError) as exc:
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
          OSError, HandshakeError: the last attempt's failure, once the deadline passed.
        """
        last: OSError | HandshakeError | trio.TooSlowError | None = None
        with trio.move_on_after(self._reconnect_within):
            async for attempt in AsyncRetrying(
                sleep=trio.sleep,
                wait=self._backoff,
                retry=retry_if_exception_type((OSError, HandshakeError, trio.TooSlowError)),
                reraise=True,
            ):
                with attempt:
                    try:
                        return await link.connect(nursery)
                    except (OSError, HandshakeError, trio.TooSlowError) as exc:
                        last = exc
                        raise
        if last is not None:
            raise last  # the reason the hub could not be reached, not just "too slow"
        raise trio.TooSlowError  # (no attempt finished within reconnect_within)

    def _describe(
        self, failure: OSError | HandshakeError | trio.TooSlowError, link: WsLink, first: bool
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
