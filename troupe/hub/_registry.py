"""The registry: agents by id and by name, rules, skills and the capability index.

An ETS-style table: the hub actor owns it and is its only writer (after the store has
accepted the change); everyone else (the ``Hub`` handle, session and connection actors)
reads it synchronously through ``HubCore.registry``, typed :class:`RegistryView`, which has
no writes. Values are immutable records, so a reader never sees a half-made change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import attrs

from .._errors import NotFoundError
from ..model import ObservedStat, Passport, Resume, Rule
from ..store import AgentRecord
from . import _gc


class RegistryView(Protocol):
    """The registry's reads: what the hub actor publishes as ``HubCore.registry``."""

    @property
    def agents(self) -> Mapping[str, AgentRecord]: ...

    def __len__(self) -> int: ...

    def __contains__(self, agent_id: str) -> bool: ...

    def record(self, agent_id: str) -> AgentRecord: ...

    def resolve(self, name_or_id: str) -> AgentRecord: ...

    def passport(self, agent_id: str) -> Passport | None: ...

    def rule(self, agent_id: str) -> Rule | None: ...

    def name_for(self, agent_id: str) -> str: ...

    def find_agent_id(self, name: str) -> str | None: ...

    def with_capability(self, capability: str) -> list[str]: ...

    def search(
        self,
        *,
        capability: str | None = None,
        query: str | None = None,
        kind: str | None = None,
        sort_by: str | None = None,
        limit: int = 50,
    ) -> list[Passport]: ...


@attrs.define
class Registry:
    """Registered agents, in registration order, and their indexes."""

    agents: dict[str, AgentRecord] = attrs.field(factory=dict)
    by_name: dict[str, str] = attrs.field(factory=dict)
    by_capability: dict[str, set[str]] = attrs.field(factory=dict)

    @classmethod
    def from_records(cls, records: list[AgentRecord]) -> Registry:
        registry = cls()
        for record in records:
            registry.put(record)
        return registry

    # -- reads -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.agents)

    def __contains__(self, agent_id: str) -> bool:
        return agent_id in self.agents

    def record(self, agent_id: str) -> AgentRecord:
        record = self.agents.get(agent_id)
        if record is None:
            raise NotFoundError(f"agent not registered: {agent_id!r}")
        return record

    def resolve(self, name_or_id: str) -> AgentRecord:
        """Names first, then ids (as the reference does)."""
        agent_id = self.by_name.get(name_or_id, name_or_id)
        record = self.agents.get(agent_id)
        if record is None:
            raise NotFoundError(f"agent not found: {name_or_id!r}")
        return record

    def passport(self, agent_id: str) -> Passport | None:
        record = self.agents.get(agent_id)
        return record.passport if record is not None else None

    def rule(self, agent_id: str) -> Rule | None:
        record = self.agents.get(agent_id)
        return record.rule if record is not None else None

    def name_for(self, agent_id: str) -> str:
        record = self.agents.get(agent_id)
        return record.passport.name if record is not None else agent_id

    def find_agent_id(self, name: str) -> str | None:
        return self.by_name.get(name)

    def with_capability(self, capability: str) -> list[str]:
        return sorted(self.by_capability.get(capability, ()))

    def search(
        self,
        *,
        capability: str | None = None,
        query: str | None = None,
        kind: str | None = None,
        sort_by: str | None = None,
        limit: int = 50,
    ) -> list[Passport]:
        """Passports matching every given filter (reference §3.4 ``list_agents``).

        ``sort_by``: ``"name"`` (ascending), ``"success_rate"`` (completed / observed, best
        first, over the ``capability`` if given, else all capabilities), ``"latency"`` (lowest
        last observed latency first) or ``None`` (registration order).
        """
        wanted = set(self.by_capability.get(capability, ())) if capability is not None else None
        needle = query.lower() if query else None
        found: list[AgentRecord] = []
        for agent_id, record in self.agents.items():
            if wanted is not None and agent_id not in wanted:
                continue
            if kind is not None and record.passport.effective_kind != kind:
                continue
            if needle is not None and needle not in record.resume.summary.lower():
                continue
            found.append(record)
        if sort_by == "name":
            found.sort(key=lambda r: r.passport.name)
        elif sort_by == "success_rate":
            found.sort(key=lambda r: -_success_rate(r.resume, capability))
        elif sort_by == "latency":
            found.sort(key=lambda r: _latency(r.resume, capability))
        elif sort_by is not None:
            raise ValueError(
                f"unknown sort_by {sort_by!r}; use 'name', 'success_rate' or 'latency'"
            )
        return [r.passport for r in found[: max(0, limit)]]

    # -- writes (hub actor only) -------------------------------------------------------------

    def put(self, record: AgentRecord) -> None:
        """Add or replace ``record``; its name now names it."""
        agent_id = record.passport.agent_id
        assert agent_id is not None, "a registered passport carries its agent_id"
        name = record.passport.name
        old = self.agents.get(agent_id)
        if old is not None:
            self._unindex(agent_id, old.resume)
            if old.passport.name != name and self.by_name.get(old.passport.name) == agent_id:
                del self.by_name[old.passport.name]
        else:
            _gc.grew()
        self.agents[agent_id] = record
        self.by_name[name] = agent_id
        for capability in record.resume.capabilities():
            self.by_capability.setdefault(capability, set()).add(agent_id)

    def remove(self, agent_id: str) -> AgentRecord:
        """Drop an agent (NotFoundError if unknown); its name is let go if it still names
        this agent."""
        record = self.record(agent_id)
        del self.agents[agent_id]
        if self.by_name.get(record.passport.name) == agent_id:
            del self.by_name[record.passport.name]
        self._unindex(agent_id, record.resume)
        return record

    def _unindex(self, agent_id: str, resume: Resume) -> None:
        for capability in resume.capabilities():
            bucket = self.by_capability.get(capability)
            if bucket is not None:
                bucket.discard(agent_id)
                if not bucket:
                    del self.by_capability[capability]


def _stats(resume: Resume, capability: str | None) -> list[ObservedStat]:
    if capability is None:
        return list(resume.observed.values())
    stat = resume.observed.get(capability)
    return [stat] if stat is not None else []


def _success_rate(resume: Resume, capability: str | None) -> float:
    stats = _stats(resume, capability)
    n = sum(s.n for s in stats)
    return sum(s.completed for s in stats) / n if n else 0.0


def _latency(resume: Resume, capability: str | None) -> float:
    samples = [s.p50_latency_ms for s in _stats(resume, capability) if s.p50_latency_ms is not None]
    return float(min(samples)) if samples else float("inf")
