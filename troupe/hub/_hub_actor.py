"""The hub actor: the registry, session creation, tasks and observations.

It is the only writer of the registry and task tables; every change is persisted before it
is applied and before the call returns. It never asks a session actor (sessions ask it, to
expire their tasks), so the two can never wait on each other.

A session it creates is checked, stamped and added to the directory without a write: its
first durable write is its actor's first append (the invites, with this metadata), so the
creates of many callers share commits instead of waiting for one each here (issue 15,
item 6). ``create_session`` returns only once the session is ACTIVE, which is durable.

In a cluster (``core.cluster`` set) the tables are the store's, shared by every node:

- A name is unique by the store's constraint: a register that loses a race for one on
  another node gets the error a taken name gets (``ProtocolError``), and the winner is
  learned.
- A miss reads through: an agent or task this node does not know, asked for by id or name
  (create_session's creator and participants, a task's update or owner), is read from the
  store before the caller is told it does not exist; the ``Hub`` handle asks
  ``LearnAgent`` / ``LearnTask`` for its own reads (a bind always, ``fresh``: it must not
  take an identity unregistered elsewhere since the last sync). Register's name check,
  unregister and a change of an agent (set_resume, set_rule, set_skill, an observation)
  always read the store's record first: a change made elsewhere since the last sync is
  built on, not undone, and an agent unregistered elsewhere is not found here either.
- The member's tick sends ``SyncRegistry``: the store's change feed since the last sync
  (agents saved, agents deleted, tasks saved elsewhere) is applied to the tables. Every
  read of the store happens here, in this actor's order, after every write it made: a
  record read is never older than the one the table holds.
- Every task write is conditional (``Store.save_open_task``): a task that another node
  ended first is not written; this node adopts the stored one, as a second terminal update
  on one node leaves the first in place, and does not count it again.

Without a cluster none of this runs: the tables are the whole truth, and a miss is
``NotFoundError`` at once.
"""

from __future__ import annotations

import contextlib
import logging
from types import MappingProxyType
from typing import Any

import attrs

from .._errors import (
    AccessDeniedError,
    DecodeError,
    MailboxClosed,
    NameTaken,
    NetworkError,
    NotFoundError,
    ProtocolError,
    StoreError,
)
from ..actors import Actor, Refused
from ..api import (
    CheckpointTask,
    CreateSession,
    ObserveTask,
    ReadTaskCheckpoint,
    RecordObservation,
    Register,
    SetResume,
    SetRule,
    SetSkill,
    Unregister,
    UpdateTask,
)
from ..model import (
    ObservedStat,
    Participant,
    ParticipantRole,
    Passport,
    Resume,
    Rule,
    SessionMetadata,
    SessionState,
    TaskMetadata,
    TaskState,
    iso,
    parse_duration,
    parse_iso,
)
from ..model._convert import is_due
from ..model._identity import KINDS
from ..store import AgentRecord
from ._auth import AuthRegistry
from ._connection import Unbind
from ._core import HubCore
from ._directory import Directory, SessionEntry
from ._hub_messages import (
    ExpireSessionTasks,
    ExpireTasks,
    FindAccepted,
    FindAnswer,
    GainSessions,
    HubMsg,
    LearnAgent,
    LearnTask,
    ReadEnvelopes,
    SyncRegistry,
)
from ._registry import Registry
from ._rules import accepts_inbound, glob_allows

log = logging.getLogger("troupe.hub")

OBSERVED_NS = "observed_tasks"
#: How far back a retried post is looked for by id (a post appends at most itself plus an
#: opening or closing notice, so a handful is plenty).
RECENT_IDS = 8


class HubActor(Actor[HubMsg, Any]):
    """Permanent child of the hub's root supervisor; rebuilds its tables from the store."""

    def __init__(self, core: HubCore, auth: AuthRegistry, directory: Directory) -> None:
        self.core = core
        self.auth = auth
        #: The sessions, to add new ones to (everyone else reads ``core.directory``).
        self.directory = directory
        #: Its own tables; HubCore has read-only views of them.
        self.registry = Registry()
        self.tasks: dict[str, TaskMetadata] = {}
        self.observed: set[str] = set()
        #: Tasks whose observation the hub recorded at their end without a latency (no
        #: ``started_at``): the owner's own observation of one then still gives its latency.
        self.latency_unknown: set[str] = set()
        #: The store's change counter this node has applied up to (a cluster's only).
        self.synced = 0

    async def on_start(self) -> None:
        store = self.core.store
        if self.core.cluster is not None:
            # Read first: a change made while the tables load comes again with the feed.
            self.synced = await store.last_change()
        self.registry = Registry.from_records(await store.load_agents())
        self.core.registry = self.registry
        self.tasks = {t.task_id: t for t in await store.load_tasks()}
        self.core.tasks = MappingProxyType(self.tasks)  # read-only for everyone else
        self.observed = set(await store.load_kv(OBSERVED_NS))
        # A hub that died between a session's close and the expiry of its tasks.
        sessions = self.core.directory.sessions
        for task in list(self.tasks.values()):
            entry = sessions.get(task.session_id or "")
            if entry is not None and entry.metadata.state.terminal and not task.state.terminal:
                await self._finish_task(task, TaskState.EXPIRED, error="session_closed")

    async def handle(self, msg: HubMsg) -> Any:
        try:
            return await self._handle(msg)
        except (NetworkError, StoreError) as exc:
            # Every change is persisted before it is applied, so a store that refused one
            # leaves the tables as they were: the caller gets the error, the actor goes on.
            return Refused(exc)

    async def _handle(self, msg: HubMsg) -> Any:
        match msg:
            case Register():
                return await self._register(msg)
            case Unregister(agent_id=agent_id):
                return await self._unregister(agent_id)
            case SetResume(agent_id=agent_id, resume=resume):
                return await self._set_resume(agent_id, resume)
            case SetSkill(agent_id=agent_id, skill_md=skill_md):
                record = await self._agent(agent_id, fresh=True)
                await self.core.store.save_skill(agent_id, skill_md)
                self.registry.put(attrs.evolve(record, skill_md=skill_md))
                self.core.audit("skill_set", agent_id=agent_id, removed=skill_md is None)
                return None
            case SetRule(agent_id=agent_id, rule=rule):
                _check_rule(rule)
                record = await self._agent(agent_id, fresh=True)
                rule = attrs.evolve(rule, version=record.rule.version + 1)
                await self.core.store.save_rule(agent_id, rule)
                self.registry.put(attrs.evolve(record, rule=rule))
                self.core.audit("rule_set", agent_id=agent_id, version=rule.version)
                return None
            case RecordObservation():
                return await self._record_observation(msg)
            case CreateSession():
                return await self._create_session(msg)
            case ObserveTask(task=task):
                return await self._observe_task(task)
            case UpdateTask():
                return await self._update_task(msg)
            case ExpireSessionTasks(session_id):
                for task in list(self.tasks.values()):
                    if task.session_id == session_id and not task.state.terminal:
                        await self._finish_task(task, TaskState.EXPIRED, error="session_closed")
                return None
            case ExpireTasks(now):
                for task in list(self.tasks.values()):
                    if not task.state.terminal and task.expires_at and is_due(task.expires_at, now):
                        await self._finish_task(task, TaskState.EXPIRED, error="ttl_expired")
                return None
            case CheckpointTask(task_id=task_id, state=data):
                await self.core.store.save_checkpoint(task_id, data)
                return None
            case ReadTaskCheckpoint(task_id=task_id):
                return await self.core.store.load_checkpoint(task_id)
            case ReadEnvelopes(session_id, since, until):
                self.core.directory.get(session_id)
                if since < 0 or (until is not None and until < 0):
                    since, until = _from_end(
                        await self.core.store.last_seq(session_id), since, until
                    )
                return await self.core.store.read(session_id, since, until)
            case FindAccepted(session_id, keys, envelope_id):
                return await self._find_accepted(session_id, keys, envelope_id)
            case FindAnswer(session_id, sender_id, causation_id):
                return await self.core.store.find_answer(session_id, sender_id, causation_id)
            case GainSessions(gained):
                return self._gain_sessions(gained)
            case SyncRegistry():
                return await self._sync()
            case LearnAgent(name_or_id, by_name, fresh):
                found = await self._learn_agent(name_or_id, by_name=by_name, fresh=fresh)
                return found is not None
            case LearnTask(task_id):
                return await self._task(task_id) is not None
        raise AssertionError(f"unhandled hub message {msg!r}")

    async def _find_accepted(
        self, session_id: str, keys: tuple[str, ...], envelope_id: str | None
    ) -> tuple[str, int] | None:
        store = self.core.store
        if keys:
            found = await store.find_dedup(session_id, keys)
            if found is not None:
                return found
        if envelope_id is not None:
            last = await store.last_seq(session_id)
            for env in await store.read(session_id, since=max(0, last - RECENT_IDS)):
                if env.envelope_id == envelope_id:
                    return env.envelope_id, env.seq
        return None

    # -- a cluster's shared tables (module rules) ------------------------------------------

    async def _agent(self, agent_id: str, *, fresh: bool = False) -> AgentRecord:
        """The agent ``agent_id``; in a cluster, read from the store if this node does not
        know it, or always when ``fresh`` (a change is made to the latest record, not to
        one another node has changed since the last sync). NotFoundError if there is none.
        """
        record = self.registry.agents.get(agent_id)
        if self.core.cluster is not None and (record is None or fresh):
            record = await self._read_agent(agent_id)
        if record is None:
            return self.registry.record(agent_id)  # raises the registry's NotFoundError
        return record

    async def _read_agent(self, agent_id: str) -> AgentRecord | None:
        """Read an agent by id from the store into the registry; one the store no longer
        has was unregistered elsewhere, and is forgotten here."""
        record = await self.core.store.get_agent(agent_id)
        if record is not None:
            self._put(record)
        elif agent_id in self.registry:
            self.registry.remove(agent_id)
            self._forget(agent_id)
        return record

    async def _learn_agent(
        self, key: str, *, by_name: bool = True, by_id: bool = True, fresh: bool = False
    ) -> AgentRecord | None:
        """The agent named ``key`` (``by_name``), else the one with id ``key`` (``by_id``):
        from the registry, or (unknown here, or ``fresh``) read from the store into it,
        which also forgets what the store no longer has; None if there is none."""
        registry = self.registry
        if not fresh:
            agent_id = registry.find_agent_id(key) if by_name else None
            known = registry.agents.get(agent_id or key) if by_id or agent_id else None
            if known is not None:
                return known
        if by_name:
            holder = await self._holder(key, registry.find_agent_id(key))
            if holder is not None:
                return registry.agents[holder]
        return await self._read_agent(key) if by_id else None

    def _put(self, record: AgentRecord) -> None:
        """Add or replace an agent read from the store. The store holds names unique: an
        agent this node still holds under the record's name was unregistered elsewhere
        (the feed has not said so yet), and is forgotten here too."""
        holder = self.registry.find_agent_id(record.passport.name)
        if holder is not None and holder != record.passport.agent_id:
            self.registry.remove(holder)
            self._forget(holder)
        self.registry.put(record)

    async def _holder(self, name: str, known: str | None) -> str | None:
        """Who holds ``name`` by the store (this node may not know yet, or still know an
        agent unregistered elsewhere): the registry is brought up to date with it."""
        holder = await self.core.store.get_agent_named(name)
        if holder is not None:
            self._put(holder)
            return holder.passport.agent_id
        if known is not None and known in self.registry:
            # Names are unique and never change: the store lost it to an unregister.
            self.registry.remove(known)
            self._forget(known)
        return None

    async def _task(self, task_id: str) -> TaskMetadata | None:
        """The task ``task_id``; in a cluster, read from the store if this node does not
        know it."""
        task = self.tasks.get(task_id)
        if task is None and self.core.cluster is not None:
            task = await self.core.store.get_task(task_id)
            if task is not None:
                self.tasks[task_id] = task
        return task

    async def _sync(self) -> int:
        """Apply the store's changes since the last sync (module rules)."""
        changes = await self.core.store.changes(self.synced)
        for agent_id in changes.removed:
            if agent_id in self.registry:
                self.registry.remove(agent_id)
                self._forget(agent_id)
        for record in changes.agents:
            self._put(record)
        for task in changes.tasks:
            self.tasks[task.task_id] = task
        self.synced = changes.version
        return len(changes.agents) + len(changes.removed) + len(changes.tasks)

    # -- registry ----------------------------------------------------------------------------

    async def _register(self, msg: Register) -> Passport:
        core = self.core
        passport = msg.passport
        if not isinstance(passport.name, str) or not passport.name.strip():
            raise ProtocolError(f"a passport needs a non-empty name, got {passport.name!r}")
        if passport.effective_kind not in KINDS:
            raise ProtocolError(
                f"agent {passport.name!r}: unknown kind {passport.kind!r}; use one of "
                + ", ".join(KINDS)
            )
        if msg.rule is not None:
            _check_rule(msg.rule)
        if passport.effective_kind != "remote_agent":
            await self.auth.validate(passport, passport.auth.claim)
        existing = core.registry.find_agent_id(passport.name)
        if core.cluster is not None:
            existing = await self._holder(passport.name, existing)
        if existing is not None:
            raise _name_taken(passport.name, existing)
        now = core.now_iso()
        # The claim (a token, a key) proved who registers; it is not kept, nor shown to peers.
        stamped = attrs.evolve(
            passport,
            agent_id=core.new_id(),
            created_at=now,
            auth=attrs.evolve(passport.auth, claim={}),
        )
        resume = attrs.evolve(msg.resume, last_updated=now)
        record = AgentRecord(
            passport=stamped, resume=resume, rule=msg.rule or Rule(), skill_md=msg.skill_md
        )
        try:
            await core.store.save_agent(record)
        except NameTaken as exc:
            # Another node took the name first (the store's constraint judged the race).
            if core.cluster is not None:
                await self._learn_agent(passport.name, by_id=False)
            raise _name_taken(passport.name, exc.holder or "unknown") from None
        self.registry.put(record)
        core.audit("agent_registered", agent_id=stamped.agent_id, name=stamped.name)
        return stamped

    async def _unregister(self, agent_id: str) -> None:
        core = self.core
        # Fresh: one another node unregistered is NotFound here too, not unregistered twice.
        record = await self._agent(agent_id, fresh=True)
        await core.store.delete_agent(agent_id)
        self.registry.remove(agent_id)
        self._forget(agent_id)
        core.audit("agent_unregistered", agent_id=agent_id, name=record.passport.name)

    def _forget(self, agent_id: str) -> None:
        """Let go of what this node keeps for an agent no longer registered."""
        core = self.core
        # The binding is its connection's to drop (the system lane: never blocked by a
        # connection that does not read). Dispatch skips the agent already: no rule.
        conn = core.bindings.get(agent_id)
        if conn is not None:
            with contextlib.suppress(MailboxClosed):  # ending: its release drops it
                conn.mailbox.send_system(Unbind(agent_id))
        core.ledger.reset(agent_id)
        core.limiter.forget(agent_id)

    async def _set_resume(self, agent_id: str, resume: Resume) -> None:
        core = self.core
        record = await self._agent(agent_id, fresh=True)
        resume = attrs.evolve(
            resume, version=record.resume.version + 1, last_updated=core.now_iso()
        )
        await core.store.save_resume(agent_id, resume)
        self.registry.put(attrs.evolve(record, resume=resume))
        core.audit("resume_set", source="tenant", agent_id=agent_id, version=resume.version)

    async def _record_observation(self, msg: RecordObservation) -> None:
        core = self.core
        if not msg.outcome.terminal:
            return
        # A task counts once; a repeat only supplies the latency the hub could not measure.
        fill_latency = False
        mark: str | None = None
        if msg.task_id is not None:
            known = await self._task(msg.task_id)
            if known is not None:
                self._check_owner(known, msg.owner_id)
            # Marked per owner: another agent naming an id cannot keep it from counting. (A
            # bare id is a mark from before marks were per owner.)
            mark = f"{msg.owner_id}/{msg.task_id}"
            if mark in self.observed or msg.task_id in self.observed:
                if msg.latency_ms is None or msg.task_id not in self.latency_unknown:
                    return
                fill_latency = True
        record = core.registry.agents.get(msg.owner_id)
        if core.cluster is not None:
            record = await self._read_agent(msg.owner_id)  # the latest resume, to count on
        if record is None:
            return
        stat = record.resume.observed.get(msg.capability, ObservedStat())
        if fill_latency:
            stat = attrs.evolve(stat, p50_latency_ms=msg.latency_ms)
        else:
            stat = attrs.evolve(
                stat,
                n=stat.n + 1,
                completed=stat.completed + (msg.outcome is TaskState.COMPLETED),
                failed=stat.failed + (msg.outcome is TaskState.FAILED),
                expired=stat.expired + (msg.outcome is TaskState.EXPIRED),
                p50_latency_ms=msg.latency_ms
                if msg.latency_ms is not None
                else stat.p50_latency_ms,
            )
        resume = attrs.evolve(
            record.resume,
            observed={**record.resume.observed, msg.capability: stat},
            version=record.resume.version + 1,
            last_updated=core.now_iso(),
        )
        # The resume first: a store that refuses it leaves the task unobserved, so a retry
        # counts it. The mark only keeps a repeat from counting twice.
        await core.store.save_resume(msg.owner_id, resume)
        self.registry.put(attrs.evolve(record, resume=resume))
        if fill_latency:
            assert msg.task_id is not None
            self.latency_unknown.discard(msg.task_id)
        elif mark is not None:
            self.observed.add(mark)
            try:
                await core.store.put_kv(OBSERVED_NS, mark, True)
            except StoreError as exc:
                # The observation is durable and counted; failing the call would only invite
                # a retry, which this run ignores anyway. A repeat after a restart would count
                # again: the lesser harm than losing it.
                log.warning(
                    "task %s: observation counted, but its mark was not saved: %s",
                    msg.task_id,
                    exc,
                )
        core.audit(
            "resume_set",
            source="observed",
            agent_id=msg.owner_id,
            version=resume.version,
            capability=msg.capability,
            outcome=msg.outcome.value,
        )

    # -- sessions ----------------------------------------------------------------------------

    async def _create_session(self, msg: CreateSession) -> SessionMetadata:
        core = self.core
        registry = core.registry
        creator = await self._agent(msg.creator_id)
        if not msg.participants:
            raise ProtocolError("create_session needs at least one participant")
        seen: set[str] = set()
        for pid in msg.participants:
            if pid in seen:
                raise ProtocolError(f"participant {pid!r} is listed twice")
            seen.add(pid)
        for pid in msg.participants:
            if pid not in registry and (
                core.cluster is None or await self._learn_agent(pid, by_name=False) is None
            ):
                raise NotFoundError(f"participant not registered: {pid!r}")
        ids = list(msg.participants)
        if msg.creator_id not in seen:
            ids.insert(0, msg.creator_id)
        stype = core.session_type(msg.manifest_type, msg.manifest_version)
        if stype is None:
            raise NotFoundError(
                f"no session type registered for {msg.manifest_type}@v{msg.manifest_version}"
            )
        invitees = [pid for pid in ids if pid != msg.creator_id]
        self._authorize_open(creator, invitees, msg.manifest_type)
        if msg.required_acks is not None:
            # Zero would open the session before anyone consented (and an invitee's consent
            # is its own ack: see dispatch, which holds everything back until it acks).
            if not invitees:
                raise ProtocolError(
                    f"required_acks: a session with no invitees takes none, got {msg.required_acks}"
                )
            if not 1 <= msg.required_acks <= len(invitees):
                raise ProtocolError(
                    f"required_acks must be between 1 and {len(invitees)} (the invitees), "
                    f"got {msg.required_acks}"
                )
        now = core.now()
        stamp = iso(now)
        try:
            ttl = parse_duration(
                msg.ttl if msg.ttl is not None else creator.rule.limits.session_ttl_default
            )
            expires_at = iso(now + ttl) if ttl > 0 else None
        except (ValueError, OverflowError) as exc:
            # parse_duration bounds it; a rule stored before it did may hold anything.
            where = "ttl" if msg.ttl is not None else "the creator's session_ttl_default"
            raise ProtocolError(f"session ttl ({where}): {exc}") from exc
        labels = dict(msg.labels or {})
        if msg.intent is not None:
            labels["intent"] = msg.intent
        two_party = len(ids) == 2
        participants = tuple(
            Participant(
                agent_id=pid,
                role=(
                    ParticipantRole.INITIATOR
                    if pid == msg.creator_id
                    else ParticipantRole.RESPONDENT
                    if two_party
                    else ParticipantRole.PARTICIPANT
                ),
                order=order,
                joined_at=stamp,
            )
            for order, pid in enumerate(ids)
        )
        md = SessionMetadata(
            session_id=core.new_session_id(),
            manifest_type=msg.manifest_type,
            manifest_version=msg.manifest_version,
            creator_id=msg.creator_id,
            participants=participants,
            state=SessionState.PENDING,
            created_at=stamp,
            expires_at=expires_at,
            knobs=dict(msg.knobs or {}),
            labels=labels,
            required_acks=msg.required_acks,
            pending_acks=tuple(invitees),
            expectations=tuple(stype.expectations),
            handshake_deadline=iso(now + core.config.invite_ack_timeout),
        )
        stype.validate_create(md)
        # Not saved here: its actor's first append carries it (see the module docstring).
        self.directory.add(SessionEntry(metadata=md, stype=stype, fresh=True))
        core.audit(
            "session_created",
            session_id=md.session_id,
            manifest_type=md.manifest_type,
            manifest_version=md.manifest_version,
            creator_id=md.creator_id,
            participants=ids,
        )
        return md

    def _gain_sessions(self, gained: tuple[SessionMetadata, ...]) -> int:
        core = self.core
        added = 0
        for md in gained:
            if md.session_id not in self.directory.sessions:
                stype = core.session_type(md.manifest_type, md.manifest_version)
                self.directory.add(SessionEntry(metadata=md, stype=stype))
                added += 1
        return added

    def _authorize_open(self, creator: AgentRecord, invitees: list[str], kind: str) -> None:
        core = self.core
        name = creator.passport.name
        if not glob_allows(creator.rule.access.session_types.initiate, kind):
            raise AccessDeniedError(f"agent {name!r} may not open {kind!r} sessions")
        for pid in invitees:
            invitee = core.registry.record(pid)
            if not accepts_inbound(invitee.rule, name):
                raise AccessDeniedError(
                    f"agent {invitee.passport.name!r} ({pid}) does not accept inbound "
                    f"sessions from {name!r}"
                )
            if not glob_allows(invitee.rule.access.session_types.accept, kind):
                raise AccessDeniedError(
                    f"agent {invitee.passport.name!r} ({pid}) does not accept {kind!r} sessions"
                )
        cap = creator.rule.limits.max_concurrent_sessions
        live = core.directory.live_created_by(creator.passport.agent_id or "")
        if cap > 0 and live >= cap:
            raise AccessDeniedError(
                f"agent {name!r} already has {live} open sessions (max_concurrent_sessions {cap})"
            )

    # -- tasks -------------------------------------------------------------------------------

    async def _observe_task(self, task: TaskMetadata) -> None:
        core = self.core
        _check_timestamps(task)
        known = await self._task(task.task_id)
        if known is not None:
            # The stored owner decides: naming oneself as owner does not make a task one's own.
            self._check_owner(known, task.owner_id)
            if task.session_id is not None and task.session_id != known.session_id:
                self._check_in_session(task.owner_id, task.session_id)
            if known.state.terminal:
                return
            merged = attrs.evolve(
                known,
                state=task.state,
                started_at=task.started_at or known.started_at,
                expires_at=task.expires_at or known.expires_at,
                session_id=task.session_id or known.session_id,
                progress={**known.progress, **task.progress},
            )
            if await self._save_task(merged) and merged.state.terminal:
                await self._on_terminal(merged)
            return
        owner = await self._agent(task.owner_id)
        cap = owner.rule.limits.max_concurrent_tasks
        if cap > 0:
            live = sum(
                1
                for t in self.tasks.values()
                if t.owner_id == task.owner_id and not t.state.terminal
            )
            if live >= cap:
                raise AccessDeniedError(
                    f"agent {owner.passport.name!r} already runs {live} tasks "
                    f"(max_concurrent_tasks {cap})"
                )
        if task.session_id is not None:
            self._check_in_session(task.owner_id, task.session_id)
        await self._save_task(attrs.evolve(task, created_at=task.created_at or core.now_iso()))

    def _check_owner(self, task: TaskMetadata, agent_id: str) -> None:
        if task.owner_id != agent_id:
            raise AccessDeniedError(
                f"task {task.task_id!r} is not owned by agent "
                f"{self.core.registry.name_for(agent_id)!r}"
            )

    def _check_in_session(self, agent_id: str, session_id: str) -> None:
        """A task is attached only to a session its owner is a participant of."""
        md = self.core.directory.get(session_id).metadata
        if md.role_of(agent_id) is None:
            raise AccessDeniedError(
                f"agent {self.core.registry.name_for(agent_id)!r} is not a participant of "
                f"session {session_id}"
            )

    async def _update_task(self, msg: UpdateTask) -> None:
        task = await self._task(msg.task_id)
        if task is None:
            raise NotFoundError(f"task not found: {msg.task_id!r}")
        if task.state.terminal:
            return
        now = self.core.now_iso()
        changes: dict[str, Any] = {}
        if msg.progress is not None:
            changes["progress"] = {**task.progress, **msg.progress}
            changes["last_progress_at"] = now
        if msg.result is not None:
            changes["result"] = msg.result
        if msg.error is not None:
            changes["error"] = msg.error
        if msg.state is not None:
            changes["state"] = msg.state
            if msg.state.terminal:
                changes["completed_at"] = now
        updated = attrs.evolve(task, **changes)
        if await self._save_task(updated) and updated.state.terminal:
            await self._on_terminal(updated)

    async def _finish_task(self, task: TaskMetadata, state: TaskState, *, error: str) -> None:
        done = attrs.evolve(task, state=state, error=error, completed_at=self.core.now_iso())
        if await self._save_task(done):
            await self._on_terminal(done)

    async def _save_task(self, task: TaskMetadata) -> bool:
        """Persist ``task``, then audit it if it is new or its state changed; True.

        Progress alone is not audited: a task reporting progress every second would bury
        the log (its latest progress is on the task). The write is conditional: a task the
        store holds as terminal (another node ended it first) is not written; it is
        adopted as stored, and False returned.
        """
        ended = await self.core.store.save_open_task(task)
        if ended is not None:
            self.tasks[task.task_id] = ended
            return False
        before = self.tasks.get(task.task_id)
        self.tasks[task.task_id] = task
        if before is None:
            self.core.audit(
                "task_observed",
                task_id=task.task_id,
                owner_id=task.owner_id,
                session_id=task.session_id,
                state=task.state.value,
                capability=task.spec.capability,
            )
        elif before.state is not task.state:
            moved = {"from": before.state.value, "to": task.state.value}
            self.core.audit(
                "task_state_changed", task_id=task.task_id, owner_id=task.owner_id, **moved
            )
        return True

    async def _on_terminal(self, task: TaskMetadata) -> None:
        """Audit the outcome and feed the owner's track record (once per task)."""
        self.core.audit(
            "task_terminated",
            task_id=task.task_id,
            owner_id=task.owner_id,
            session_id=task.session_id,
            outcome=task.state.value,
            capability=task.spec.capability,
            reason=task.error,
        )
        if task.spec.capability is None:
            return
        latency: int | None = None
        if task.started_at and task.completed_at:
            latency = int((parse_iso(task.completed_at) - parse_iso(task.started_at)) * 1000)
        else:
            self.latency_unknown.add(task.task_id)
        await self._record_observation(
            RecordObservation(
                owner_id=task.owner_id,
                capability=task.spec.capability,
                outcome=task.state,
                latency_ms=latency,
                task_id=task.task_id,
            )
        )


def _name_taken(name: str, holder: str) -> ProtocolError:
    return ProtocolError(f"agent name {name!r} is already registered (agent_id {holder})")


def _check_rule(rule: Rule) -> None:
    """Refuse a rule whose durations the hub could not use (too long, negative, garbage)."""
    for field in ("session_ttl_default", "task_ttl_default"):
        try:
            parse_duration(getattr(rule.limits, field))
        except ValueError as exc:
            raise DecodeError(
                f"Rule.limits.{field}: {exc}", record="Rule", field=f"limits.{field}"
            ) from exc


def _from_end(length: int, since: int, until: int | None) -> tuple[int, int | None]:
    """Negative bounds of ``read_wal`` count from the end, as in ``wal[since:until]``."""
    if since < 0:
        since = max(0, length + since)
    if until is not None and until < 0:
        until = max(0, length + until)
    return since, until


def _check_timestamps(task: TaskMetadata) -> None:
    """Refuse timestamps the sweeper and the track record could not read later."""
    for field in ("started_at", "expires_at", "completed_at"):
        value = getattr(task, field)
        if value is None:
            continue
        try:
            parse_iso(value)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(
                f"task {task.task_id!r}: {field} {value!r} is not an ISO-8601 timestamp"
            ) from exc
