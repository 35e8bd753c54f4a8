"""``MemoryStore``: the whole ``Store`` protocol in dicts, for tests and simulations.

Records are immutable attrs objects and are kept as they are. Opaque JSON values (snapshots,
checkpoints, kv values, audit records) are kept encoded, as SQLite keeps them: a caller
that mutates a dict after saving it cannot change what the store holds, and a value that
SQLite would refuse is refused here too. Every call is a trio checkpoint that happens
before the operation, so a cancelled call has done nothing.

A cluster simulation (several hubs in one process) gives each node its own
:meth:`MemoryStore.view` of one store's data, with that node's ``fence``: a callable run
with the session id in every session write (``append``, ``save_session``,
``save_snapshot``) after the call's checkpoint and before anything is written, so nothing
can come between the check and the write; raising refuses that write alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

import attrs
import trio

from .._errors import NameTaken, StoreError
from ..model import Envelope, Resume, Rule, SessionMetadata, TaskMetadata
from ._protocol import KEY_PREFIX, AgentRecord, Changes, Snapshot, answer_key, answer_prefix
from ._rules import (
    DuplicateKey,
    agent_id_of,
    check_append,
    check_audit,
    check_window,
    json_bytes,
    json_value,
    unknown_agent,
)


@attrs.define(eq=False)
class _Feed:
    """The change counter and, per key, the change that last wrote it (each dict in change
    order: a key written again moves to the end), shared by every view of one store."""

    version: int = 0
    agents: dict[str, int] = attrs.field(factory=dict)
    removed: dict[str, int] = attrs.field(factory=dict)
    tasks: dict[str, int] = attrs.field(factory=dict)

    def mark(self, table: dict[str, int], key: str) -> None:
        self.version += 1
        table.pop(key, None)
        table[key] = self.version

    @staticmethod
    def since(table: dict[str, int], since: int) -> Iterator[str]:
        """The keys written after change ``since``, oldest first."""
        newest = itertools.takewhile(lambda kv: kv[1] > since, reversed(table.items()))
        return (key for key, _ in reversed(list(newest)))


class MemoryStore:
    """A store that lives in this process; it keeps its data across ``async with`` re-entries.

    Args:
      fence: checked in every session write (module rules); raising refuses the write.
    """

    def __init__(self, *, fence: Callable[[str], None] | None = None) -> None:
        self._open = False
        self.fence = fence
        self._agents: dict[str, AgentRecord] = {}
        self._names: dict[str, str] = {}
        self._capabilities: dict[str, set[str]] = {}
        self._sessions: dict[str, SessionMetadata] = {}
        self._wal: dict[str, list[Envelope]] = {}
        self._keys: dict[str, dict[str, Envelope]] = {}
        self._dedup: dict[str, dict[str, tuple[str, int]]] = {}
        self._snapshots: dict[str, tuple[int, bytes]] = {}
        self._tasks: dict[str, TaskMetadata] = {}
        self._checkpoints: dict[str, bytes] = {}
        self._cursors: dict[str, dict[str, int]] = {}
        self._kv: dict[str, dict[str, bytes]] = {}
        self._audit: list[bytes] = []
        self._feed = _Feed()

    def __repr__(self) -> str:
        return f"MemoryStore(open={self._open}, sessions={len(self._sessions)})"

    def view(self, *, fence: Callable[[str], None] | None = None) -> MemoryStore:
        """Another store on this one's data, opened and left on its own, with its own fence
        (one per node of a simulated cluster)."""
        other = MemoryStore(fence=fence)
        for name, value in vars(self).items():
            if name not in ("_open", "fence"):
                setattr(other, name, value)
        return other

    def _fenced(self, session_id: str) -> None:
        if self.fence is not None:
            self.fence(session_id)

    async def __aenter__(self) -> Self:
        await trio.lowlevel.checkpoint()
        if self._open:
            raise StoreError("MemoryStore is already open; leave it before entering it again")
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False

    async def _enter_call(self) -> None:
        await trio.lowlevel.checkpoint()
        if not self._open:
            raise StoreError("MemoryStore is not open; use it inside 'async with store:'")

    # -- registry ----------------------------------------------------------------------------

    def _put_agent(self, agent_id: str, record: AgentRecord | None) -> None:
        """Store (or with ``None`` drop) an agent and move its capability-index rows."""
        old = self._agents.pop(agent_id, None) if record is None else self._agents.get(agent_id)
        if old is not None:
            for capability in old.resume.capabilities():
                self._capabilities[capability].discard(agent_id)
            del self._names[old.passport.name]
        if record is not None:
            self._agents[agent_id] = record
            self._names[record.passport.name] = agent_id
            for capability in record.resume.capabilities():
                self._capabilities.setdefault(capability, set()).add(agent_id)
            self._feed.removed.pop(agent_id, None)
            self._feed.mark(self._feed.agents, agent_id)
        elif old is not None:
            self._feed.agents.pop(agent_id, None)
            self._feed.mark(self._feed.removed, agent_id)

    def _known(self, agent_id: str) -> AgentRecord:
        record = self._agents.get(agent_id)
        if record is None:
            raise unknown_agent(agent_id)
        return record

    async def save_agent(self, record: AgentRecord) -> None:
        await self._enter_call()
        agent_id = agent_id_of(record)
        holder = self._names.get(record.passport.name, agent_id)
        if holder != agent_id:
            raise NameTaken(
                f"MemoryStore: agent name {record.passport.name!r} is already held by agent "
                f"{holder!r}; names are unique",
                name=record.passport.name,
                holder=holder,
            )
        self._put_agent(agent_id, record)

    async def save_resume(self, agent_id: str, resume: Resume) -> None:
        await self._enter_call()
        self._put_agent(agent_id, attrs.evolve(self._known(agent_id), resume=resume))

    async def save_rule(self, agent_id: str, rule: Rule) -> None:
        await self._enter_call()
        self._put_agent(agent_id, attrs.evolve(self._known(agent_id), rule=rule))

    async def save_skill(self, agent_id: str, skill_md: str | None) -> None:
        await self._enter_call()
        self._put_agent(agent_id, attrs.evolve(self._known(agent_id), skill_md=skill_md))

    async def delete_agent(self, agent_id: str) -> None:
        await self._enter_call()
        self._put_agent(agent_id, None)
        self._cursors.pop(agent_id, None)

    async def load_agents(self) -> list[AgentRecord]:
        await self._enter_call()
        return list(self._agents.values())

    async def agents_with_capability(self, capability: str) -> list[str]:
        await self._enter_call()
        return sorted(self._capabilities.get(capability, ()))

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        await self._enter_call()
        return self._agents.get(agent_id)

    async def get_agent_named(self, name: str) -> AgentRecord | None:
        await self._enter_call()
        agent_id = self._names.get(name)
        return None if agent_id is None else self._agents[agent_id]

    # -- the change feed -------------------------------------------------------------------

    async def last_change(self) -> int:
        await self._enter_call()
        return self._feed.version

    async def changes(self, since: int) -> Changes:
        await self._enter_call()
        feed = self._feed
        return Changes(
            version=feed.version,
            agents=tuple(self._agents[a] for a in feed.since(feed.agents, since)),
            removed=tuple(feed.since(feed.removed, since)),
            tasks=tuple(self._tasks[t] for t in feed.since(feed.tasks, since)),
        )

    # -- sessions and the WAL --------------------------------------------------------------

    async def save_session(self, metadata: SessionMetadata) -> None:
        await self._enter_call()
        self._fenced(metadata.session_id)
        self._sessions[metadata.session_id] = metadata

    async def load_sessions(self) -> list[SessionMetadata]:
        await self._enter_call()
        return list(self._sessions.values())

    async def get_session(self, session_id: str) -> SessionMetadata | None:
        await self._enter_call()
        return self._sessions.get(session_id)

    async def append(
        self,
        session_id: str,
        envelopes: Sequence[Envelope],
        *,
        metadata: SessionMetadata | None = None,
    ) -> None:
        await self._enter_call()
        self._fenced(session_id)
        wal = self._wal.get(session_id, [])
        check_append(session_id, len(wal), envelopes, metadata)
        keys = self._keys.get(session_id, {})
        for env in envelopes:
            if env.idempotency_key is not None and env.idempotency_key in keys:
                raise DuplicateKey(session_id, env.idempotency_key)
        # Every check passed: from here on nothing can fail, so the append is all-or-nothing.
        self._wal.setdefault(session_id, wal).extend(envelopes)
        dedup = self._dedup.setdefault(session_id, {})
        for env in envelopes:
            if env.idempotency_key is not None:
                self._keys.setdefault(session_id, keys)[env.idempotency_key] = env
            answer = answer_key(env)
            if answer is not None:
                dedup.setdefault(answer, (env.envelope_id, env.seq))
        if metadata is not None:
            self._sessions[session_id] = metadata

    async def read(
        self, session_id: str, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        await self._enter_call()
        wal = self._wal.get(session_id, [])
        # The WAL has no gaps, so the envelope with seq n sits at index n - 1.
        lo = max(since, 0)
        hi = len(wal) if until is None else max(lo, min(until, len(wal)))
        return wal[lo:hi]

    async def last_seq(self, session_id: str) -> int:
        await self._enter_call()
        return len(self._wal.get(session_id, ()))

    async def find_idempotent(self, session_id: str, key: str) -> Envelope | None:
        await self._enter_call()
        return self._keys.get(session_id, {}).get(key)

    async def load_dedup(self, session_id: str) -> dict[str, tuple[str, int]]:
        await self._enter_call()
        found = dict(self._dedup.get(session_id, {}))
        for key, env in self._keys.get(session_id, {}).items():
            found[KEY_PREFIX + key] = (env.envelope_id, env.seq)
        return found

    async def find_dedup(self, session_id: str, keys: Sequence[str]) -> tuple[str, int] | None:
        await self._enter_call()
        # As the SQL stores keep them: idempotency keys with the WAL, answers' apart.
        dedup, idempotent = self._dedup.get(session_id, {}), self._keys.get(session_id, {})
        for key in keys:
            if key in dedup:
                return dedup[key]
            env = (
                idempotent.get(key.removeprefix(KEY_PREFIX)) if key.startswith(KEY_PREFIX) else None
            )
            if env is not None:
                return env.envelope_id, env.seq
        return None

    async def find_answer(
        self, session_id: str, sender_id: str, causation_id: str
    ) -> tuple[str, int] | None:
        await self._enter_call()
        prefix = answer_prefix(sender_id, causation_id)
        dedup = self._dedup.get(session_id, {})
        return next((hit for key, hit in dedup.items() if key.startswith(prefix)), None)

    async def idempotency_keys(
        self, session_id: str, since: int
    ) -> tuple[list[tuple[str, str, int]], bool]:
        await self._enter_call()
        after = [
            (KEY_PREFIX + env.idempotency_key, env.envelope_id, env.seq)
            for env in self._wal.get(session_id, [])[max(since, 0) :]
            if env.idempotency_key is not None
        ]
        # Keys are added in seq order: the first one is the oldest.
        first = next(iter(self._keys.get(session_id, {}).values()), None)
        return after, first is not None and first.seq <= since

    async def recent_dedup(self, session_id: str, limit: int) -> list[tuple[str, str, int]]:
        await self._enter_call()
        # Keys are added in seq order and never replaced: the last ones are the latest.
        latest = itertools.islice(reversed(self._dedup.get(session_id, {}).items()), limit)
        return [(key, envelope_id, seq) for key, (envelope_id, seq) in reversed(list(latest))]

    async def save_snapshot(self, session_id: str, seq: int, state: Any) -> None:
        await self._enter_call()
        self._fenced(session_id)
        self._snapshots[session_id] = (seq, json_bytes(state, f"snapshot of {session_id!r}"))

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        await self._enter_call()
        saved = self._snapshots.get(session_id)
        if saved is None:
            return None
        return Snapshot(seq=saved[0], state=json_value(saved[1]))

    # -- tasks -----------------------------------------------------------------------------

    async def save_task(self, task: TaskMetadata) -> None:
        await self._enter_call()
        self._tasks[task.task_id] = task
        self._feed.mark(self._feed.tasks, task.task_id)

    async def save_open_task(self, task: TaskMetadata) -> TaskMetadata | None:
        await self._enter_call()
        stored = self._tasks.get(task.task_id)
        if stored is not None and stored.state.terminal:
            return stored
        self._tasks[task.task_id] = task
        self._feed.mark(self._feed.tasks, task.task_id)
        return None

    async def get_task(self, task_id: str) -> TaskMetadata | None:
        await self._enter_call()
        return self._tasks.get(task_id)

    async def load_tasks(self) -> list[TaskMetadata]:
        await self._enter_call()
        return list(self._tasks.values())

    async def save_checkpoint(self, task_id: str, data: dict[str, Any]) -> None:
        await self._enter_call()
        self._checkpoints[task_id] = json_bytes(data, f"checkpoint of task {task_id!r}")

    async def load_checkpoint(self, task_id: str) -> dict[str, Any] | None:
        await self._enter_call()
        data = self._checkpoints.get(task_id)
        return None if data is None else json_value(data)

    # -- delivery cursors ------------------------------------------------------------------

    async def save_cursors(self, cursors: Sequence[tuple[str, str, int]]) -> None:
        await self._enter_call()
        for agent_id, session_id, seq in cursors:
            saved = self._cursors.setdefault(agent_id, {})
            saved[session_id] = max(seq, saved.get(session_id, seq))

    async def load_cursors(self, agent_id: str) -> dict[str, int]:
        await self._enter_call()
        return dict(self._cursors.get(agent_id, {}))

    # -- small keyed records ---------------------------------------------------------------

    async def put_kv(self, namespace: str, key: str, value: Any) -> None:
        await self._enter_call()
        data = json_bytes(value, f"kv value {namespace!r}/{key!r}")
        self._kv.setdefault(namespace, {})[key] = data

    async def load_kv(self, namespace: str) -> dict[str, Any]:
        await self._enter_call()
        values = self._kv.get(namespace, {})
        return {key: json_value(values[key]) for key in sorted(values)}

    async def delete_kv(self, namespace: str, key: str | None = None) -> None:
        await self._enter_call()
        if key is None:
            self._kv.pop(namespace, None)
        else:
            self._kv.get(namespace, {}).pop(key, None)

    # -- audit -----------------------------------------------------------------------------

    async def append_audit(self, records: Sequence[dict[str, Any]]) -> None:
        await self._enter_call()
        check_audit(records)
        encoded = [json_bytes(record, "audit record") for record in records]
        self._audit.extend(encoded)

    async def read_audit(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        await self._enter_call()
        check_window(since, limit)
        stop = None if limit is None else since + limit
        return [json_value(record) for record in self._audit[since:stop]]
