"""The hub handle's session machinery: posting with retries, and the sessions' actors.

Posts go to the session's actor, started (recovered from the store) when it is not running;
a post whose session crashed is retried once, then settled from the WAL, or refused as
poison. Sessions that crash too often are closed here, as no actor is left to do it.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio

from .._errors import ActorDead, NetworkError, NotFoundError, ProtocolError, StoreError
from ..actors import ActorRef
from ..mailbox import DeadLetter
from ..model import Envelope, SessionMetadata, SessionState, check_envelope
from ..model._convert import is_due
from ..model._lifecycle import SessionEvent, admit, next_state, post_event
from ..store import dedup_keys
from ..supervisors import ChildSpec
from . import _hub_messages as H
from ._core import Failed
from ._directory import Gate, SessionEntry
from ._expectations import ExpectationViolation
from ._hub_base import HubBase
from ._session import SessionActor, expire_tasks_of
from ._session_parts import (
    Accepted,
    EndSession,
    Post,
    admit_addressing,
    admit_sender,
)

log = logging.getLogger("troupe.hub")

#: First and longest pause between attempts to close a crashed session the store refused.
CLOSE_RETRY_S = 0.1
CLOSE_RETRY_MAX_S = 5.0


class SessionCalls(HubBase):
    """Posting and the sessions' actors (a part of :class:`~troupe.hub.Hub`)."""

    async def post_envelope(self, envelope: Envelope) -> str:
        """Validate, stamp and durably append ``envelope``; return its ``envelope_id``.

        The caller's object is not changed. A repeat (same ``idempotency_key``, or the same
        sender answering the same ``causation_id`` with the same event type) returns the
        original id and appends nothing.

        Raises:
          NotFoundError, AccessDeniedError, RateLimited, InboxFull, ProtocolError: the post
            was refused and the WAL is untouched.
          DecodeError: a field is not of its type, or ``event_data`` is not JSON data
            (see ``troupe.model.check_envelope``); ``field`` names it.
          StoreError: the store failed; nothing was appended.
        """
        return (await self.post(envelope)).envelope_id

    async def post(self, envelope: Envelope) -> Accepted:
        """Like :meth:`post_envelope`, returning the ``envelope_id``, ``seq`` and ``duplicate``."""
        if not isinstance(envelope, Envelope):
            raise TypeError(f"post_envelope takes an Envelope, got {type(envelope).__name__}")
        try:
            # Before any actor sees it: the one check of the caller's fields, for posts in
            # process and over the wire alike.
            check_envelope(envelope, self._core.config.max_envelope_bytes)
            result = await self._post(envelope)
        except NetworkError as exc:
            # Refused here, not by the session actor (which counts its own refusals): an
            # unknown sender or session, an ended session, one given up on, poison.
            self._core.counters.rejected += 1
            self._core.events.rejected(envelope, exc)
            raise
        if isinstance(result, Failed):
            self._core.events.rejected(envelope, result.error)
            raise result.error
        return result

    async def _post(self, envelope: Envelope) -> Accepted | Failed:
        core = self._core
        sid = envelope.session_id
        if core.stopping:
            raise ProtocolError("the hub is shutting down: no new posts are accepted")
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
            if crash is not None and (
                entry.metadata.state.terminal or entry.given_up or core.stopping
            ):
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
                return result  # refused (and counted) by the session actor
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
        if core.stopping:  # stopped with the hub, not crashed: the post was not appended
            raise ProtocolError(
                f"the hub is shutting down: envelope {envelope_id} was not accepted"
            ) from crash
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
        admit(md.session_id, md.state, md.close_reason, post_event(env.event_type))

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
                ref = await self._sessions.start_child(self._session_spec(entry))
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
            if not entry.metadata.state.terminal:
                entry.ref = ref  # else its recovery found it ended, or ended it: it stops
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

    def audit_crash(self, session_id: str, error: Exception, restarting: bool) -> None:
        """Audit a crash of a session's actor (the session supervisor's ``on_crash``).

        Every crash gets a ``session_actor_crashed`` record, written before the restart (or
        the give-up, ``session_crashed``) it leads to.
        """
        self._core.audit(
            "session_actor_crashed",
            session_id=session_id,
            exc_type=type(error).__name__,
            exc_message=str(error),
            restarting=restarting,
        )

    async def close_crashed(self, session_id: str, crash: BaseException | None) -> None:
        """Close a session whose actor crashed too often (no actor is left to do it)."""
        core = self._core
        entry = core.directory.get(session_id)
        core.counters.sessions_crashed += 1
        core.counters.keep_session_high_water(entry.ref)  # a crashed actor ran no on_stop
        core.audit("session_crashed", session_id=session_id, error=repr(crash))
        if entry.metadata.state.terminal:
            entry.retire()
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
        last = await core.store.last_seq(session_id)
        from ..model import EV_SESSION_CLOSED, EV_SESSION_EXPIRED

        tail = await core.store.read(session_id, since=max(0, last - 1))
        stored = await core.store.get_session(session_id)
        if tail and tail[-1].event_type in (EV_SESSION_CLOSED, EV_SESSION_EXPIRED) and stored:
            # An earlier attempt's append landed although it reported a failure.
            notice, md = tail[-1], stored
        else:
            md = attrs.evolve(
                md,
                state=next_state(md.state, SessionEvent.CLOSE),
                close_reason="crashed",
                closed_at=core.now_iso(),
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
        entry.retire()
        core.directory.ended(md)
        from ._delivery import dispatch

        dispatch(core, md, notice)
        if core.events.subscribers:
            core.events.accepted(notice)
        core.audit("session_closed", session_id=session_id, reason="crashed")
        await expire_tasks_of(core, session_id)

    async def expire_due(self) -> None:
        """Expire sessions and tasks past their TTL; time out PENDING handshakes (the sweeper)."""
        core = self._core
        now = core.now()
        for entry in list(core.directory.sessions.values()):
            md = entry.metadata
            if md.state.terminal:
                continue
            try:
                if md.expires_at is not None and is_due(md.expires_at, now):
                    await self._end_session(
                        md.session_id, EndSession("ttl_expired", SessionState.EXPIRED)
                    )
                elif (
                    md.state is SessionState.PENDING
                    and md.handshake_deadline is not None
                    and is_due(md.handshake_deadline, now)
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
