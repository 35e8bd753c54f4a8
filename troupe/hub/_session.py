"""The session actor: the only writer of one session's WAL, state and metadata.

A post, in order (reference §1.3-C, rejected posts leave the WAL untouched):

1. the sender is registered and a participant; the audience names participants only;
2. the sender's ``outbound_to`` covers an explicit audience; ``depth`` is within its limit;
3. the lifecycle table takes the post (``model._lifecycle.admit``): nothing into an ended
   session, a turn only while ACTIVE, a reject only while PENDING;
4. a repeat of an accepted post (same ``idempotency_key``, or same sender + ``causation_id``
   + event type) returns the original and appends nothing (keys starting ``troupe:`` are
   the hub's); the actor keeps only its latest ``dedup_window`` keys, and asks the store's
   index about a key it does not hold once it has let older ones go;
5. substantive events: ``EV_EXPECTATION_VIOLATED`` only from the hub (``HubPost``), the
   sender's rate, every recipient's inbox, the session type's ``validate_send``; protocol
   events: the handshake rules;
6. stamp ``envelope_id`` / ``seq`` / ``created_at``, append (durable), fold (and note it in
   the activity summary the expectation sweeper reads), publish, dispatch, then any move
   the post causes (activation, close) and a snapshot (with that summary) when due.

Recovery (``on_start``): latest snapshot + fold of the WAL after it (the activity summary
likewise: saved with the snapshot, then noted from the tail), then finish what a crash
interrupted (an activation, a close) and, after a crash, dispatch the last few envelopes
again (connections drop the duplicates by ``seq``). Rehydration after a passivation is the
same recovery, without the re-dispatch (see ``_passivation.py``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, cast

import attrs
import trio

from .. import _tracing
from .._errors import IllegalTransition, NetworkError, NotOwner, ProtocolError, StoreError
from ..actors import Actor, Refused
from ..api import Accepted
from ..model import (
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_CHANNEL_INVITE_REJECT,
    EV_EXPECTATION_VIOLATED,
    EV_SESSION_CLOSED,
    EV_SESSION_EXPIRED,
    EV_SESSION_OPENED,
    Envelope,
    SessionMetadata,
    SessionState,
    is_substantive,
)
from ..model._lifecycle import SessionEvent, admit, ending_event, next_state, post_event
from ..session_types import AuctionPhase, AuctionState, Transition, select_winner
from ..store import DuplicateKey, dedup_keys
from ..store._protocol import KEY_PREFIX
from ._activity import Activity, forget_activity, load_activity, save_activity
from ._arbiters import AWARD_KEY, bids_of
from ._core import HubCore
from ._delivery import catch_up_after_ack, dispatch, recipients_of
from ._directory import DedupWindow, Directory, Gate
from ._room import TakenRoom
from ._session_parts import (
    HubPost,
    Passivate,
    Post,
    SendInvites,
    SessionMsg,
    _metadata_after,
    admit_addressing,
    admit_sender,
    invitees_of,
    quorum_reached,
    refuse_taken_key,
    sender_at,
)

log = logging.getLogger("troupe.hub.sessions")

HUB_ONLY = frozenset({EV_CHANNEL_INVITE, EV_SESSION_OPENED, EV_SESSION_CLOSED, EV_SESSION_EXPIRED})
REJECTED = "invite_rejected"
#: The prefix of idempotency keys only the hub's own posts may carry.
HUB_KEYS = "troupe:"
#: How many of the last envelopes a restarted session re-dispatches and checks retries against.
RECENT = 4


class OutOfSync(Exception):
    """Raised (crashing the session actor) when it cannot tell what its WAL holds."""


class SessionActor(Actor[SessionMsg, Any]):
    """One live session; started on demand by the hub under the session supervisor."""

    def __init__(
        self, core: HubCore, session_id: str, directory: Directory, *, restarted: bool = False
    ) -> None:
        self.core = core
        #: The sessions, to account for this one's close in (its supervisor's table).
        self.directory = directory
        self.sid = session_id
        self.restarted = restarted
        self.entry = core.directory.get(session_id)
        self.metadata = self.entry.metadata
        self.stype = self.entry.stype
        self.state: Any = None
        self.last_seq = 0
        self.snapshot_seq = 0
        self.dedup = DedupWindow(core.config.dedup_window)
        self.recent: list[Envelope] = []
        self.stopping = False
        #: The store holds nothing of this session yet: its next append saves the metadata
        #: too (the hub actor does not save a session it creates; see ``_hub_actor``).
        self.unsaved = False
        #: What the expectation evaluators read (published on the directory entry).
        self.activity = Activity()
        self.participant_ids = self.metadata.participant_ids()
        #: An auction's arbiter knob: the hub picks its winner (``_arbiters``).
        self.arbiter = "arbiter" in self.metadata.knobs and self.metadata.manifest_type == "auction"

    # -- recovery --------------------------------------------------------------------------

    async def on_start(self) -> None:
        fresh, self.entry.fresh = self.entry.fresh and not self.restarted, False
        if fresh:
            # Just created: the store holds nothing of it yet (its first append saves the
            # metadata), so a recovery would read nothing. Four reads fewer per session.
            self.unsaved = True
            if self.stype is not None:
                self.state = self.stype.initial_state(self.metadata)
            self.entry.dedup = self.dedup
            self._publish()
            return
        store = self.core.store
        # Go on from what was written, not from what was published: a crash (or a start
        # cancelled by its caller) between an append and its publish leaves the entry
        # behind the store (an ack's pending_acks, an OPENED or CLOSED already appended).
        stored = await store.get_session(self.sid)
        # A session whose first append never landed (a crash or a store failure before it).
        self.unsaved = stored is None
        if stored is not None:
            if stored.state.terminal and not self.metadata.state.terminal:
                self.directory.ended(stored)  # its close was never accounted for
            self.metadata = stored
        snapshot = await store.load_snapshot(self.sid) if self.stype is not None else None
        if self.stype is None:
            self.state = None
            since = 0
        elif snapshot is not None:
            self.state = self.stype.load_state(snapshot.state)
            since = snapshot.seq
        else:
            self.state = self.stype.initial_state(self.metadata)
            since = 0
        tail = await store.read(self.sid, since=since)
        self.activity = await load_activity(store, self.metadata, since)
        stype = self.stype
        last_substantive: Envelope | None = None
        for env in tail:
            self.activity.note(env, self.participant_ids)
            if stype is not None and is_substantive(env.event_type):
                self.state = stype.fold(env, self.state)
                last_substantive = env
        self.last_seq = tail[-1].seq if tail else since
        self.snapshot_seq = since
        if len(tail) < RECENT and self.last_seq > len(tail):
            tail = await store.read(self.sid, since=max(0, self.last_seq - RECENT))
        self.recent = tail[-RECENT:]
        # Only the latest keys: older ones are answered from the store's index on demand.
        # The answers' keys, and the idempotency keys of the last ``size`` envelopes (the
        # store keeps those with the WAL), in seq order: the window keeps the newest, and
        # is not complete once it let one go (or the store has older idempotency keys).
        size = self.core.config.dedup_window
        answers = await store.recent_dedup(self.sid, size + 1)
        keyed, older = await store.idempotency_keys(self.sid, max(0, self.last_seq - size))
        self.dedup = DedupWindow(size, complete=not older)
        for key, envelope_id, seq in sorted([*answers, *keyed], key=lambda found: found[2]):
            self.dedup.load(key, (envelope_id, seq))
        self.entry.dedup = self.dedup
        self._publish()
        if self.restarted:
            # Before anything new is appended: connections drop what they already have by
            # seq, so a re-dispatch that came after a newer envelope would be lost.
            for env in self.recent:
                if env.event_type not in (EV_CHANNEL_INVITE_ACK, EV_CHANNEL_INVITE_REJECT):
                    dispatch(self.core, self.metadata, env, redelivery=True)
        if self.restarted:
            self.core.audit("session_actor_restarted", session_id=self.sid, last_seq=self.last_seq)
        await self._finish_interrupted(last_substantive)
        if self.metadata.state.terminal:
            # It had ended, or its recovery just ended it: nobody asks an ended session,
            # so no later message would stop it (from inside: only queues the stop).
            await self.ref.stop()

    async def _finish_interrupted(self, last_substantive: Envelope | None) -> None:
        md = self.metadata
        if md.state is SessionState.PENDING:
            if md.rejected_by:
                await self._move(SessionState.CLOSED, REJECTED)
            elif quorum_reached(md) and self.last_seq > 0:
                await self._activate()
        elif (
            md.state is SessionState.ACTIVE
            and last_substantive is not None
            and self.stype is not None
        ):
            move = self.stype.on_accepted(md, last_substantive, self.state)
            if move is not None:
                await self._move_asked(move)
            elif self.arbiter:
                await award_if_due(self)

    # -- messages --------------------------------------------------------------------------

    async def handle(self, msg: SessionMsg) -> Any:
        if isinstance(msg, Post):
            tracer = _tracing.ACTIVE
            if tracer is None:
                result: Any = await self._post_msg(msg, msg.envelope)
            else:
                with tracer.hub_post(msg.envelope) as traced:
                    result = traced.done(await self._post_msg(msg, traced.envelope))
        elif isinstance(msg, HubPost):
            try:
                result = await self._post(msg.envelope, 1, internal=True)
            except NetworkError as exc:
                result = Refused(exc)
        elif isinstance(msg, SendInvites):
            result = await self._send_invites()
        elif isinstance(msg, Passivate):
            result = await prepare_to_passivate(self, msg)
        else:
            if msg.only_if_pending and self.metadata.state is not SessionState.PENDING:
                result = self.metadata
            else:
                try:
                    result = await self._move(msg.state, msg.reason or "explicit_close")
                except StoreError as exc:
                    # Nothing was written (see _append): the session goes on as it was.
                    result = Refused(exc)
        if self.stopping:
            await self.ref.stop()  # from inside: only queues the stop, after this reply
        return result

    async def _post_msg(self, msg: Post, envelope: Envelope) -> Any:
        room = msg.room
        if room is not None:
            if room.abandoned:
                # Its poster was cancelled before this actor started on it and gave back
                # its room: taken now, it could land without one. No effect, as a cancel.
                self.core.counters.rejected += 1
                return Refused(ProtocolError("the post was cancelled before it was taken"))
            room.handed = True
        try:
            result: Any = await self._post(
                envelope, msg.attempt, envelope_id=msg.envelope_id, floor=msg.floor, room=room
            )
        except NetworkError as exc:
            self.core.counters.rejected += 1
            result = Refused(exc)
        finally:
            # Crashed, the post keeps its room for its retry, unless its poster left.
            if room is not None and room.orphaned:
                room.give_back()
        if room is not None:
            room.give_back()  # answered: it needs its room no more (dispatched: given back)
        return result

    async def _send_invites(self) -> Any:
        md = self.metadata
        if md.state is not SessionState.PENDING:
            return md  # a retried create that got further already
        invited: set[str] = set()
        if self.last_seq > 0:
            # A retried create after a crash part-way: invite only those not invited yet.
            for env in await self.core.store.read(self.sid):
                if env.event_type == EV_CHANNEL_INVITE and env.audience is not None:
                    invited.update(env.audience)
        for invitee in invitees_of(md):
            if invitee in invited:
                continue
            invite = Envelope(
                session_id=self.sid,
                sender_id=md.creator_id,
                event_type=EV_CHANNEL_INVITE,
                audience=(invitee,),
                event_data={
                    "session_id": self.sid,
                    "manifest_type": md.manifest_type,
                    "manifest_version": md.manifest_version,
                    "creator_id": md.creator_id,
                    "knobs": md.knobs,
                    "labels": md.labels,
                },
            )
            try:
                result = await self._post(invite, 1, internal=True)
            except NetworkError as exc:
                result = Refused(exc)
            if isinstance(result, Refused):
                await self._move(SessionState.CLOSED, "invite_failed")
                return result
        if quorum_reached(self.metadata):
            await self._activate()
        return self.metadata

    async def on_stop(self) -> None:
        self.core.counters.keep_session_high_water(self.ref)

    # -- posting ---------------------------------------------------------------------------

    async def _post(
        self,
        env: Envelope,
        attempt: int,
        *,
        envelope_id: str = "",
        internal: bool = False,
        floor: int = 0,
        room: TakenRoom | None = None,
    ) -> Any:
        core = self.core
        registry = core.registry
        md = self.metadata
        sender, rule = admit_sender(core, md, env)
        if attempt > 1:
            appended = await self._appended_since(floor, envelope_id)
            if appended is not None:
                # This very post (the hub gave it its id), appended before the crash.
                return Accepted(appended.envelope_id, appended.seq)
        admit_addressing(core, md, env, sender, rule)
        # Step 3: the lifecycle table (an ended session takes nothing; a turn needs ACTIVE).
        admit(self.sid, md.state, md.close_reason, post_event(env.event_type))
        substantive = is_substantive(env.event_type)
        if substantive and env.sender_id in md.pending_acks:
            raise ProtocolError(
                f"agent {sender.name!r} ({env.sender_id}) has not acked its invite to "
                f"session {self.sid}: ack it first"
            )
        if not internal and (env.idempotency_key or "").startswith(HUB_KEYS):
            # Else a participant could take the key of a notice the hub is about to post.
            raise ProtocolError(f"idempotency keys starting {HUB_KEYS!r} are the hub's")
        keys = dedup_keys(env)
        for key in keys:
            hit = self.dedup.get(key)
            if hit is not None:
                return await self._duplicate(env, hit)
        if keys and not self.dedup.complete:
            # Older than the window: one indexed lookup (only for sessions this long).
            try:
                hit = await core.store.find_dedup(self.sid, keys)
            except StoreError as exc:
                core.counters.rejected += 1
                return Refused(exc)
            if hit is not None:
                return await self._duplicate(env, hit)
        if substantive:
            if env.event_type == EV_EXPECTATION_VIOLATED and not internal:
                raise ProtocolError(f"event type {env.event_type!r} is posted by the hub only")
            if self.stype is None:
                raise ProtocolError(
                    f"session {self.sid}: no session type registered for "
                    f"{md.manifest_type}@v{md.manifest_version}"
                )
            core.limiter.check(sender, rule.limits.rate, trio.current_time())
            for rid in recipients_of(md, env):
                if rid == env.sender_id:
                    continue
                passport = registry.passport(rid)
                their_rule = registry.rule(rid)
                if (
                    passport is not None
                    and their_rule is not None
                    and their_rule.limits.inbox.overflow == "reject"
                ):
                    core.ledger.check(passport, their_rule.limits.inbox)
            self.stype.validate_send(md, env, self.state)
        else:
            self._check_protocol(env, internal)
        created_at, at = core.now_stamp()
        stamped = env.stamped(envelope_id or core.new_id(), self.last_seq + 1, created_at)
        new_md = _metadata_after(md, stamped)
        batch = [stamped]
        saved = new_md if new_md is not md else None
        opening: tuple[Envelope, SessionMetadata] | None = None
        if (
            stamped.event_type == EV_CHANNEL_INVITE_ACK
            and new_md.state is SessionState.PENDING
            and quorum_reached(new_md)
        ):
            # The ack that makes the quorum and the activation it causes are one append:
            # the session is ACTIVE only once that ack is durable, and both are, together.
            opening = self._opening(new_md, stamped.seq + 1)
            batch.append(opening[0])
            saved = opening[1]
        self._fault("before_append")
        try:
            await self._append(batch, saved)
        except DuplicateKey as taken:
            # Accepted before this actor's window (this actor restarted since, or the window
            # let it go): the WAL's index of idempotency keys refused the repeat.
            return await self._repeated(stamped, taken)
        except StoreError as exc:
            core.counters.rejected += 1
            return Refused(exc)
        if stamped.event_type == EV_CHANNEL_INVITE_ACK:
            core.audit("invite_acked", session_id=self.sid, agent_id=stamped.sender_id)
        elif stamped.event_type == EV_CHANNEL_INVITE_REJECT:
            core.audit("invite_rejected", session_id=self.sid, agent_id=stamped.sender_id)
        self._fault("after_append")
        self._accepted(stamped, at, keys)
        if substantive and self.stype is not None:
            self.state = self.stype.fold(stamped, self.state)
        self.metadata = new_md
        self._fault("after_fold")
        self._publish()
        if stamped.event_type not in (EV_CHANNEL_INVITE_ACK, EV_CHANNEL_INVITE_REJECT):
            dispatch(core, new_md, stamped)
        if room is not None:
            room.give_back()  # dispatched: the inbox ledger counts it now
        self._fault("after_dispatch")
        if stamped.event_type == EV_CHANNEL_INVITE_REJECT:
            await self._move(SessionState.CLOSED, REJECTED)
        elif stamped.event_type == EV_CHANNEL_INVITE_ACK:
            if opening is not None:
                self._opened(*opening)
            elif new_md.state is SessionState.ACTIVE:
                # A late ack (others made the quorum): what was held back from it until now.
                catch_up_after_ack(core, stamped.sender_id, self.sid)
        elif substantive and self.stype is not None:
            move = self.stype.on_accepted(new_md, stamped, self.state)
            if move is not None:
                await self._move_asked(move)
            elif self.arbiter:
                await award_if_due(self)
        await self._maybe_snapshot()
        return Accepted(stamped.envelope_id, stamped.seq)

    async def _repeated(self, env: Envelope, taken: DuplicateKey) -> Accepted | Refused:
        """The answer to a post whose idempotency key the store refused as taken: the
        original's, as a duplicate (what a hit in the window answers)."""
        core = self.core
        key = KEY_PREFIX + taken.key
        try:
            hit = await core.store.find_dedup(self.sid, [key])
        except StoreError as exc:
            core.counters.rejected += 1
            return Refused(exc)
        if hit is None:  # (the store refused it, so it has it: a store that lies)
            core.counters.rejected += 1
            return Refused(taken)
        self.dedup.remember(key, hit)
        return await self._duplicate(env, hit)

    async def _duplicate(self, env: Envelope, hit: tuple[str, int]) -> Accepted | Refused:
        """The answer to a repeat of the envelope at ``hit`` (its id and seq): the original's.

        Raises:
          ProtocolError: ``env``'s idempotency key found another sender's envelope (an answer
            key names its sender: only an idempotency key can find another's).
        """
        core = self.core
        if env.idempotency_key:
            try:
                sender = await sender_at(core.store, self.sid, hit[1], self.recent)
            except StoreError as exc:
                core.counters.rejected += 1
                return Refused(exc)
            refuse_taken_key(env, sender)
        core.counters.duplicates += 1
        return Accepted(hit[0], hit[1], duplicate=True)

    async def _append(self, batch: list[Envelope], metadata: SessionMetadata | None) -> None:
        """Append ``batch`` durably, in one write; a StoreError means nothing was appended.

        A store may fail a commit that did happen (its reply was lost). This actor is the
        session's only writer, so the WAL's last seq tells which it was: an append that
        landed is accepted (a retry will find it), one that did not is the caller's error.
        When the store cannot even say, the actor crashes and recovers from the WAL.
        """
        if metadata is None and self.unsaved:
            metadata = self.metadata
        env = batch[-1]  # all or nothing: the last one tells whether the batch landed
        try:
            await self.core.store.append(self.sid, batch, metadata=metadata)
        except NotOwner:
            # Fenced off (a cluster): nothing was written, and the WAL's end may be another
            # node's envelope at this very seq, so it must not be read as this one landing.
            raise
        except StoreError as exc:
            try:
                landed = await self.core.store.last_seq(self.sid)
                # Ours only if it is this very envelope: an actor that fell behind the WAL
                # (a cluster node's, whose shard another node wrote) sees another's there.
                there = (
                    await self.core.store.read(self.sid, since=env.seq - 1, until=env.seq)
                    if landed >= env.seq
                    else []
                )
            except StoreError as again:
                raise OutOfSync(f"session {self.sid}: append of seq {env.seq} unsure") from again
            if there and there[0].envelope_id == env.envelope_id:
                log.warning("session %s: seq %d was appended despite %s", self.sid, env.seq, exc)
                self.unsaved = False
                return
            if landed != self.last_seq:
                raise OutOfSync(
                    f"session {self.sid}: WAL at seq {landed}, expected {self.last_seq}"
                ) from exc
            raise
        self.unsaved = False

    async def _appended_since(self, floor: int, envelope_id: str) -> Envelope | None:
        """The envelope with ``envelope_id`` if it is in the WAL after seq ``floor``.

        A retried post may have been appended before the crash; other posts queued behind
        it may have been appended since, so the recent ones are not always enough.
        """
        for old in self.recent:
            if old.envelope_id == envelope_id:
                return old
        if self.recent and self.recent[0].seq <= floor + 1:
            return None  # the recent ones cover everything after the floor
        for old in await self.core.store.read(self.sid, since=floor):
            if old.envelope_id == envelope_id:
                return old
        return None

    def _check_protocol(self, env: Envelope, internal: bool) -> None:
        kind = env.event_type
        md = self.metadata
        if kind in HUB_ONLY:
            if not internal:
                raise ProtocolError(f"event type {kind!r} is posted by the hub only")
        elif kind in (EV_CHANNEL_INVITE_ACK, EV_CHANNEL_INVITE_REJECT):
            if env.sender_id not in md.pending_acks:
                raise ProtocolError(
                    f"agent {env.sender_id!r} has no pending invite in session {self.sid}"
                )
        elif not kind.startswith("troupe.task."):
            raise ProtocolError(f"unknown protocol event type {kind!r}")

    def _fault(self, point: str) -> None:
        if self.core.faults is not None:
            self.core.faults.check(point, self.sid)

    def _accepted(
        self, env: Envelope, at: float | None = None, keys: list[str] | None = None
    ) -> None:
        """Take ``env`` as appended (``keys``: its dedup keys, if worked out already)."""
        self.last_seq = env.seq
        hit = (env.envelope_id, env.seq)
        for key in dedup_keys(env) if keys is None else keys:
            self.dedup.remember(key, hit)
        if env.causation_id:
            self.dedup.answered(env.sender_id, env.causation_id, hit)
        self.recent.append(env)
        del self.recent[:-RECENT]
        self.activity.note(env, self.participant_ids, at)
        self.core.counters.accepted += 1
        if self.core.events.subscribers:
            self.core.events.accepted(env)

    def _publish(self) -> None:
        self.entry.publish(self.metadata, self.state, self.last_seq)
        if self.metadata.state.terminal:
            # It is never started again; this actor is about to stop. Its mark is kept now:
            # statistics() no longer finds its ref, and on_stop comes later.
            self.core.counters.keep_session_high_water(self.ref)
            self.entry.retire()
        else:
            self.entry.activity = self.activity

    async def _maybe_snapshot(self) -> None:
        every = self.core.config.snapshot_every
        if self.stype is None or every <= 0 or self.last_seq - self.snapshot_seq < every:
            return
        try:
            await self.save_snapshot()
        except StoreError as exc:
            # A snapshot only shortens recovery; the WAL has everything. Try again next post.
            log.warning(
                "session %s: snapshot after seq %d failed: %s", self.sid, self.last_seq, exc
            )

    async def save_snapshot(self) -> None:
        """Save the state and the activity summary as of ``last_seq``."""
        assert self.stype is not None
        await self.core.store.save_snapshot(
            self.sid, self.last_seq, self.stype.dump_state(self.state)
        )
        await save_activity(self.core.store, self.sid, self.activity)
        self.snapshot_seq = self.last_seq

    # -- lifecycle moves -------------------------------------------------------------------

    def _hub_envelope(
        self, event_type: str, data: dict[str, Any], seq: int | None = None
    ) -> Envelope:
        md = self.metadata
        return Envelope(
            session_id=self.sid,
            sender_id=md.creator_id,
            event_type=event_type,
            event_data=data,
            audience=tuple(md.participant_ids()),
            envelope_id=self.core.new_id(),
            seq=self.last_seq + 1 if seq is None else seq,
            created_at=self.core.now_iso(),
        )

    def _opening(self, md: SessionMetadata, seq: int) -> tuple[Envelope, SessionMetadata]:
        """The OPENED notice at ``seq`` and the ACTIVE metadata after it (not yet appended)."""
        opened = self._hub_envelope(EV_SESSION_OPENED, {"session_id": self.sid}, seq)
        return opened, attrs.evolve(md, state=next_state(md.state, SessionEvent.QUORUM))

    async def _activate(self) -> None:
        opened, md = self._opening(self.metadata, self.last_seq + 1)
        await self._append([opened], md)
        self._opened(opened, md)

    def _opened(self, opened: Envelope, md: SessionMetadata) -> None:
        """Publish an appended OPENED notice: the session is ACTIVE."""
        self._accepted(opened)
        self.metadata = md
        self._publish()
        dispatch(self.core, md, opened)
        self.core.audit("session_opened", session_id=self.sid)

    async def _move_asked(self, move: Transition) -> None:
        """End the session as its session type asked after an accepted post.

        A move the lifecycle has not (a session type asking for PENDING or ACTIVE) is that
        session type's bug: logged and audited, and the session goes on as it was (the post
        that led to it is accepted).
        """
        try:
            ending_event(move.state)
        except IllegalTransition as exc:
            log.error("session %s: its session type asked for a move: %s", self.sid, exc)
            self.core.audit(
                "illegal_transition", session_id=self.sid, state=exc.state, reason=move.reason
            )
            return
        await self._move(move.state, move.reason)

    async def _move(self, target: SessionState, reason: str) -> SessionMetadata:
        """End the session in ``target`` (closed or expired): append the notice, stop the actor.

        An ended session is left as it is (a close is idempotent; a sweeper may race one).

        Raises:
          IllegalTransition: ``target`` is not terminal; nothing changed.
        """
        md = self.metadata
        event = ending_event(target)
        if md.state.terminal:
            return md
        core = self.core
        target = next_state(md.state, event)
        md = attrs.evolve(md, state=target, close_reason=reason, closed_at=core.now_iso())
        kind = EV_SESSION_EXPIRED if event is SessionEvent.EXPIRE else EV_SESSION_CLOSED
        notice = self._hub_envelope(kind, {"reason": reason, "session_id": self.sid})
        await self._append([notice], md)
        self._accepted(notice)
        self.metadata = md
        self._publish()
        self.directory.ended(md)
        dispatch(core, md, notice)
        core.audit(f"session_{target.value}", session_id=self.sid, reason=reason)
        # Only once the close is durable: a close the store refused leaves the session (and
        # its tasks) as they were. A hub that dies right here expires them when it restarts.
        await expire_tasks_of(core, self.sid)
        self.stopping = True
        if self.snapshot_seq > 0:
            try:
                await forget_activity(core.store, self.sid)
            except StoreError as exc:
                # The session is closed (the notice is durable); a stale summary of a
                # closed session is never read again.
                log.warning("session %s: forgetting its activity failed: %s", self.sid, exc)
        return md


def refuse_ended(core: HubCore, md: SessionMetadata, env: Envelope) -> None:
    """Refuse a post into an ended session (it has no actor) with the error its actor would
    give, in the same order of checks (steps 1-3 of ``SessionActor._post``)."""
    sender, rule = admit_sender(core, md, env)
    admit_addressing(core, md, env, sender, rule)
    admit(md.session_id, md.state, md.close_reason, post_event(env.event_type))


async def expire_tasks_of(core: HubCore, session_id: str) -> None:
    """Expire the open tasks of a session that just ended (``session_closed``)."""
    if core.hub_ref is None:
        return
    from ._hub_messages import ExpireSessionTasks

    try:
        await core.hub_ref.ask(ExpireSessionTasks(session_id))
    except (NetworkError, StoreError) as exc:
        log.warning(
            "session %s ended, but expiring its tasks failed (done at the next start): %s",
            session_id,
            exc,
        )


async def award_if_due(actor: SessionActor) -> None:
    """Ask the auction's arbiter for the winner once every bidder has bid (``_arbiters``)."""
    state = actor.state
    name = actor.metadata.knobs.get("arbiter")
    if (
        not isinstance(name, str)
        or not isinstance(state, AuctionState)
        or state.phase is not AuctionPhase.BIDDING
        or len(state.bids) < len(state.bidders)
    ):
        return
    core = actor.core
    sid = actor.sid

    def failed(why: str) -> None:
        log.warning("auction %s: arbiter %r: %s; the initiator selects", sid, name, why)
        core.audit("arbiter_failed", session_id=sid, arbiter=name, reason=why)

    arbiter = core.arbiters.get(name)
    if arbiter is None:
        failed("not registered")
        return
    bids = bids_of(await core.store.read(sid), state)
    try:
        winner = cast(object, arbiter(tuple(bids)))  # a registered function's answer
    except Exception as exc:
        failed(f"raised {exc!r}")
        return
    if winner is None:
        return
    if not isinstance(winner, str):
        failed(f"returned {winner!r}, not a bidder's id")
        return
    select = attrs.evolve(select_winner(sid, state.initiator_id, winner), idempotency_key=AWARD_KEY)
    try:
        result = await actor._post(select, 1, internal=True)
    except NetworkError as exc:
        failed(str(exc))
        return
    if isinstance(result, Refused):
        failed(str(result.error))


def _busy(actor: SessionActor) -> bool:
    stats = actor.ref.mailbox.statistics()
    gate = actor.entry.gate
    return bool(stats.queued or stats.waiting_senders or (gate is not None and gate.users))


async def prepare_to_passivate(actor: SessionActor, request: Passivate) -> bool:
    """Run by the session actor on ``Passivate``: whether it may be stopped now.

    (No other passivation can have marked its gate: one it agreed to stops it before its
    next message, the stop travelling in the system lane.)
    """
    if actor.metadata.state.terminal or _busy(actor):
        await trio.lowlevel.checkpoint()
        return False
    snapshots = actor.stype is not None and actor.core.config.snapshot_every > 0
    # A session never snapshotted whose WAL is short is refolded from it when it starts again.
    short = actor.snapshot_seq == 0 and actor.last_seq < request.snapshot_from
    if snapshots and actor.last_seq > actor.snapshot_seq and not short:
        try:
            async with request.limiter or contextlib.nullcontext():
                await actor.save_snapshot()
        except StoreError as exc:
            # Stay live (a passivated session is recovered from its snapshot): the next
            # sweep tries again. Crashing would cost a restart for nothing.
            log.warning("session %s: not passivated, its snapshot failed: %s", actor.sid, exc)
            return False
        if _busy(actor):
            return False  # someone came during the snapshot: stay
    gate = actor.entry.gate = actor.entry.gate or Gate()
    gate.passivating = request.stopped
    # Stop right after this answer (``handle``): the session supervisor hears of the stop
    # (``_exited``), lets go of this actor and reopens the gate. Nobody has to wait for it.
    actor.stopping = True
    return True
