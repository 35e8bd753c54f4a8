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
"""

from __future__ import annotations

import logging
import random
from contextlib import AsyncExitStack, aclosing
from types import TracebackType
from typing import Any, Self

import attrs
import trio

from .._errors import IdentityInUse, NetworkError, StoreError
from ..hub import Hub
from ..model import (
    ChunkFrame,
    ErrorFrame,
    Frame,
    InvalidFrame,
    NotifyFrame,
    Passport,
    ResponseFrame,
    Resume,
    Rule,
    WelcomeFrame,
)
from ..session_types import AnySessionType, builtin_types
from ..transport import LocalLink, LocalLinkClient, WsLink, WsLinkClient
from ._agent_client import AgentClient, Handler
from ._calls import HubCalls
from ._human_client import HumanClient
from ._identity import Identity
from ._remote import RemoteHub
from ._router import Router
from ._runner import RemoteRunner
from ._streaming import ChunkRouter
from ._turn import Agent

log = logging.getLogger("troupe.client")

#: Sessions whose last failed turn a client remembers for its wait timeouts.
TURN_FAILURES_KEPT = 256

Link = LocalLink | WsLink

#: How long (seconds) an in-process ``close()`` waits for the client's loop and the turns
#: in it to end after they were cancelled (a turn in a worker thread cannot be cancelled).
CLOSE_WAIT_S = 5.0


class HubClient(HubCalls, RemoteRunner):
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
        hub: Hub | None = None,
        reconnect_within: float = 60.0,
        reconnect_seed: int | None = None,
    ) -> None:
        self._link = link
        self._jitter = random.Random(reconnect_seed)
        self._hub = hub if hub is not None else getattr(link, "hub", None)
        self._api: Hub | RemoteHub = self._hub if self._hub is not None else RemoteHub()
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
        self._router = Router(self._clients, self._send_frame)
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
    def hub(self) -> Hub | None:
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
                    async with aclosing(conn.frames()) as frames:
                        async for frame in frames:
                            self._on_frame(frame)
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

    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, NotifyFrame):
            self._router.route(frame.envelope, frame.recipient_id)
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
                await self._api.unregister(identity.agent_id)
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
        api = self._api
        stamped = await api.register(
            self._with_link_auth(passport), resume or Resume(), skill_md=skill_md, rule=rule
        )
        assert stamped.agent_id is not None
        if isinstance(api, Hub):
            assert self._conn is not None
            try:
                await api.bind_endpoint(self._conn.endpoint_id, stamped.agent_id)
            except StoreError as exc:
                await api._unregister_after_failed_bind(stamped.agent_id, exc)
        # (over a network, the 'register' op bound this connection already)
        return stamped, await api.get_resume(stamped.agent_id), await api.get_rule(stamped.agent_id)

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
        agent_id = await api.find_agent(name)
        if agent_id is None:
            return None
        stamped = await api.get_agent(agent_id)
        is_human = stamped.effective_kind == "human"
        if human is not None and is_human != human:
            registered, wanted = (
                ("a human", "register()") if is_human else ("an agent", "register_human()")
            )
            raise ValueError(f"{name!r} is registered as {registered}: {wanted} cannot attach it")
        common: dict[str, Any] = {
            "passport": stamped,
            "resume": await api.get_resume(agent_id),
            "rule": await api.get_rule(agent_id),
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
            if isinstance(api, Hub):
                assert self._conn is not None
                await api.bind_endpoint(self._conn.endpoint_id, agent_id, since={})
            else:
                assert isinstance(self._link, WsLink)
                scheme, claim = self._link.claim_for(name)
                await api.hello(name, scheme, claim, since={})
        except NetworkError:
            del self._clients[agent_id]
            raise
        return client
