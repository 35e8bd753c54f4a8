"""``Hub``: the handle ``open_hub`` yields; its methods ask the hub and session actors.

Reads (``get_agent``, ``get_session``, ``can_send``, …) read the published tables and never
wait on an actor. Writes go to the one actor that owns the thing written.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import attrs
import trio

from .._errors import ActorDead, NotFoundError, ProtocolError, StoreError, TroupeError
from ..actors import ActorRef
from ..mailbox import DeadLetter, DeadLetterBuffer
from ..model import (
    EV_TEXT,
    Envelope,
    Passport,
    Resume,
    Rule,
    SessionMetadata,
    SessionState,
    TaskMetadata,
    TaskState,
    parse_iso,
)
from ..session_types import AnySessionType, ViewPolicy
from ..store import dedup_keys
from ..supervisors import ChildSpec, Supervisor
from . import _hub_actor as H
from ._audit import ReadAudit
from ._auth import AuthRegistry
from ._connection import Bind, Endpoint
from ._core import Failed, HubCore
from ._directory import Gate, SessionEntry
from ._expectations import ExpectationSweeper, ExpectationViolation
from ._session import (
    Accepted,
    EndSession,
    Post,
    SendInvites,
    SessionActor,
    admit_addressing,
    admit_sender,
)
from ._stats import HubStatistics, PendingTurn

log = logging.getLogger("troupe.hub")

#: First and longest pause between attempts to close a crashed session the store refused.
CLOSE_RETRY_S = 0.1
CLOSE_RETRY_MAX_S = 5.0


class Hub:
    """A running hub; use it only inside its ``open_hub`` block."""

    def __init__(self, core: HubCore, auth: AuthRegistry) -> None:
        self._core = core
        self.auth = auth
        self._sessions: Supervisor | None = None
        self._connections: Supervisor | None = None
        self._endpoints: dict[str, ActorRef[Any, Any]] = {}
        self._client_nursery: trio.Nursery | None = None
        self._expectations = ExpectationSweeper(self)

    @property
    def core(self) -> HubCore:
        return self._core

    @property
    def dead_letters(self) -> DeadLetterBuffer:
        """Poison envelopes and undeliverable messages, with their reasons."""
        return self._core.dead_letters

    async def _call(self, msg: H.HubMsg) -> Any:
        assert self._core.hub_ref is not None
        result = await self._core.hub_ref.ask(msg)
        if isinstance(result, Failed):
            raise result.error
        return result

    # -- registry ----------------------------------------------------------------------------

    async def register(
        self,
        passport: Passport,
        resume: Resume | None = None,
        *,
        skill_md: str | None = None,
        rule: Rule | None = None,
    ) -> Passport:
        """Register an identity; return its passport stamped with ``agent_id``.

        Raises:
          ProtocolError: the name is taken (the message names the existing id).
          AuthError: the passport's auth scheme is unknown or its claim does not validate.
        """
        msg = H.Register(passport=passport, resume=resume or Resume(), skill_md=skill_md, rule=rule)
        stamped: Passport = await self._call(msg)
        return stamped

    async def unregister(self, agent_id: str) -> None:
        """Forget an identity; its sessions and their WALs are kept. NotFoundError if unknown."""
        await self._call(H.Unregister(agent_id))

    async def get_agent(self, name_or_id: str) -> Passport:
        await trio.lowlevel.checkpoint()
        return self._core.registry.resolve(name_or_id).passport

    async def get_resume(self, agent_id: str) -> Resume:
        await trio.lowlevel.checkpoint()
        record = self._core.registry.agents.get(agent_id)
        if record is None:
            raise NotFoundError(f"resume not found: {agent_id!r}")
        return record.resume

    async def get_skill(self, agent_id: str) -> str | None:
        await trio.lowlevel.checkpoint()
        record = self._core.registry.agents.get(agent_id)
        return record.skill_md if record is not None else None

    async def get_rule(self, agent_id: str) -> Rule:
        await trio.lowlevel.checkpoint()
        return self._core.registry.record(agent_id).rule

    async def set_resume(self, agent_id: str, resume: Resume) -> None:
        await self._call(H.SetResume(agent_id, resume))

    async def set_skill(self, agent_id: str, skill_md: str | None) -> None:
        await self._call(H.SetSkill(agent_id, skill_md))

    async def set_rule(self, agent_id: str, rule: Rule) -> None:
        await self._call(H.SetRule(agent_id, rule))

    async def list_agents(
        self,
        *,
        capability: str | None = None,
        query: str | None = None,
        kind: str | None = None,
        sort_by: str | None = None,
        limit: int = 50,
    ) -> list[Passport]:
        await trio.lowlevel.checkpoint()
        return self._core.registry.search(
            capability=capability, query=query, kind=kind, sort_by=sort_by, limit=limit
        )

    def agents_with_capability(self, capability: str) -> list[str]:
        return self._core.registry.with_capability(capability)

    def name_for(self, agent_id: str) -> str:
        return self._core.registry.name_for(agent_id)

    def find_agent_id(self, name: str) -> str | None:
        return self._core.registry.find_agent_id(name)

    async def find_agent(self, name: str) -> str | None:
        """:meth:`find_agent_id`, awaitable (the same call as on a remote hub)."""
        await trio.lowlevel.checkpoint()
        return self._core.registry.find_agent_id(name)

    async def learn_names(self, agent_ids: Sequence[str]) -> None:
        """Nothing to fetch in process (a remote hub caches names for ``name_for``)."""
        await trio.lowlevel.checkpoint()

    async def record_observation(
        self,
        *,
        owner_id: str,
        capability: str,
        outcome: TaskState,
        latency_ms: int | None = None,
        task_id: str | None = None,
    ) -> None:
        await self._call(
            H.RecordObservation(
                owner_id=owner_id,
                capability=capability,
                outcome=outcome,
                latency_ms=latency_ms,
                task_id=task_id,
            )
        )

    # -- session types -----------------------------------------------------------------------

    def register_session_type(self, stype: AnySessionType) -> None:
        """Add (or replace) a session type; existing sessions keep the type they started with."""
        self._core.session_types[(stype.name, stype.version)] = stype

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

        Raises:
          NotFoundError: the creator, a participant or the session type is unknown.
          AccessDeniedError: a rule forbids it (inbound globs, session types, caps).
          ProtocolError: bad participants or knobs, an invite was rejected, or the acks did
            not arrive within ``invite_ack_timeout`` (the session is then CLOSED).
        """
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
                f"session {sid} was not opened: invite rejected by {', '.join(md.rejected_by)}"
            )
        if md.close_reason == "invite_timeout":
            raise ProtocolError(
                f"session {sid} was not opened: no ack within "
                f"{self._core.config.invite_ack_timeout}s from {', '.join(md.pending_acks)}"
            )
        raise ProtocolError(f"session {sid} was not opened: {md.close_reason or md.state.value}")

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
          StoreError: the store refused the close notice; the session stays as it was.
          ProtocolError: also when the session crashed twice while closing.
        """
        entry = self._core.directory.get(session_id)
        if entry.metadata.state.terminal:
            await trio.lowlevel.checkpoint()
            return entry.metadata
        return await self._end_session(session_id, EndSession(reason or "explicit_close"))

    async def post_envelope(self, envelope: Envelope) -> str:
        """Validate, stamp and durably append ``envelope``; return its ``envelope_id``.

        The caller's object is not changed. A repeat (same ``idempotency_key``, or the same
        sender answering the same ``causation_id`` with the same event type) returns the
        original id and appends nothing.

        Raises:
          NotFoundError, AccessDeniedError, RateLimited, InboxFull, ProtocolError: the post
            was refused and the WAL is untouched.
          StoreError: the store failed; nothing was appended.
        """
        return (await self.post(envelope)).envelope_id

    async def post(self, envelope: Envelope) -> Accepted:
        """Like :meth:`post_envelope`, returning the ``envelope_id``, ``seq`` and ``duplicate``."""
        if not isinstance(envelope, Envelope):
            raise TypeError(f"post_envelope takes an Envelope, got {type(envelope).__name__}")
        core = self._core
        sid = envelope.session_id
        if envelope.sender_id not in core.registry:  # checked first (reference §1.3-C)
            raise NotFoundError(f"sender not registered: {envelope.sender_id!r}")
        entry = core.directory.get(sid)
        # The id is the post's identity across a retry; the session actor stamps it (with
        # seq and created_at) on its own copy, so the caller's envelope is never changed.
        envelope_id = core.new_id()
        floor = entry.last_seq  # if this post gets appended, it is after this seq
        crash: ActorDead | None = None
        crashes = 0
        for attempt in (1, 2):
            if crash is not None and (entry.metadata.state.terminal or entry.given_up):
                break  # the session will not be asked again: the WAL settles the post
            if entry.metadata.state.terminal:
                # A repeat of a post that was accepted (and maybe closed the session, as a
                # consulting reply does) gets its original id back: exactly once wins over
                # the reference's order of checks (terminal before dedup).
                earlier = await self._accepted_before(entry, envelope, None)
                if earlier is not None:
                    return earlier
                self._refuse_if_terminal(entry, envelope)
            ref = await self._running(entry)
            try:
                result = await ref.ask(Post(envelope, envelope_id, attempt, floor))
            except ActorDead as exc:
                crash = exc
                crashes += 1
                continue
            if isinstance(result, Failed):
                raise result.error
            accepted: Accepted = result
            return accepted
        assert crash is not None
        return await self._after_crashes(entry, envelope, envelope_id, floor, crash, crashes)

    async def _after_crashes(
        self,
        entry: SessionEntry,
        envelope: Envelope,
        envelope_id: str,
        floor: int,
        crash: ActorDead,
        crashes: int,
    ) -> Accepted:
        """Settle a post whose session crashed and will not be asked again.

        A crash after the append leaves the post durable: the WAL after ``floor`` says
        whether it is there. If it is, it was accepted; if not, it is refused, as poison
        when it crashed the session twice.
        """
        core = self._core
        sid = entry.session_id
        try:
            tail = await core.store.read(sid, since=floor)
        except StoreError as exc:
            raise StoreError(
                f"envelope {envelope_id} crashed session {sid}, and whether it was "
                f"appended is unknown (the WAL could not be read: {exc})"
            ) from exc
        for old in tail:
            if old.envelope_id == envelope_id:
                return Accepted(old.envelope_id, old.seq)  # this very post: not a repeat
        if entry.metadata.state.terminal:
            earlier = await self._accepted_before(entry, envelope, None)
            if earlier is not None:
                return earlier
            self._refuse_if_terminal(entry, envelope)
        if crashes < 2:  # its first crash was the session's last: not proven poison
            raise ProtocolError(f"session {sid} crashed too often and is being closed")
        core.counters.poison += 1
        poison = attrs.evolve(envelope, envelope_id=envelope_id, seq=0, created_at="")
        core.dead_letters(DeadLetter(message=poison, reason="poison", mailbox=sid))
        core.audit("poison_envelope", session_id=sid, envelope_id=envelope_id)
        raise ProtocolError(
            f"envelope {envelope_id} ({envelope.event_type} from {envelope.sender_id}) "
            f"crashed session {sid} twice; rejected as poison"
        ) from crash

    async def _accepted_before(
        self, entry: SessionEntry, envelope: Envelope, envelope_id: str | None
    ) -> Accepted | None:
        keys = tuple(dedup_keys(envelope))
        if not keys and envelope_id is None:
            return None
        found = await self._call(H.FindAccepted(entry.session_id, keys, envelope_id))
        if found is None:
            return None
        self._core.counters.duplicates += 1
        return Accepted(found[0], found[1], duplicate=True)

    def _refuse_if_terminal(self, entry: SessionEntry, env: Envelope) -> None:
        """Refuse a post into a terminal session (it has no actor) with the error its actor
        would give, in the same order of checks."""
        md = entry.metadata
        if not md.state.terminal:
            return
        sender, rule = admit_sender(self._core, md, env)
        admit_addressing(self._core, md, env, sender, rule)
        raise ProtocolError(
            f"session {md.session_id} is {md.state.value} ({md.close_reason or 'no reason'})"
        )

    async def read_wal(
        self, session_id: str, *, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        """The session's envelopes with ``since < seq <= until``, in order."""
        wal: list[Envelope] = await self._call(H.ReadWal(session_id, since, until))
        return wal

    def can_send(self, session_id: str, sender_id: str, *, event_type: str | None = None) -> bool:
        """Whether the session type would accept a post of ``event_type`` from the sender now.

        A turn probe: it reads the last published state and checks membership, ACTIVE and
        the session type's rules, not rates or inboxes.
        """
        entry = self._core.directory.sessions.get(session_id)
        if entry is None or entry.stype is None or entry.state is None:
            return False
        md = entry.metadata
        if md.state is not SessionState.ACTIVE or md.role_of(sender_id) is None:
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
            if turn is not None and turn.agent_id == agent_id:
                turns.append(
                    PendingTurn(
                        session_id=md.session_id,
                        triggering_envelope_id=turn.triggering_envelope_id,
                    )
                )
        await trio.lowlevel.checkpoint()
        return turns

    async def find_envelope_by_causation(
        self, session_id: str, *, sender_id: str, causation_id: str
    ) -> Envelope | None:
        """The envelope ``sender_id`` posted in answer to ``causation_id`` (any event type)."""
        entry = self._core.directory.get(session_id)
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
        for key, (_, seq) in entry.dedup.items():
            if key.startswith(prefix):
                found = await self.read_wal(session_id, since=seq - 1, until=seq)
                return found[0] if found else None
        return None

    async def report_turn_failure(
        self, *, session_id: str, agent_id: str, envelope_id: str, exc: BaseException
    ) -> None:
        """Record that an agent's turn raised (audit ``turn_failed``); no reply is invented."""
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
        self._core.audit(
            "turn_failed",
            session_id=session_id,
            agent_id=agent_id,
            envelope_id=envelope_id,
            exc_type=exc_type,
            exc_message=exc_message,
        )

    # -- sessions' actors --------------------------------------------------------------------

    async def _running(self, entry: SessionEntry) -> ActorRef[Any, Any]:
        """The session's actor, started (recovered from the store) if it is not running.

        A running session with nobody queued at its gate is returned at once, without a
        checkpoint, so the caller's message enters the mailbox in call order. Otherwise the
        caller queues at the gate (FIFO) while the actor passivates or starts; see
        ``_passivation.py``. Every call counts as a use of the session.
        """
        if entry.gate is None and entry.running:
            assert entry.ref is not None
            self._core.directory.touch(entry, trio.current_time())
            return entry.ref
        gate = entry.gate = entry.gate or Gate()
        gate.users += 1
        try:
            async with gate.lock:
                return await self._start_session(entry, gate)
        finally:
            gate.users -= 1
            if not gate.users and gate.passivating is None and entry.gate is gate:
                entry.gate = None

    async def _start_session(self, entry: SessionEntry, gate: Gate) -> ActorRef[Any, Any]:
        core = self._core
        while True:
            if gate.passivating is not None:
                await gate.passivating.wait()
                continue
            if entry.running:
                assert entry.ref is not None
                core.directory.touch(entry, trio.current_time())
                return entry.ref
            if entry.given_up:
                # close_crashed is on its way; a new actor would race its close notice.
                raise ProtocolError(
                    f"session {entry.session_id} crashed too often and is being closed"
                )
            md = entry.metadata
            if md.state.terminal:
                # It ended while this caller queued at the gate (a close, a give-up).
                reason = md.close_reason or "no reason"
                raise ProtocolError(f"session {md.session_id} is {md.state.value} ({reason})")
            assert self._sessions is not None, "the hub is not running"
            try:
                entry.ref = await self._sessions.start_child(self._session_spec(entry))
            except StoreError:
                raise
            except Exception as exc:
                # Its recovery failed (a session type that cannot fold its WAL, ...): this
                # session is unusable until that is fixed; nothing else is affected.
                log.error("session %s could not be started", entry.session_id, exc_info=exc)
                self._core.audit(
                    "session_recovery_failed", session_id=entry.session_id, error=repr(exc)
                )
                raise ProtocolError(
                    f"session {entry.session_id} could not be started from its WAL: {exc!r}"
                ) from exc
            if entry.passivated:
                entry.passivated = False
                core.counters.rehydrations += 1

    def _session_spec(self, entry: SessionEntry) -> ChildSpec:
        core = self._core
        sid = entry.session_id
        incarnations = 0

        def make() -> SessionActor:
            nonlocal incarnations
            incarnations += 1
            return SessionActor(core, sid, restarted=incarnations > 1)

        return ChildSpec(sid, make, restart="transient", shutdown_s=5.0)

    async def _ask_session(self, session_id: str, msg: Any) -> Any:
        """Ask the session actor, once more if it crashed; Failed(ProtocolError) if it crashed
        twice (the metadata if it ended meanwhile)."""
        entry = self._core.directory.get(session_id)
        crash: ActorDead | None = None
        for _ in range(2):
            try:
                return await (await self._running(entry)).ask(msg)
            except ActorDead as exc:
                if entry.metadata.state.terminal:
                    return entry.metadata
                crash = exc
        error = ProtocolError(
            f"session {session_id} crashed twice handling {type(msg).__name__}; it is "
            f"{entry.metadata.state.value}"
        )
        error.__cause__ = crash
        return Failed(error)

    async def _end_session(self, session_id: str, msg: EndSession) -> SessionMetadata:
        """Ask the session to end; raise the StoreError that kept it from ending, if any."""
        result = await self._ask_session(session_id, msg)
        if isinstance(result, Failed):
            raise result.error
        md: SessionMetadata = result
        return md

    async def close_crashed(self, session_id: str, crash: BaseException | None) -> None:
        """Close a session whose actor crashed too often (no actor is left to do it)."""
        core = self._core
        entry = core.directory.get(session_id)
        core.counters.sessions_crashed += 1
        core.audit("session_crashed", session_id=session_id, error=repr(crash))
        if entry.metadata.state.terminal:
            return
        delay = CLOSE_RETRY_S
        while True:
            try:
                await self._close_crashed(entry)
            except (StoreError, ActorDead) as exc:
                # Runs in the session supervisor's nursery: raising would take every session
                # down. The session stays refused (``given_up``) until its close lands.
                log.error("closing crashed session %s failed (retrying): %s", session_id, exc)
            else:
                return
            await trio.sleep(delay)
            delay = min(delay * 2, CLOSE_RETRY_MAX_S)

    async def _close_crashed(self, entry: SessionEntry) -> None:
        core = self._core
        session_id = entry.session_id
        md = entry.metadata
        if core.hub_ref is not None:
            await core.hub_ref.ask(H.ExpireSessionTasks(session_id))
        last = await core.store.last_seq(session_id)
        from ..model import EV_SESSION_CLOSED, EV_SESSION_EXPIRED

        tail = await core.store.read(session_id, since=max(0, last - 1))
        stored = await core.store.get_session(session_id)
        if tail and tail[-1].event_type in (EV_SESSION_CLOSED, EV_SESSION_EXPIRED) and stored:
            # An earlier attempt's append landed although it reported a failure.
            notice, md = tail[-1], stored
        else:
            md = attrs.evolve(
                md, state=SessionState.CLOSED, close_reason="crashed", closed_at=core.now_iso()
            )
            notice = Envelope(
                session_id=session_id,
                sender_id=md.creator_id,
                event_type=EV_SESSION_CLOSED,
                event_data={"reason": "crashed", "session_id": session_id},
                audience=tuple(md.participant_ids()),
                envelope_id=core.new_id(),
                seq=last + 1,
                created_at=core.now_iso(),
            )
            await core.store.append(session_id, [notice], metadata=md)
        # The actor died without publishing what it folded last: no state is better than a
        # stale one (a closed session's state is None after a hub restart too).
        entry.publish(md, None, notice.seq)
        core.directory.ended(md)
        from ._delivery import dispatch

        dispatch(core, md, notice)
        core.audit("session_closed", session_id=session_id, reason="crashed")

    async def expire_due(self) -> None:
        """Expire sessions and tasks past their TTL; time out PENDING handshakes (the sweeper)."""
        core = self._core
        now = core.now()
        for entry in list(core.directory.sessions.values()):
            md = entry.metadata
            if md.state.terminal:
                continue
            try:
                if md.expires_at is not None and parse_iso(md.expires_at) <= now:
                    await self._end_session(
                        md.session_id, EndSession("ttl_expired", SessionState.EXPIRED)
                    )
                elif (
                    md.state is SessionState.PENDING
                    and md.handshake_deadline is not None
                    and parse_iso(md.handshake_deadline) <= now
                ):
                    await self._end_session(
                        md.session_id, EndSession("invite_timeout", only_if_pending=True)
                    )
            except (NotFoundError, ProtocolError, StoreError) as exc:
                log.warning("expiring session %s failed: %s", md.session_id, exc)
        await self._call(H.ExpireTasks(now))

    async def check_expectations(self) -> list[ExpectationViolation]:
        """Evaluate every live session's expectations now and run the new violations' handlers.

        The expectation sweeper's tick (every ``expectation_sweep_interval`` seconds); each
        violation fires once per violator and episode, also across restarts (see
        ``troupe.hub._expectations``).

        Returns:
            The violations that fired.
        """
        return await self._expectations.check()

    # -- tasks -------------------------------------------------------------------------------

    async def observe_task(self, metadata: TaskMetadata) -> None:
        await self._call(H.ObserveTask(metadata))

    async def update_task(
        self,
        task_id: str,
        *,
        state: TaskState | None = None,
        progress: dict[str, object] | None = None,
        result: object | None = None,
        error: str | None = None,
    ) -> None:
        await self._call(
            H.UpdateTask(
                task_id=task_id,
                state=state,
                progress=dict(progress) if progress is not None else None,
                result=result,
                error=error,
            )
        )

    async def get_task(self, task_id: str) -> TaskMetadata:
        await trio.lowlevel.checkpoint()
        task = self._core.tasks.get(task_id)
        if task is None:
            raise NotFoundError(f"task not found: {task_id!r}")
        return task

    async def list_tasks(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        state: TaskState | None = None,
        limit: int = 50,
    ) -> list[TaskMetadata]:
        await trio.lowlevel.checkpoint()
        out: list[TaskMetadata] = []
        for task in self._core.tasks.values():
            if len(out) >= limit:
                break
            if agent_id is not None and task.owner_id != agent_id:
                continue
            if session_id is not None and task.session_id != session_id:
                continue
            if state is not None and task.state is not state:
                continue
            out.append(task)
        return out

    async def checkpoint_task(self, task_id: str, state: dict[str, Any]) -> None:
        await self._call(H.SaveCheckpoint(task_id, state))

    async def read_task_checkpoint(self, task_id: str) -> dict[str, Any] | None:
        data: dict[str, Any] | None = await self._call(H.LoadCheckpoint(task_id))
        return data

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
        self, endpoint_id: str, agent_id: str, *, since: dict[str, int] | None = None
    ) -> None:
        """Route ``agent_id``'s deliveries to this endpoint (taking them from any other).

        With ``since`` not None, replay what the agent has not acked (see ``HelloFrame``).
        """
        conn = self._endpoints.get(endpoint_id)
        if conn is None:
            raise NotFoundError(f"endpoint not attached: {endpoint_id!r}")
        self._core.registry.record(agent_id)
        result = await conn.ask(Bind(agent_id, since))
        if isinstance(result, Failed):
            raise result.error

    async def host(self, fn: Any, *args: Any) -> Any:
        """Run ``await nursery.start(fn, *args)`` in the hub's nursery for in-process clients.

        In-process clients (``HubClient(LocalLink(hub))``) keep their receive loops here, so
        they need no nursery of their own and end with the hub at the latest.
        """
        assert self._client_nursery is not None, "the hub is not running"
        return await self._client_nursery.start(fn, *args)

    # -- observability -----------------------------------------------------------------------

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
        records: list[dict[str, Any]] = await self._core.audit_ref.ask(ReadAudit(since, limit))
        return records


def _high_water(ref: ActorRef[Any, Any] | None) -> int:
    return ref.mailbox.statistics().high_water if ref is not None else 0
