"""What the inspector shows, as JSON data: read from a running hub or from a store at rest.

Rules:

- Read only. A source never posts, registers, saves or asks the hub actor anything that
  changes state; the store at rest is opened read-only (``troupe inspect``).
- Never slow the hub: the hub's tables are read in place (they are plain dicts, read
  between two checkpoints), transcripts come from the store (not through the hub actor's
  mailbox), and the audit log is followed incrementally (each read asks only for records
  after the last one seen, ``AUDIT_PAGE`` at a time).
- Statistics over time are sampled every ``SAMPLE_EVERY_S`` seconds of the hub's clock into a
  ring of ``SAMPLES_KEPT`` samples; rates are per second between two samples.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

import attrs
import trio

from ..hub import Hub, HubStatistics
from ..model import Envelope, SessionMetadata
from ..model import unstructure as _unstructure
from ..store import AgentRecord, Store
from ..supervisors import Supervisor

T = TypeVar("T")

#: How often the hub's statistics are sampled (seconds of the hub's clock).
SAMPLE_EVERY_S: Final = 1.0
#: Samples kept for the charts (five minutes at one a second).
SAMPLES_KEPT: Final = 300
#: Audit records read per store call while catching up with the log.
AUDIT_PAGE: Final = 500
#: Audit records the inspector keeps (the tail it shows).
AUDIT_KEPT: Final = 500
#: Sessions one ``/api/sessions`` answer lists at most (newest first), and by default.
SESSIONS_MAX: Final = 1000
SESSIONS_DEFAULT: Final = 200
#: Sessions looked at between two checkpoints while a list is made.
LIST_BATCH: Final = 1000
#: Envelopes one ``/api/sessions/{id}/wal`` answer holds at most, and by default.
WAL_MAX: Final = 1000
WAL_DEFAULT: Final = 200

#: A session's status as the sessions page filters it.
STATUSES: Final = ("live", "passivated", "open", "ended")
#: The statistics charted over time (a rate per second for the counters).
RATES: Final = ("envelopes_accepted", "envelopes_rejected")
LEVELS: Final = (
    "dead_letters",
    "hub_mailbox_high_water",
    "session_mailbox_high_water",
    "connection_mailbox_high_water",
    "live_sessions",
    "connections",
)


@attrs.frozen(kw_only=True)
class SessionFilter:
    """What ``/api/sessions`` keeps: every field that is set must match.

    ``status``: one of ``STATUSES``; ``type``: the manifest type; ``participant``: an agent's
    name or id; ``text``: a substring of the session id.
    """

    status: str | None = None
    type: str | None = None
    participant: str | None = None
    text: str | None = None
    limit: int = SESSIONS_DEFAULT


class Source(Protocol):
    """Where the inspector's data comes from (``HubSource`` or ``StoreSource``)."""

    @property
    def live(self) -> bool: ...

    @property
    def hub(self) -> Hub | None: ...

    async def agents(self) -> list[dict[str, Any]]: ...

    async def sessions(self, wanted: SessionFilter) -> list[dict[str, Any]]: ...

    async def session(self, session_id: str) -> dict[str, Any] | None: ...

    async def wal(self, session_id: str, since: int, limit: int) -> list[dict[str, Any]]: ...

    async def supervision(self) -> dict[str, Any]: ...

    async def statistics(self) -> dict[str, Any]: ...

    async def audit(self, limit: int) -> list[dict[str, Any]]: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Whatever the source does in the background (sampling); runs until cancelled."""
        ...


def envelope_json(env: Envelope) -> dict[str, Any]:
    """An envelope as the pages show it: every field, defaults included."""
    data: dict[str, Any] = _unstructure(env)
    return {
        "seq": env.seq,
        "envelope_id": env.envelope_id,
        "created_at": env.created_at,
        "sender_id": env.sender_id,
        "event_type": env.event_type,
        "text": env.text,
        **data,
    }


def _agent_json(record: AgentRecord, connected: bool | None) -> dict[str, Any]:
    passport, resume = record.passport, record.resume
    return {
        "agent_id": passport.agent_id,
        "name": passport.name,
        "kind": passport.effective_kind,
        "owner": passport.owner,
        "provider": passport.provider,
        "model": passport.model,
        "created_at": passport.created_at,
        "connected": connected,
        "capabilities": sorted(resume.capabilities()),
        "claimed_capabilities": list(resume.claimed_capabilities),
        "summary": resume.summary,
        "track_record": {cap: _unstructure(stat) for cap, stat in sorted(resume.observed.items())},
    }


def _status(md: SessionMetadata, live: bool | None) -> str:
    if md.state.terminal:
        return "ended"
    if live is None:
        return "open"  # a store at rest: no actor runs
    return "live" if live else "passivated"


def _session_json(
    md: SessionMetadata, last_seq: int, live: bool | None, names: Callable[[str], str]
) -> dict[str, Any]:
    return {
        "session_id": md.session_id,
        "type": md.manifest_type,
        "version": md.manifest_version,
        "state": md.state.value,
        "status": _status(md, live),
        "close_reason": md.close_reason,
        "created_at": md.created_at,
        "expires_at": md.expires_at,
        "closed_at": md.closed_at,
        "creator": {"agent_id": md.creator_id, "name": names(md.creator_id)},
        "participants": [
            {"agent_id": p.agent_id, "name": names(p.agent_id), "role": p.role.value}
            for p in md.participants
        ],
        "labels": dict(md.labels),
        "parent_session_id": md.parent_session_id,
        "last_seq": last_seq,
    }


def _keeps(
    md: SessionMetadata, live: bool | None, wanted: SessionFilter, names: Callable[[str], str]
) -> bool:
    if wanted.status is not None:
        status = _status(md, live)
        if wanted.status == "open":
            if status == "ended":
                return False
        elif status != wanted.status:
            return False
    if wanted.type is not None and md.manifest_type != wanted.type:
        return False
    if wanted.text is not None and wanted.text not in md.session_id:
        return False
    if wanted.participant is not None:
        who = wanted.participant
        if not any(who in (p.agent_id, names(p.agent_id)) for p in md.participants):
            return False
    return True


async def _newest_kept(
    rows: Sequence[T],
    fields: Callable[[T], tuple[SessionMetadata, bool | None]],
    wanted: SessionFilter,
    names: Callable[[str], str],
) -> list[T]:
    """The newest ``wanted.limit`` rows that ``wanted`` keeps, newest first.

    Looks at ``LIST_BATCH`` rows between two checkpoints (on a running hub its loop goes on
    meanwhile), and keeps only the newest ``limit`` while it looks (no sort of them all).
    """
    kept: list[tuple[tuple[str, str], int, T]] = []
    for index, row in enumerate(rows):
        if index % LIST_BATCH == LIST_BATCH - 1:
            await trio.lowlevel.checkpoint()
        md, live = fields(row)
        if _keeps(md, live, wanted, names):
            item = ((md.created_at, md.session_id), index, row)
            if len(kept) < wanted.limit:
                heapq.heappush(kept, item)
            elif item[0] > kept[0][0]:
                heapq.heapreplace(kept, item)
    await trio.lowlevel.checkpoint()
    return [row for _, _, row in sorted(kept, key=lambda item: item[0], reverse=True)]


class AuditTail:
    """The last ``AUDIT_KEPT`` records of an audit log, caught up incrementally.

    Also keeps the last crash of each supervised child it read about (``crashes``): a
    session actor's by its session id, a hub child's by its child id.
    """

    def __init__(self, read: Callable[[int, int], Awaitable[list[dict[str, Any]]]]) -> None:
        self._read = read
        self.position = 0
        self.records: deque[dict[str, Any]] = deque(maxlen=AUDIT_KEPT)
        self.crashes: dict[str, dict[str, Any]] = {}
        self._lock = trio.Lock()

    async def catch_up(self) -> None:
        async with self._lock:  # two viewers at once read the new records once
            while True:
                page = await self._read(self.position, AUDIT_PAGE)
                for record in page:
                    self._note(record)
                self.position += len(page)
                if len(page) < AUDIT_PAGE:
                    return

    def _note(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        kind = record.get("kind")
        if kind == "session_actor_crashed":
            key = record.get("session_id")
        elif kind == "hub_child_crashed":
            key = record.get("child")
        else:
            return
        if isinstance(key, str):
            self.crashes[key] = {
                "at": record.get("at"),
                "exc_type": record.get("exc_type"),
                "exc_message": record.get("exc_message"),
                "restarting": record.get("restarting"),
            }

    def tail(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` records, newest first."""
        records = list(self.records)[-limit:] if limit > 0 else []
        records.reverse()
        return records


def _supervisor_json(
    sup: Supervisor | None,
    crashes: dict[str, dict[str, Any]],
    nested: dict[str, Supervisor | None],
) -> dict[str, Any] | None:
    if sup is None:
        return None
    stats = sup.statistics()
    children = []
    for child in sup.which_children():
        children.append(
            {
                "id": child.id,
                "kind": child.kind,
                "restart": str(child.restart),
                "running": child.running,
                "restarts": child.restarts,
                "last_crash": crashes.get(child.id),
                "supervisor": (
                    _supervisor_json(nested[child.id], crashes, {}) if child.id in nested else None
                ),
            }
        )
    return {
        "name": sup.name,
        "strategy": stats.strategy,
        "state": sup.state,
        "restarts": stats.restarts,
        "running": stats.running,
        "children": children,
    }


class HubSource:
    """The inspector's data from a hub running in this process."""

    live = True

    def __init__(
        self,
        hub: Hub,
        *,
        sample_every: float = SAMPLE_EVERY_S,
        samples_kept: int = SAMPLES_KEPT,
    ) -> None:
        if not sample_every > 0:
            raise ValueError(f"sample_every must be > 0 seconds, got {sample_every!r}")
        if samples_kept < 2:
            raise ValueError(f"samples_kept must be >= 2, got {samples_kept!r}")
        self._hub = hub
        self._every = sample_every
        self.samples: deque[tuple[float, HubStatistics]] = deque(maxlen=samples_kept)
        self._audit = AuditTail(lambda since, limit: hub.read_audit(since, limit))

    @property
    def hub(self) -> Hub:
        return self._hub

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample the hub's statistics every ``sample_every`` seconds, until cancelled."""
        self.sample()
        task_status.started()
        while True:
            await trio.sleep(self._every)
            self.sample()

    def sample(self) -> None:
        self.samples.append((trio.current_time(), self._hub.statistics()))

    async def agents(self) -> list[dict[str, Any]]:
        await trio.lowlevel.checkpoint()
        core = self._hub.core
        bound = core.bindings
        return [_agent_json(r, r.passport.agent_id in bound) for r in core.registry.agents.values()]

    async def sessions(self, wanted: SessionFilter) -> list[dict[str, Any]]:
        name_for = self._hub.name_for
        # A copy of the entries (the directory may change while the list is made); each one
        # is read as it is when it is looked at.
        entries = list(self._hub.core.directory.sessions.values())
        kept = await _newest_kept(entries, lambda e: (e.metadata, e.running), wanted, name_for)
        return [_session_json(e.metadata, e.last_seq, e.running, name_for) for e in kept]

    async def session(self, session_id: str) -> dict[str, Any] | None:
        await trio.lowlevel.checkpoint()
        entry = self._hub.core.directory.sessions.get(session_id)
        if entry is None:
            return None
        return _session_json(entry.metadata, entry.last_seq, entry.running, self._hub.name_for)

    async def wal(self, session_id: str, since: int, limit: int) -> list[dict[str, Any]]:
        envelopes = await self._hub.core.store.read(session_id, since, since + limit)
        return [envelope_json(e) for e in envelopes]

    async def supervision(self) -> dict[str, Any]:
        await self._audit.catch_up()
        nested = self._hub.supervisors()
        root = nested.pop("hub")
        return {"live": True, "root": _supervisor_json(root, self._audit.crashes, nested)}

    async def statistics(self) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        now = _unstructure(self._hub.statistics())
        samples = list(self.samples)
        times = [t - samples[-1][0] for t, _ in samples] if samples else []
        series: dict[str, list[float]] = {}
        for name in RATES:
            rates = [0.0] if samples else []
            for (t0, s0), (t1, s1) in itertools.pairwise(samples):
                span = t1 - t0
                rates.append((getattr(s1, name) - getattr(s0, name)) / span if span > 0 else 0.0)
            series[f"{name}_per_s"] = rates
        for name in LEVELS:
            series[name] = [float(getattr(s, name)) for _, s in samples]
        return {"live": True, "now": now, "every_s": self._every, "times": times, "series": series}

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        await self._audit.catch_up()
        return self._audit.tail(limit)


class StoreSource:
    """The inspector's data from a store at rest (``troupe inspect``); no live feed.

    Each page reads the store again, so a hub running on the same file shows its progress
    on a reload.
    """

    live = False

    def __init__(self, store: Store) -> None:
        self._store = store
        self._audit = AuditTail(store.read_audit)

    @property
    def hub(self) -> None:
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def _names(self) -> Callable[[str], str]:
        names = {r.passport.agent_id: r.passport.name for r in await self._store.load_agents()}
        return lambda agent_id: names.get(agent_id, agent_id)

    async def agents(self) -> list[dict[str, Any]]:
        return [_agent_json(r, None) for r in await self._store.load_agents()]

    async def sessions(self, wanted: SessionFilter) -> list[dict[str, Any]]:
        names = await self._names()
        everything = await self._store.load_sessions()
        kept = await _newest_kept(everything, lambda md: (md, None), wanted, names)
        # Filtered and cut before the last seqs are read: one store read per listed session.
        return [
            _session_json(md, await self._store.last_seq(md.session_id), None, names) for md in kept
        ]

    async def session(self, session_id: str) -> dict[str, Any] | None:
        md = await self._store.get_session(session_id)
        if md is None:
            return None
        last = await self._store.last_seq(session_id)
        return _session_json(md, last, None, await self._names())

    async def wal(self, session_id: str, since: int, limit: int) -> list[dict[str, Any]]:
        return [envelope_json(e) for e in await self._store.read(session_id, since, since + limit)]

    async def supervision(self) -> dict[str, Any]:
        await self._audit.catch_up()
        return {"live": False, "root": None, "crashes": self._audit.crashes}

    async def statistics(self) -> dict[str, Any]:
        sessions = await self._store.load_sessions()
        ended = sum(1 for md in sessions if md.state.terminal)
        now = {
            "agents": len(await self._store.load_agents()),
            "sessions": len(sessions),
            "open_sessions": len(sessions) - ended,
        }
        return {"live": False, "now": now, "every_s": None, "times": [], "series": {}}

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        await self._audit.catch_up()
        return self._audit.tail(limit)
