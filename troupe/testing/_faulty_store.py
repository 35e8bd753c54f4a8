"""``FaultyStore``: any ``Store``, with failures and delays injected on demand.

A test arms faults, then runs the code under test; each Store call first consults the armed
faults in the order they were armed, and the first one that matches it fires (and counts one
of its ``n``):

- ``fail_next(target, n)`` makes the next ``n`` matching calls raise (a :class:`StoreError`
  by default, as a full disk or an I/O error would). The failing call does nothing, as a
  rolled-back transaction does nothing; with ``lost_reply=True`` it does its work first and
  then raises (a commit that happened but whose success never reached the caller).
- ``delay(target, seconds)`` makes matching calls sleep first, on trio's clock (so a
  ``MockClock`` drives it).

A *target* is a Store method name (``"append"``, ``"load_snapshot"``, ...) or a group:
``"reads"`` (every read), ``"commit"`` (every write: the commit that would make it durable
fails) and ``"snapshot"`` (``save_snapshot``). ``session_id=`` narrows a fault to the calls
about one session. Everything injected is counted in :meth:`FaultyStore.statistics`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import attrs
import trio

from .._errors import StoreError
from ..model import Envelope, Resume, Rule, SessionMetadata, TaskMetadata
from ..store import AgentRecord, Changes, Snapshot, Store

T = TypeVar("T")

#: Store methods that only read.
READS: Final = (
    "load_agents",
    "agents_with_capability",
    "get_agent",
    "get_agent_named",
    "last_change",
    "changes",
    "load_sessions",
    "get_session",
    "read",
    "last_seq",
    "find_idempotent",
    "load_dedup",
    "find_dedup",
    "find_answer",
    "recent_dedup",
    "load_snapshot",
    "load_tasks",
    "get_task",
    "load_checkpoint",
    "load_cursors",
    "load_kv",
    "read_audit",
)
#: Store methods that write (each one a commit in SQLite).
WRITES: Final = (
    "save_agent",
    "save_resume",
    "save_rule",
    "save_skill",
    "delete_agent",
    "save_session",
    "append",
    "save_snapshot",
    "save_task",
    "save_open_task",
    "save_checkpoint",
    "save_cursors",
    "put_kv",
    "delete_kv",
    "append_audit",
)
#: The targets ``fail_next`` and ``delay`` accept besides a method name (``"open"`` is
#: entering the store).
GROUPS: Final[Mapping[str, tuple[str, ...]]] = {
    "reads": READS,
    "commit": WRITES,
    "snapshot": ("save_snapshot",),
    "open": ("open",),
}

ErrorSpec = Exception | Callable[[], Exception] | None


def _methods_of(target: str) -> frozenset[str]:
    if target in GROUPS:
        return frozenset(GROUPS[target])
    if target in READS or target in WRITES:
        return frozenset((target,))
    known = ", ".join([*GROUPS, *READS, *WRITES])
    raise ValueError(f"unknown FaultyStore target {target!r}; use one of: {known}")


def _check_count(n: int | None) -> None:
    if n is not None and n < 1:
        raise ValueError(f"n must be at least 1 (or None for 'until healed'), got {n}")


@attrs.define(eq=False)
class _Rule:
    methods: frozenset[str]
    session_id: str | None
    remaining: float  # math.inf: until healed
    error: ErrorSpec = None
    lost_reply: bool = False
    seconds: float = 0.0

    def matches(self, method: str, session_id: str | None) -> bool:
        if method not in self.methods or self.remaining <= 0:
            return False
        return self.session_id is None or self.session_id == session_id

    def take(self) -> None:
        self.remaining -= 1


@attrs.frozen(kw_only=True)
class FaultyStoreStatistics:
    """What a :class:`FaultyStore` saw and did, per Store method name."""

    calls: Mapping[str, int]
    failed: Mapping[str, int]
    delayed: Mapping[str, int]

    @property
    def injected(self) -> int:
        """Failures injected, over every method."""
        return sum(self.failed.values())


class FaultyStore:
    """Wraps any :class:`Store` and fails or delays its calls when told to.

    Use it wherever a store goes (``open_hub(FaultyStore(MemoryStore()))``); entering it
    enters the wrapped store. With nothing armed it behaves exactly like the wrapped store.

    Args:
      inner: the store that does the real work.
    """

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self._faults: list[_Rule] = []
        self._delays: list[_Rule] = []
        self._calls: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._delayed: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"FaultyStore({self._inner!r})"

    @property
    def inner(self) -> Store:
        """The wrapped store (read it directly to look past the faults)."""
        return self._inner

    # -- arming ------------------------------------------------------------------------------

    def fail_next(
        self,
        target: str,
        n: int | None = 1,
        *,
        session_id: str | None = None,
        error: ErrorSpec = None,
        lost_reply: bool = False,
    ) -> None:
        """Make the next ``n`` calls matching ``target`` fail.

        Args:
          target: a Store method name, or ``"reads"``, ``"commit"``, ``"snapshot"``,
            ``"open"`` (see the module docstring).
          n: how many calls fail; ``None`` fails every matching call until :meth:`heal`.
          session_id: only calls about this session (methods that take one) match.
          error: the exception to raise, or a callable making it; by default a
            :class:`StoreError` naming the method and the session.
          lost_reply: do the operation, then raise: the write is durable although the
            caller was told it failed.

        Raises:
          ValueError: an unknown target, or ``n < 1``.
        """
        _check_count(n)
        methods = _methods_of(target)
        if lost_reply and not methods <= set(WRITES):
            raise ValueError(f"lost_reply applies to writes only, not to {target!r}")
        self._faults.append(
            _Rule(
                methods,
                session_id,
                math.inf if n is None else n,
                error=error,
                lost_reply=lost_reply,
            )
        )

    def delay(
        self, target: str, seconds: float, *, n: int | None = None, session_id: str | None = None
    ) -> None:
        """Make calls matching ``target`` sleep ``seconds`` (trio's clock) before they run.

        Args:
          target: as for :meth:`fail_next`.
          seconds: the delay; must be >= 0.
          n: how many calls are delayed; ``None`` delays every one until :meth:`heal`.
          session_id: only calls about this session match.

        Raises:
          ValueError: an unknown target, a negative delay, or ``n < 1``.
        """
        _check_count(n)
        if not seconds >= 0:
            raise ValueError(f"a delay must be >= 0 seconds, got {seconds}")
        self._delays.append(
            _Rule(_methods_of(target), session_id, math.inf if n is None else n, seconds=seconds)
        )

    def heal(self, target: str | None = None) -> None:
        """Disarm the faults and delays for ``target`` (every one with ``None``).

        Raises:
          ValueError: an unknown target.
        """
        if target is None:
            self._faults.clear()
            self._delays.clear()
            return
        methods = _methods_of(target)
        self._faults = [r for r in self._faults if not r.methods <= methods]
        self._delays = [r for r in self._delays if not r.methods <= methods]

    @property
    def armed(self) -> int:
        """How many failures are still armed (``math.inf`` counts as one)."""
        return sum(1 if r.remaining == math.inf else int(r.remaining) for r in self._faults)

    def statistics(self) -> FaultyStoreStatistics:
        return FaultyStoreStatistics(
            calls=dict(self._calls), failed=dict(self._failed), delayed=dict(self._delayed)
        )

    # -- the gate every call goes through ----------------------------------------------------

    def _error(self, rule: _Rule, method: str, session_id: str | None) -> Exception:
        if rule.error is None:
            about = f" for session {session_id!r}" if session_id is not None else ""
            return StoreError(f"injected fault: {method}{about} failed (I/O error)")
        if isinstance(rule.error, Exception):
            return rule.error
        return rule.error()

    @staticmethod
    def _take(rules: list[_Rule], method: str, session_id: str | None) -> _Rule | None:
        for rule in rules:
            if rule.matches(method, session_id):
                rule.take()
                if rule.remaining <= 0:
                    rules.remove(rule)
                return rule
        return None

    async def _call(
        self, method: str, session_id: str | None, call: Callable[[], Awaitable[T]]
    ) -> T:
        self._calls[method] = self._calls.get(method, 0) + 1
        delay = self._take(self._delays, method, session_id)
        if delay is not None:
            self._delayed[method] = self._delayed.get(method, 0) + 1
            await trio.sleep(delay.seconds)
        fault = self._take(self._faults, method, session_id)
        if fault is None:
            return await call()
        self._failed[method] = self._failed.get(method, 0) + 1
        if fault.lost_reply:
            await call()
        else:
            await trio.lowlevel.checkpoint()  # a failed call is a checkpoint, as a real one
        raise self._error(fault, method, session_id)

    # -- Store -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._call("open", None, self._inner.__aenter__)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    async def save_agent(self, record: AgentRecord) -> None:
        await self._call("save_agent", None, partial(self._inner.save_agent, record))

    async def save_resume(self, agent_id: str, resume: Resume) -> None:
        await self._call("save_resume", None, partial(self._inner.save_resume, agent_id, resume))

    async def save_rule(self, agent_id: str, rule: Rule) -> None:
        await self._call("save_rule", None, partial(self._inner.save_rule, agent_id, rule))

    async def save_skill(self, agent_id: str, skill_md: str | None) -> None:
        await self._call("save_skill", None, partial(self._inner.save_skill, agent_id, skill_md))

    async def delete_agent(self, agent_id: str) -> None:
        await self._call("delete_agent", None, partial(self._inner.delete_agent, agent_id))

    async def load_agents(self) -> list[AgentRecord]:
        return await self._call("load_agents", None, self._inner.load_agents)

    async def agents_with_capability(self, capability: str) -> list[str]:
        call = partial(self._inner.agents_with_capability, capability)
        return await self._call("agents_with_capability", None, call)

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        return await self._call("get_agent", None, partial(self._inner.get_agent, agent_id))

    async def get_agent_named(self, name: str) -> AgentRecord | None:
        call = partial(self._inner.get_agent_named, name)
        return await self._call("get_agent_named", None, call)

    async def last_change(self) -> int:
        return await self._call("last_change", None, self._inner.last_change)

    async def changes(self, since: int) -> Changes:
        return await self._call("changes", None, partial(self._inner.changes, since))

    async def save_session(self, metadata: SessionMetadata) -> None:
        call = partial(self._inner.save_session, metadata)
        await self._call("save_session", metadata.session_id, call)

    async def load_sessions(self) -> list[SessionMetadata]:
        return await self._call("load_sessions", None, self._inner.load_sessions)

    async def get_session(self, session_id: str) -> SessionMetadata | None:
        return await self._call(
            "get_session", session_id, partial(self._inner.get_session, session_id)
        )

    async def append(
        self,
        session_id: str,
        envelopes: Sequence[Envelope],
        *,
        metadata: SessionMetadata | None = None,
    ) -> None:
        call = partial(self._inner.append, session_id, envelopes, metadata=metadata)
        await self._call("append", session_id, call)

    async def read(
        self, session_id: str, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        return await self._call(
            "read", session_id, partial(self._inner.read, session_id, since, until)
        )

    async def last_seq(self, session_id: str) -> int:
        return await self._call("last_seq", session_id, partial(self._inner.last_seq, session_id))

    async def find_idempotent(self, session_id: str, key: str) -> Envelope | None:
        call = partial(self._inner.find_idempotent, session_id, key)
        return await self._call("find_idempotent", session_id, call)

    async def load_dedup(self, session_id: str) -> dict[str, tuple[str, int]]:
        return await self._call(
            "load_dedup", session_id, partial(self._inner.load_dedup, session_id)
        )

    async def find_dedup(self, session_id: str, keys: Sequence[str]) -> tuple[str, int] | None:
        call = partial(self._inner.find_dedup, session_id, keys)
        return await self._call("find_dedup", session_id, call)

    async def idempotency_keys(
        self, session_id: str, since: int
    ) -> tuple[list[tuple[str, str, int]], bool]:
        call = partial(self._inner.idempotency_keys, session_id, since)
        return await self._call("idempotency_keys", session_id, call)

    async def find_answer(
        self, session_id: str, sender_id: str, causation_id: str
    ) -> tuple[str, int] | None:
        call = partial(self._inner.find_answer, session_id, sender_id, causation_id)
        return await self._call("find_answer", session_id, call)

    async def recent_dedup(self, session_id: str, limit: int) -> list[tuple[str, str, int]]:
        call = partial(self._inner.recent_dedup, session_id, limit)
        return await self._call("recent_dedup", session_id, call)

    async def save_snapshot(self, session_id: str, seq: int, state: Any) -> None:
        call = partial(self._inner.save_snapshot, session_id, seq, state)
        await self._call("save_snapshot", session_id, call)

    async def load_snapshot(self, session_id: str) -> Snapshot | None:
        call = partial(self._inner.load_snapshot, session_id)
        return await self._call("load_snapshot", session_id, call)

    async def save_task(self, task: TaskMetadata) -> None:
        await self._call("save_task", task.session_id, partial(self._inner.save_task, task))

    async def save_open_task(self, task: TaskMetadata) -> TaskMetadata | None:
        call = partial(self._inner.save_open_task, task)
        return await self._call("save_open_task", task.session_id, call)

    async def get_task(self, task_id: str) -> TaskMetadata | None:
        return await self._call("get_task", None, partial(self._inner.get_task, task_id))

    async def load_tasks(self) -> list[TaskMetadata]:
        return await self._call("load_tasks", None, self._inner.load_tasks)

    async def save_checkpoint(self, task_id: str, data: dict[str, Any]) -> None:
        call = partial(self._inner.save_checkpoint, task_id, data)
        await self._call("save_checkpoint", None, call)

    async def load_checkpoint(self, task_id: str) -> dict[str, Any] | None:
        return await self._call(
            "load_checkpoint", None, partial(self._inner.load_checkpoint, task_id)
        )

    async def save_cursors(self, cursors: Sequence[tuple[str, str, int]]) -> None:
        call = partial(self._inner.save_cursors, cursors)
        await self._call("save_cursors", None, call)

    async def load_cursors(self, agent_id: str) -> dict[str, int]:
        return await self._call("load_cursors", None, partial(self._inner.load_cursors, agent_id))

    async def put_kv(self, namespace: str, key: str, value: Any) -> None:
        await self._call("put_kv", None, partial(self._inner.put_kv, namespace, key, value))

    async def load_kv(self, namespace: str) -> dict[str, Any]:
        return await self._call("load_kv", None, partial(self._inner.load_kv, namespace))

    async def delete_kv(self, namespace: str, key: str | None = None) -> None:
        await self._call("delete_kv", None, partial(self._inner.delete_kv, namespace, key))

    async def append_audit(self, records: Sequence[dict[str, Any]]) -> None:
        await self._call("append_audit", None, partial(self._inner.append_audit, records))

    async def read_audit(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        return await self._call("read_audit", None, partial(self._inner.read_audit, since, limit))
