"""``Hub``: the handle ``open_hub`` yields; its methods ask the hub and session actors.

Reads (``get_agent``, ``get_session``, ``can_send``, …) read the published tables and never
wait on an actor. Writes go to the one actor that owns the thing written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import trio

from .. import _tracing
from .._errors import (
    AccessDeniedError,
    ActorDead,
    DecodeError,
    NotFoundError,
    ProtocolError,
    StoreError,
    TroupeError,
)
from ..actors import ActorRef
from ..mailbox import DeadLetterBuffer
from ..model import (
    EV_TEXT,
    Envelope,
    SessionMetadata,
    SessionState,
    StreamChunk,
)
from ..session_types import ViewPolicy
from ..supervisors import ChildSpec, Supervisor
from . import _hub_messages as H
from ._audit import ReadAudit
from ._auth import AuthRegistry
from ._connection import Bind, Endpoint
from ._core import Failed, HubCore
from ._expectations import ExpectationSweeper
from ._extensions import ExtensionCalls, ExtensionState
from ._hub_registry import RegistryCalls
from ._hub_sessions import SessionCalls
from ._lanes import StreamStatistics
from ._session_parts import (
    EndSession,
    SendInvites,
)
from ._stats import HubHealth, HubStatistics, PendingTurn
from ._streaming import fan_out

#: How many of a session's last envelopes ``pending_turns_for`` looks through for a turn's
#: trigger (its ``expected_at``); an older trigger gives the hub's clock instead.
TRIGGER_LOOKBACK = 16
#: How long ``Hub.health()`` waits for the store's answer before calling it unreachable.
HEALTH_STORE_TIMEOUT_S = 1.0

#: The longest ``close_session`` reason (it travels in the close notice to every participant).
MAX_REASON_CHARS = 1000


class Hub(RegistryCalls, SessionCalls, ExtensionCalls):
    """A running hub; use it only inside its ``open_hub`` block."""

    def __init__(self, core: HubCore, auth: AuthRegistry) -> None:
        self._core = core
        self.auth = auth
        self._sessions: Supervisor | None = None
        self._connections: Supervisor | None = None
        #: The root supervisor (set by ``open_hub``).
        self._root: Supervisor | None = None
        self._endpoints: dict[str, ActorRef[Any, Any]] = {}
        self._client_nursery: trio.Nursery | None = None
        self._expectations = ExpectationSweeper(self)
        self._ext = ExtensionState()

    @property
    def core(self) -> HubCore:
        return self._core

    @property
    def dead_letters(self) -> DeadLetterBuffer:
        """Poison envelopes and undeliverable messages, with their reasons."""
        return self._core.dead_letters

    # -- sessions ----------------------------------------------------------------------------

    async def create_session(
        self,
        *,
        creator_id: str,
        manifest_type: str,
        manifest_version: int = 1,
        participants: Sequence[str],
        required_acks: int | None = None,
        ttl: str | int | None = None,
        knobs: dict[str, object] | None = None,
        intent: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> SessionMetadata:
        """Open a session, invite the participants and return once it is ACTIVE.

        It is ACTIVE once ``required_acks`` invitees acked (1 to the number of invitees;
        all of them by default). An invitee receives nothing of the session but its invite
        (and the notice that ends it) until it acks; then it gets what it missed, in order.

        Raises:
          NotFoundError: the creator, a participant or the session type is unknown.
          AccessDeniedError: a rule forbids it (inbound globs, session types, caps).
          ProtocolError: bad participants or knobs, an invite was rejected, or the acks did
            not arrive within ``invite_ack_timeout`` (the session is then CLOSED).
        """
        self._check_arbiter(manifest_type, knobs)
        md: SessionMetadata = await self._call(
            H.CreateSession(
                creator_id=creator_id,
                manifest_type=manifest_type,
                manifest_version=manifest_version,
                participants=tuple(participants),
                required_acks=required_acks,
                ttl=ttl,
                knobs=dict(knobs) if knobs is not None else None,
                intent=intent,
                labels=labels,
            )
        )
        if _tracing.ACTIVE is not None:
            _tracing.ACTIVE.session_opened(md)
        sid = md.session_id
        entry = self._core.directory.get(sid)
        try:
            result = await self._ask_session(sid, SendInvites())
            if isinstance(result, Failed):
                raise result.error
        except (ProtocolError, StoreError, ActorDead):
            # Not every invite may have gone out: nobody should wait for the acks (if this
            # close fails too, the sweeper closes the session at its handshake deadline).
            with contextlib.suppress(TroupeError):
                await self._end_session(sid, EndSession("invite_failed", only_if_pending=True))
            raise
        with trio.move_on_after(self._core.config.invite_ack_timeout):
            await entry.wait_for(lambda m: m.state is not SessionState.PENDING)
        md = entry.metadata
        if md.state is SessionState.PENDING:
            md = await self._end_session(sid, EndSession("invite_timeout", only_if_pending=True))
        if md.state is SessionState.ACTIVE:
            return md
        if md.close_reason == "invite_rejected":
            raise ProtocolError(
                f"session {sid} was not opened: invite rejected by {self._who(md.rejected_by)}"
            )
        if md.close_reason == "invite_timeout":
            raise ProtocolError(
                f"session {sid} was not opened: no ack within "
                f"{self._core.config.invite_ack_timeout}s from {self._who(md.pending_acks)} "
                "(invites are acked by the invitee's client: is it connected?)"
            )
        raise ProtocolError(f"session {sid} was not opened: {md.close_reason or md.state.value}")

    def _who(self, agent_ids: Iterable[str]) -> str:
        """``'bob' (a-2, not connected)``: names first, for error messages."""
        core = self._core
        out = []
        for agent_id in agent_ids:
            record = core.registry.agents.get(agent_id)
            name = repr(record.passport.name) if record is not None else "an unknown agent"
            live = "" if agent_id in core.bindings else ", not connected"
            out.append(f"{name} ({agent_id}{live})")
        return ", ".join(out)

    async def get_session(self, session_id: str) -> SessionMetadata:
        await trio.lowlevel.checkpoint()
        return self._core.directory.get(session_id).metadata

    async def list_sessions(
        self,
        *,
        agent_id: str | None = None,
        state: SessionState | None = None,
        include_terminal: bool = False,
        limit: int = 50,
    ) -> list[SessionMetadata]:
        """Sessions in creation order: all of ``agent_id``'s, or all of them.

        Terminal sessions are left out unless ``include_terminal`` or a terminal ``state``
        is asked for.
        """
        await trio.lowlevel.checkpoint()
        return self._core.directory.select(
            agent_id=agent_id, state=state, include_terminal=include_terminal, limit=limit
        )

    async def close_session(self, session_id: str, *, reason: str = "") -> SessionMetadata:
        """Close a session (idempotent on a terminal one).

        Raises:
          NotFoundError: the session is unknown.
          DecodeError: ``reason`` is not a string of at most ``MAX_REASON_CHARS``.
          StoreError: the store refused the close notice; the session stays as it was.
          ProtocolError: also when the session crashed twice while closing.
        """
        if type(reason) is not str or len(reason) > MAX_REASON_CHARS:
            raise DecodeError(
                f"close_session reason: expected a string of at most {MAX_REASON_CHARS} "
                f"characters, got {reason!r:.80}",
                record="close_session",
                field="reason",
            )
        entry = self._core.directory.get(session_id)
        if entry.metadata.state.terminal:
            await trio.lowlevel.checkpoint()
            return entry.metadata
        return await self._end_session(session_id, EndSession(reason or "explicit_close"))

    async def read_wal(
        self, session_id: str, *, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        """The slice ``wal[since:until]`` of the session's envelopes, in order.

        Seqs start at 1, so that is the envelopes with ``since < seq <= until``; a negative
        bound counts from the end, as in a Python slice (``since=-2``: the last two).

        Raises:
          NotFoundError: no such session.
        """
        wal: list[Envelope] = await self._call(H.ReadWal(session_id, since, until))
        return wal

    def can_send(self, session_id: str, sender_id: str, *, event_type: str | None = None) -> bool:
        """Whether the session type would accept a post of ``event_type`` from the sender now.

        A turn probe: it reads the last published state and checks membership (an invitee
        that has not acked its invite may not send), ACTIVE and the session type's rules,
        not rates or inboxes.
        """
        entry = self._core.directory.sessions.get(session_id)
        if entry is None or entry.stype is None or entry.state is None:
            return False
        md = entry.metadata
        if (
            md.state is not SessionState.ACTIVE
            or md.role_of(sender_id) is None
            or sender_id in md.pending_acks  # it has not acked its invite
        ):
            return False
        probe = Envelope(
            session_id=session_id,
            sender_id=sender_id,
            event_type=event_type or EV_TEXT,
            event_data={"text": ""},
        )
        try:
            entry.stype.validate_send(md, probe, entry.state)
        except ProtocolError:
            return False
        return True

    async def acan_send(
        self, session_id: str, sender_id: str, *, event_type: str | None = None
    ) -> bool:
        """:meth:`can_send`, awaitable (the same call as on a remote hub)."""
        await trio.lowlevel.checkpoint()
        return self.can_send(session_id, sender_id, event_type=event_type)

    def session_state(self, session_id: str) -> Any:
        """The session type's last published state (None before the session was loaded)."""
        return self._core.directory.get(session_id).state

    def default_view_policy(self, session_id: str, participant_id: str) -> ViewPolicy:
        entry = self._core.directory.get(session_id)
        if entry.stype is None:
            md = entry.metadata
            raise NotFoundError(
                f"no session type registered for {md.manifest_type}@v{md.manifest_version}"
            )
        return entry.stype.default_view_policy(entry.metadata, participant_id)

    async def pending_turns_for(
        self, agent_id: str, *, session_id: str | None = None
    ) -> list[PendingTurn]:
        """ACTIVE sessions where the session type says it is ``agent_id``'s turn.

        With ``session_id``, only that session is looked at (what a turn handler asks on
        every delivery).
        """
        turns = []
        directory = self._core.directory
        entries = (
            [directory.get(session_id)] if session_id is not None else directory.of_agent(agent_id)
        )
        for entry in entries:
            md = entry.metadata
            if md.state is not SessionState.ACTIVE or entry.stype is None or entry.state is None:
                continue
            turn = entry.stype.expected_next(md, entry.state)
            if turn is not None and turn.agent_id == agent_id and agent_id not in md.pending_acks:
                trigger = turn.triggering_envelope_id
                turns.append(
                    PendingTurn(
                        session_id=md.session_id,
                        triggering_envelope_id=trigger,
                        expected_at=await self._expected_at(md.session_id, trigger),
                    )
                )
        await trio.lowlevel.checkpoint()
        return turns

    async def _expected_at(self, session_id: str, trigger_id: str | None) -> str:
        """The trigger's ``created_at`` if it is among the session's last envelopes, else now.

        (The reference scanned the whole WAL; a turn's trigger is nearly always recent.)
        """
        core = self._core
        if trigger_id is not None:
            last = core.directory.get(session_id).last_seq
            # Mostly the last envelope: read it alone first (one decode, not sixteen).
            for lookback in (1, TRIGGER_LOOKBACK):
                for envelope in await core.store.read(session_id, since=max(0, last - lookback)):
                    if envelope.envelope_id == trigger_id:
                        return envelope.created_at
        return core.now_iso()

    async def find_envelope_by_causation(
        self, session_id: str, *, sender_id: str, causation_id: str
    ) -> Envelope | None:
        """The envelope ``sender_id`` posted in answer to ``causation_id`` (any event type).

        Raises:
          NotFoundError: the session is unknown.
          AccessDeniedError: ``sender_id`` is not a participant of it.
        """
        entry = self._core.directory.get(session_id)
        self._check_participant(entry.metadata, sender_id)
        if entry.dedup is None or not entry.running:
            if entry.metadata.state.terminal:
                wal = await self.read_wal(session_id)
                return next(
                    (e for e in wal if e.sender_id == sender_id and e.causation_id == causation_id),
                    None,
                )
            await self._running(entry)
        assert entry.dedup is not None
        prefix = f"c:{sender_id}|{causation_id}|"
        complete = entry.dedup.complete
        for key, (_, seq) in entry.dedup.items():
            if key.startswith(prefix):
                found = await self.read_wal(session_id, since=seq - 1, until=seq)
                return found[0] if found else None
        if complete:
            return None
        # Older than the session's dedup window: the store's index has it.
        hit = await self._call(H.FindAnswer(session_id, sender_id, causation_id))
        if hit is None:
            return None
        found = await self.read_wal(session_id, since=hit[1] - 1, until=hit[1])
        return found[0] if found else None

    async def report_turn_failure(
        self, *, session_id: str, agent_id: str, envelope_id: str, exc: BaseException
    ) -> None:
        """Record that an agent's turn raised (audit ``turn_failed``); no reply is invented.

        Raises:
          NotFoundError: the session is unknown.
          AccessDeniedError: ``agent_id`` is not a participant of it (nothing is recorded).
        """
        await trio.lowlevel.checkpoint()
        self.audit_turn_failure(
            session_id=session_id,
            agent_id=agent_id,
            envelope_id=envelope_id,
            exc_type=type(exc).__name__,
            exc_message=str(exc),
        )

    def audit_turn_failure(
        self, *, session_id: str, agent_id: str, envelope_id: str, exc_type: str, exc_message: str
    ) -> None:
        self._check_participant(self._core.directory.get(session_id).metadata, agent_id)
        self._core.audit(
            "turn_failed",
            session_id=session_id,
            agent_id=agent_id,
            envelope_id=envelope_id,
            exc_type=exc_type,
            exc_message=exc_message,
        )

    def _check_participant(self, md: SessionMetadata, agent_id: str) -> None:
        if md.role_of(agent_id) is None:
            raise AccessDeniedError(
                f"agent {self._core.registry.name_for(agent_id)!r} is not a participant of "
                f"session {md.session_id}"
            )

    # -- endpoints ---------------------------------------------------------------------------

    async def attach_endpoint(self, endpoint: Endpoint) -> str:
        """Serve a new connection (its frames, its deliveries); return its endpoint id."""
        from ._serve import serve_endpoint

        assert self._connections is not None, "the hub is not running"
        await self._connections.start_child(
            ChildSpec(
                endpoint.endpoint_id,
                partial(serve_endpoint, self, endpoint),
                restart="temporary",
            )
        )
        return endpoint.endpoint_id

    async def bind_endpoint(
        self,
        endpoint_id: str,
        agent_id: str,
        *,
        since: dict[str, int] | None = None,
        takeover: bool = False,
    ) -> None:
        """Route ``agent_id``'s deliveries to this endpoint.

        With ``since`` not None, replay what the agent has not acked (see ``HelloFrame``).
        With ``takeover``, take the identity from another open connection, which is told why
        (an ``identity_in_use`` ErrorFrame) and closed: what an API key allows over a wire.

        Raises:
          IdentityInUse: another connection that is still open holds ``agent_id`` and
            ``takeover`` is off (one that was closed holds nothing: a client that
            reconnects binds again at once).
        """
        conn = self._endpoints.get(endpoint_id)
        if conn is None:
            raise NotFoundError(f"endpoint not attached: {endpoint_id!r}")
        self._core.registry.record(agent_id)
        result = await conn.ask(Bind(agent_id, since, takeover=takeover))
        if isinstance(result, Failed):
            raise result.error

    async def host(self, fn: Any, *args: Any) -> Any:
        """Run ``await nursery.start(fn, *args)`` in the hub's nursery for in-process clients.

        In-process clients (``HubClient(LocalLink(hub))``) keep their receive loops here, so
        they need no nursery of their own and end with the hub at the latest.
        """
        assert self._client_nursery is not None, "the hub is not running"
        return await self._client_nursery.start(fn, *args)

    # -- streaming ---------------------------------------------------------------------------

    def stream_chunk(self, chunk: StreamChunk) -> int:
        """Forward a streamed chunk to the session's participants; how many got it.

        Best effort and never stored (see ``_streaming.py``): the chunk is checked as a post
        of its sender would be, then handed to the connection of each participant in its
        audience without waiting; a recipient already ``CHUNK_BUFFER`` chunks behind misses
        it (counted in :meth:`stream_statistics`).

        Raises:
          NotFoundError: the sender or the session is unknown.
          AccessDeniedError: the audience is outside the sender's ``outbound_to``.
          ProtocolError: the chunk is malformed, or its sender may not post in the
            session now.
        """
        if not isinstance(chunk, StreamChunk):
            raise TypeError(f"stream_chunk takes a StreamChunk, got {type(chunk).__name__}")
        return fan_out(self._core, chunk)

    def stream_statistics(self) -> StreamStatistics:
        """How many chunks the hub forwarded, dropped and refused."""
        return self._core.streams.statistics()

    # -- observability -----------------------------------------------------------------------

    async def health(self) -> HubHealth:
        """Whether the hub serves: its root supervisor, the store, live sessions, connections.

        Cheap: in-memory counts and one small store read (bounded by
        ``HEALTH_STORE_TIMEOUT_S``). ``serving`` is true while the ``open_hub`` block runs,
        the root supervisor is ``running`` (no child of it down) and the store answered.
        """
        core = self._core
        reachable = False
        with trio.move_on_after(HEALTH_STORE_TIMEOUT_S):
            try:
                await core.store.last_seq("")
            except StoreError:
                pass
            else:
                reachable = True
        supervisor = self._root.state if self._root is not None else "stopping"
        return HubHealth(
            serving=not core.stopping and supervisor == "running" and reachable,
            supervisor=supervisor,
            store_reachable=reachable,
            live_sessions=len(self._sessions) if self._sessions is not None else 0,
            connections=len(self._connections) if self._connections is not None else 0,
        )

    def statistics(self) -> HubStatistics:
        """A snapshot of the hub's counters (see :class:`HubStatistics`)."""
        core = self._core
        directory = core.directory
        live = len(self._sessions) if self._sessions is not None else 0
        open_ = directory.open_count
        sessions = self._sessions.statistics() if self._sessions is not None else None
        session_hw = core.counters.session_high_water
        for entry in directory.in_use.values():
            if entry.ref is not None:
                session_hw = max(session_hw, entry.ref.mailbox.statistics().high_water)
        return HubStatistics(
            agents=len(core.registry),
            sessions=len(directory),
            open_sessions=open_,
            live_sessions=live,
            passivated_sessions=max(0, open_ - live),
            passivations=core.counters.passivations,
            rehydrations=core.counters.rehydrations,
            connections=len(self._connections) if self._connections is not None else 0,
            envelopes_accepted=core.counters.accepted,
            envelopes_rejected=core.counters.rejected,
            duplicates=core.counters.duplicates,
            session_restarts=sessions.restarts if sessions is not None else 0,
            sessions_crashed=core.counters.sessions_crashed,
            poison_envelopes=core.counters.poison,
            dead_letters=core.dead_letters.total,
            pending_inbox=core.ledger.total(),
            hub_mailbox_high_water=_high_water(core.hub_ref),
            session_mailbox_high_water=session_hw,
            connection_mailbox_high_water=max(
                (_high_water(ref) for ref in self._endpoints.values()), default=0
            ),
        )

    async def read_audit(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit records after the first ``since``, oldest first (queued ones included)."""
        assert self._core.audit_ref is not None
        records = await self._core.audit_ref.ask(ReadAudit(since, limit))
        if isinstance(records, Failed):
            raise records.error
        found: list[dict[str, Any]] = records
        return found


def _high_water(ref: ActorRef[Any, Any] | None) -> int:
    return ref.mailbox.statistics().high_water if ref is not None else 0
