"""The session supervisor: which session actor serves a session, and what a crash costs.

It runs the hub's ``sessions`` child (a dynamic supervisor of one transient
:class:`SessionActor` per live session) and owns the live half of each directory entry:
``ref``, ``gate``, ``passivated`` and the ``in_use`` order (the published half is the
session actor's). The ``Hub`` handle hands it a checked request; it decides the rest:

- **which actor**: a running session's actor at once, without a checkpoint (so messages
  enter its mailbox in call order); otherwise the caller queues at the entry's gate while
  the actor is started, recovered from snapshot + WAL (``_passivation.py`` has the gate's
  rules). Every use counts as one (``Directory.touch``);
- **restart**: a crashed actor is restarted by the dynamic supervisor (``on_start`` recovers
  from the WAL); one that crashes more than ``session_max_restarts`` times in
  ``session_within_s`` is given up on and its session closed ``crashed`` here (no actor is
  left to do it), retried while the store refuses the close;
- **a post after a crash**: asked again once (same ``envelope_id``, so the restarted actor
  finds it if the first attempt appended it); if the session crashed again, ended, or was
  given up on, the WAL after the post's ``floor`` settles it: accepted if it is there,
  refused otherwise, as poison (dead-lettered, audited) when it crashed the session twice.

A post into an ended session (it has no actor) gets its original id back if it repeats an
accepted one, else the error its actor would have given (``_session.refuse_ended``).

It also opens a session the hub actor created (``open``: the invites, the wait for the acks,
the close when they do not come) and ends those the TTL sweeper finds due (``expire_due``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any, TypeVar

import attrs
import trio

from .._errors import (
    ActorDead,
    NetworkError,
    NotFoundError,
    NotOwner,
    ProtocolError,
    StoreError,
    TroupeError,
)
from ..actors import ActorRef, Message, Refused
from ..api import Accepted
from ..mailbox import DeadLetter
from ..model import (
    EV_SESSION_CLOSED,
    EV_SESSION_EXPIRED,
    Envelope,
    SessionMetadata,
    SessionState,
    is_substantive,
)
from ..model._convert import is_due
from ..model._lifecycle import SessionEvent, next_state
from ..store import dedup_keys
from ..supervisors import ChildSpec, Supervisor, SupervisorStatistics, open_dynamic_supervisor
from . import _hub_messages as H
from ._backpressure import take_room, wait_for_room
from ._core import HubCore
from ._delivery import dispatch
from ._directory import Directory, Gate, SessionEntry
from ._room import TakenRoom
from ._session import SessionActor, expire_tasks_of, refuse_ended
from ._session_parts import EndSession, Post, SendInvites, refuse_taken_key, sender_at

log = logging.getLogger("troupe.hub.sessions")

T = TypeVar("T")

#: First and longest pause between attempts to close a crashed session the store refused.
CLOSE_RETRY_S = 0.1
CLOSE_RETRY_MAX_S = 5.0


class GivenUp(ProtocolError):
    """The session's actor crashed too often and its close as ``crashed`` is on its way:
    no actor is started for a message (its caller sees a ``ProtocolError``)."""


class SessionSupervisor:
    """The hub's ``sessions`` child: session actors started on demand, restarted, given up on."""

    def __init__(self, core: HubCore, directory: Directory) -> None:
        self._core = core
        #: The sessions: this supervisor writes their live fields (ref, gate, in use) and
        #: accounts for a crashed close; ``self.directory`` is its read-only view.
        self.directory = directory
        self._sup: Supervisor | None = None

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Run the dynamic supervisor of session actors (the root supervisor's child)."""
        config = self._core.config
        async with open_dynamic_supervisor(
            config.session_max_restarts,
            config.session_within_s,
            config.session_backoff,
            on_give_up=self._close_crashed,
            name="sessions",
        ) as sup:
            sup.on_crash = self._audit_crash
            sup.on_exit = self._exited
            # A new supervisor (first start, or a restart) has no children yet.
            self._let_all_go()
            self._sup = sup
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                # Its children are stopped: no passivation a crash report left marked (one
                # lost as the supervisor closed) may keep callers waiting at a gate.
                self._let_all_go()

    def _let_all_go(self) -> None:
        """Forget every actor, and reopen every gate a passivation marked."""
        for entry in self.directory.sessions.values():
            entry.ref = None
            if entry.passivating is not None:
                self._reopen(entry)

    def __len__(self) -> int:
        """How many session actors are running."""
        return len(self._sup) if self._sup is not None else 0

    def statistics(self) -> SupervisorStatistics | None:
        return self._sup.statistics() if self._sup is not None else None

    @property
    def supervisor(self) -> Supervisor | None:
        """The running dynamic supervisor of session actors (None before it starts)."""
        return self._sup

    # -- posting -----------------------------------------------------------------------------

    async def post(self, envelope: Envelope) -> Accepted:
        """Post a checked envelope into its session; see the module docstring.

        Raises:
          NetworkError, StoreError: the post was refused (by the session actor, or here:
            an unknown sender or session, an ended session, one given up on, poison).
        """
        core = self._core
        try:
            result = await self._post(envelope)
        except NetworkError as exc:
            # Refused here, not by the session actor (which counts its own refusals).
            core.counters.rejected += 1
            core.events.rejected(envelope, exc)
            raise
        if type(result) is Refused:
            core.events.rejected(envelope, result.error)
            raise result.error
        return result  # type: ignore[return-value]

    async def _post(self, envelope: Envelope) -> Accepted | Refused:
        core = self._core
        sid = envelope.session_id
        if core.stopping:
            raise ProtocolError("the hub is shutting down: no new posts are accepted")
        if envelope.sender_id not in core.registry:  # checked first (reference §1.3-C)
            raise NotFoundError(f"sender not registered: {envelope.sender_id!r}")
        if core.cluster is not None:
            core.cluster.check(sid)  # NotOwner: the caller retries on the shard's owner
        entry = self.directory.get(sid)
        taken: list[str] | None = []
        if is_substantive(envelope.event_type):
            taken = take_room(core, entry.metadata, envelope)
            if taken is None:
                # Backpressure: the poster waits here, in its own task, never the session actor.
                taken = await wait_for_room(core, entry.metadata, envelope)
        if not taken:
            return await self._hand_over(entry, envelope)
        # Until the post is dispatched (the ledger counts it then) or refused, the room it
        # took keeps the posts checked meanwhile from taking it too.
        room = TakenRoom(core.room, taken)
        try:
            return await self._hand_over(entry, envelope, room)
        finally:
            if not room.orphaned:
                room.give_back()  # (else the session actor gives it back)

    async def _hand_over(
        self, entry: SessionEntry, envelope: Envelope, room: TakenRoom | None = None
    ) -> Accepted | Refused:
        """Ask the session's actor to take ``envelope`` (once more if the actor crashed)."""
        core = self._core
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
                refuse_ended(core, entry.metadata, envelope)
            ref = await self.running(entry)
            if room is not None:
                room.handed = False
            answered = False
            try:
                accepted: Accepted = await ref.ask(
                    Post(envelope, envelope_id, attempt, floor, room)
                )
                answered = True
            except ActorDead as exc:
                answered = True
                crash = exc
                crashes += 1
                continue
            except (NetworkError, StoreError) as exc:
                answered = True
                # Refused (and counted) by the session actor: raised by the caller, uncounted.
                return Refused(exc)
            finally:
                if not answered and room is not None:
                    room.poster_left()  # cancelled mid-ask: see TakenRoom
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
            refuse_ended(core, entry.metadata, envelope)
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
        assert self._core.hub_ref is not None
        found = await self._core.hub_ref.ask(H.FindAccepted(entry.session_id, keys, envelope_id))
        if found is None:
            return None
        if envelope.idempotency_key:
            # Another sender's envelope under this key is no original of this post.
            refuse_taken_key(
                envelope, await sender_at(self._core.store, entry.session_id, found[1])
            )
        self._core.counters.duplicates += 1
        return Accepted(found[0], found[1], duplicate=True)

    # -- other asks --------------------------------------------------------------------------

    async def ask(self, session_id: str, msg: Message[T]) -> T | None:
        """Ask the session actor (a ``SessionMsg``), once more if it crashed.

        Returns:
          Its answer; None if it crashed and the session ended meanwhile (nothing answers).

        Raises:
          ProtocolError: it crashed twice.
          Exception: what the actor refused with.
        """
        entry = self.directory.get(session_id)
        crash: ActorDead | None = None
        for _ in range(2):
            try:
                answer: T = await (await self.running(entry)).ask(msg)
            except ActorDead as exc:
                if entry.metadata.state.terminal:
                    return None
                crash = exc
            else:
                return answer
        error = ProtocolError(
            f"session {session_id} crashed twice handling {type(msg).__name__}; it is "
            f"{entry.metadata.state.value}"
        )
        raise error from crash

    async def end(self, session_id: str, msg: EndSession) -> SessionMetadata:
        """Ask the session to end; its metadata after. Raise the StoreError that kept it from
        ending, if any.

        Ending is idempotent: a session that ended meanwhile (the close of a give-up landed
        while this caller queued for its actor) is not an error, its metadata is the answer.
        So is one whose close as ``crashed`` is on its way because an earlier message crashed
        it for good (:class:`GivenUp`, ``_close_crashed`` appending): its caller waits for that
        close, up to ``CLOSE_RETRY_MAX_S``. An end that crashes the session itself is an error.
        """
        try:
            md = await self.ask(session_id, msg)
        except ProtocolError as exc:
            entry = self.directory.get(session_id)
            if isinstance(exc, GivenUp):  # (not this end's own crash: that one is an error)
                with trio.move_on_after(CLOSE_RETRY_MAX_S):
                    await entry.wait_for(lambda md: md.state.terminal)
            if entry.metadata.state.terminal:
                return entry.metadata
            raise
        return md if md is not None else self.directory.get(session_id).metadata

    # -- opening and expiring ----------------------------------------------------------------

    async def open(self, md: SessionMetadata) -> SessionMetadata:
        """Invite the participants of a session the hub actor just created, and wait until
        it is ACTIVE (``required_acks`` acks) or ended; close it if the acks do not come
        within ``invite_ack_timeout``.

        Raises:
          ProtocolError: an invite was rejected, the acks did not come in time, or the
            invites could not all go out (the session is then closed).
          StoreError: the store refused the invites.
        """
        sid = md.session_id
        entry = self.directory.get(sid)
        try:
            await self.ask(sid, SendInvites())
        except (ProtocolError, StoreError, ActorDead):
            # Not every invite may have gone out: nobody should wait for the acks. Closed
            # even if acks made it ACTIVE meanwhile (invites that went out before a crash):
            # its creator is told it was not opened, so nobody would close it. (If this
            # close fails too, a pending session is closed by the sweeper at its handshake
            # deadline; an active one, by its TTL.)
            with contextlib.suppress(TroupeError):
                await self.end(sid, EndSession("invite_failed"))
            raise
        timeout = self._core.config.invite_ack_timeout
        with trio.move_on_after(timeout):
            await entry.wait_for(lambda m: m.state is not SessionState.PENDING)
        md = entry.metadata
        if md.state is SessionState.PENDING:
            md = await self.end(sid, EndSession("invite_timeout", only_if_pending=True))
        if md.state is SessionState.ACTIVE:
            return md
        if md.close_reason == "invite_rejected":
            raise ProtocolError(
                f"session {sid} was not opened: invite rejected by {self._who(md.rejected_by)}"
            )
        if md.close_reason == "invite_timeout":
            raise ProtocolError(
                f"session {sid} was not opened: no ack within "
                f"{timeout}s from {self._who(md.pending_acks)} "
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

    async def expire_due(self, now: float) -> None:
        """End the sessions past their TTL at ``now`` (``expired``), and close those still
        PENDING past their handshake deadline (``invite_timeout``): the TTL sweeper's tick.

        A cluster node ends only the sessions of the shards it serves: each shard's owner
        sweeps it (another node's end would be refused with ``NotOwner``).
        """
        cluster = self._core.cluster
        for entry in list(self.directory.sessions.values()):
            md = entry.metadata
            if md.state.terminal:
                continue
            if cluster is not None:
                try:
                    cluster.check(md.session_id)
                except NotOwner:
                    continue
            try:
                if md.expires_at is not None and is_due(md.expires_at, now):
                    await self.end(md.session_id, EndSession("ttl_expired", SessionState.EXPIRED))
                elif (
                    md.state is SessionState.PENDING
                    and md.handshake_deadline is not None
                    and is_due(md.handshake_deadline, now)
                ):
                    await self.end(
                        md.session_id, EndSession("invite_timeout", only_if_pending=True)
                    )
            except (NotFoundError, ProtocolError, StoreError) as exc:
                log.warning("expiring session %s failed: %s", md.session_id, exc)

    # -- which actor -------------------------------------------------------------------------

    async def running(self, entry: SessionEntry) -> ActorRef[Any, Any]:
        """The session's actor, started (recovered from the store) if it is not running.

        A running session with nobody queued at its gate is returned at once, without a
        checkpoint, so the caller's message enters the mailbox in call order. Otherwise the
        caller queues at the gate (FIFO) while the actor passivates or starts; see
        ``_passivation.py``. Every call counts as a use of the session.
        """
        if entry.gate is None and entry.running:
            assert entry.ref is not None
            self.directory.touch(entry, trio.current_time())
            return entry.ref
        gate = entry.gate = entry.gate or Gate()
        gate.users += 1
        try:
            # A free lock (nobody queued: a session just created, or woken by one caller)
            # is taken without the scheduler step ``acquire`` costs: start_child yields.
            try:
                gate.lock.acquire_nowait()
            except trio.WouldBlock:
                await gate.lock.acquire()
            try:
                return await self._start(entry, gate)
            finally:
                gate.lock.release()
        finally:
            gate.users -= 1
            if not gate.users and gate.passivating is None and entry.gate is gate:
                entry.gate = None

    async def _start(self, entry: SessionEntry, gate: Gate) -> ActorRef[Any, Any]:
        core = self._core
        while True:
            if gate.passivating is not None:
                await gate.passivating.wait()
                continue
            if entry.running:
                assert entry.ref is not None
                self.directory.touch(entry, trio.current_time())
                return entry.ref
            if entry.given_up:
                # _close_crashed is on its way; a new actor would race its close notice.
                raise GivenUp(f"session {entry.session_id} crashed too often and is being closed")
            md = entry.metadata
            if md.state.terminal:
                # It ended while this caller queued at the gate (a close, a give-up).
                reason = md.close_reason or "no reason"
                raise ProtocolError(f"session {md.session_id} is {md.state.value} ({reason})")
            assert self._sup is not None, "the hub is not running"
            # No actor for another node's session (NotOwner), nor one whose shard moved
            # while it started: it may have read a WAL that another node extends now.
            epoch = core.cluster.check(entry.session_id) if core.cluster is not None else 0
            if core.stopping:
                # (A caller let through a gate as the hub closes: not a failed recovery.
                # After the shard check: NotOwner tells a cluster's caller where to go.)
                raise ProtocolError(
                    f"the hub is shutting down: session {entry.session_id} is not started again"
                )
            try:
                ref = await self._sup.start_child(self._spec(entry))
            except StoreError:
                raise
            except Exception as exc:
                # Its recovery failed (a session type that cannot fold its WAL, ...): this
                # session is unusable until that is fixed; nothing else is affected.
                log.error("session %s could not be started", entry.session_id, exc_info=exc)
                core.audit("session_recovery_failed", session_id=entry.session_id, error=repr(exc))
                raise ProtocolError(
                    f"session {entry.session_id} could not be started from its WAL: {exc!r}"
                ) from exc
            if core.cluster is not None and not self._still_served(entry, epoch):
                await self._sup.terminate_child(entry.session_id)
                continue  # its shard moved while it started: again, or refused (NotOwner)
            if not entry.metadata.state.terminal:
                entry.ref = ref  # else its recovery found it ended, or ended it: it stops
            if entry.passivated:
                entry.passivated = False
                core.counters.rehydrations += 1

    def _still_served(self, entry: SessionEntry, epoch: int) -> bool:
        """Whether this cluster node still serves the session under ``epoch``."""
        assert self._core.cluster is not None
        try:
            return self._core.cluster.check(entry.session_id) == epoch
        except StoreError:
            return False

    def _spec(self, entry: SessionEntry) -> ChildSpec:
        core = self._core
        sid = entry.session_id
        incarnations = 0

        def make() -> SessionActor:
            nonlocal incarnations
            incarnations += 1
            return SessionActor(core, sid, self.directory, restarted=incarnations > 1)

        return ChildSpec(sid, make, restart="transient", shutdown_s=5.0)

    async def evict(self, entry: SessionEntry) -> None:
        """Stop the session's actor without its consent (``_passivation.evict``: a cluster
        node lost its shard); withdraw a give-up (the next owner starts it afresh)."""
        if entry.given_up:
            # What to do with the session is the next owner's call now, so its close
            # (``_close_crashed``, retrying) is called off.
            entry.ref = None
            await trio.lowlevel.checkpoint()
            return
        under_way = entry.passivating
        if under_way is not None:
            # A passivation under way stops it itself. Unless it crashes on its way out and
            # is restarted (not through ``_start``'s shard check): then it is stopped here.
            await under_way.wait()
        if entry.ref is None or not entry.ref.alive:
            await trio.lowlevel.checkpoint()
            return
        assert self._sup is not None, "the hub is not running"
        try:
            await self._sup.terminate_child(entry.session_id)
        finally:
            self._let_go(entry)

    def _exited(self, session_id: str) -> None:
        """A session's actor stopped (the dynamic supervisor's ``on_exit``): if it stopped
        because it agreed to passivate, the entry is now a passivated one and its gate
        reopens. Heard before any other task runs: the first caller queued at the gate starts
        the next incarnation (once the supervisor forgot this one, which it has unless it is
        shutting down, when nothing starts)."""
        entry = self.directory.sessions.get(session_id)
        if entry is None or entry.passivating is None:
            return  # it ended, or was stopped by the hub (an eviction, the shutdown)
        self._let_go(entry)
        self._core.counters.passivations += 1
        self._reopen(entry)

    def _reopen(self, entry: SessionEntry) -> None:
        """The passivation marked on the entry's gate is over: let its callers through."""
        gate = entry.gate
        assert gate is not None
        assert gate.passivating is not None
        stopped, gate.passivating = gate.passivating, None
        stopped.set()
        if not gate.users:
            entry.gate = None

    def _let_go(self, entry: SessionEntry) -> None:
        """The entry of a stopped actor: as a passivated one (the next use starts it)."""
        entry.ref = None
        entry.dedup = None
        entry.passivated = True
        self.directory.release(entry)

    # -- crashes -----------------------------------------------------------------------------

    def _audit_crash(self, session_id: str, error: Exception, restarting: bool) -> None:
        """Audit a crash of a session's actor (the dynamic supervisor's ``on_crash``).

        Every crash gets a ``session_actor_crashed`` record, written before the restart (or
        the give-up, ``session_crashed``) it leads to. An actor that crashed while it
        stopped to passivate is not passivated: its gate reopens, and its callers find it
        restarted (or given up on).
        """
        entry = self.directory.sessions.get(session_id)
        if entry is not None and entry.passivating is not None:
            self._reopen(entry)
        self._core.audit(
            "session_actor_crashed",
            session_id=session_id,
            exc_type=type(error).__name__,
            exc_message=str(error),
            restarting=restarting,
        )

    async def _close_crashed(self, session_id: str, crash: BaseException | None) -> None:
        """Close a session whose actor crashed too often (the dynamic supervisor's
        ``on_give_up``: no actor is left to do it)."""
        core = self._core
        entry = self.directory.get(session_id)
        core.counters.sessions_crashed += 1
        core.counters.keep_session_high_water(entry.ref)  # a crashed actor ran no on_stop
        core.audit("session_crashed", session_id=session_id, error=repr(crash))
        if entry.metadata.state.terminal:
            entry.retire()
            return
        delay = CLOSE_RETRY_S
        while True:
            if not entry.given_up:
                return  # the give-up was withdrawn: a cluster node let the session's shard go
            try:
                await self._append_close(entry)
            except (StoreError, ActorDead) as exc:
                # Runs in the dynamic supervisor's nursery: raising would take every
                # session down. The session stays refused (``given_up``) until its close
                # lands.
                log.error("closing crashed session %s failed (retrying): %s", session_id, exc)
            else:
                return
            await trio.sleep(delay)
            delay = min(delay * 2, CLOSE_RETRY_MAX_S)

    async def _append_close(self, entry: SessionEntry) -> None:
        core = self._core
        session_id = entry.session_id
        md = entry.metadata
        last = await core.store.last_seq(session_id)
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
        self.directory.ended(md)
        dispatch(core, md, notice)
        if core.events.subscribers:
            core.events.accepted(notice)
        core.audit("session_closed", session_id=session_id, reason="crashed")
        await expire_tasks_of(core, session_id)
