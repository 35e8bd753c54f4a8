"""Who an agent is (``Passport``) and what it can do (``Resume``) — reference §2.1-2.2."""

from __future__ import annotations

from typing import Any

import attrs

from ._convert import to_tuple

KINDS = ("agent", "human", "remote_agent")


@attrs.frozen(kw_only=True)
class AuthBlock:
    """How an agent proves who it is: a scheme and the claim presented at registration."""

    scheme: str = "none"
    issuer: str | None = None
    audience: str | None = None
    key_fingerprint: str | None = None
    claim: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class CostProfile:
    """Unvalidated cost hints: USD per million tokens and a latency tier."""

    input_per_mtok: float | None = None
    output_per_mtok: float | None = None
    latency_tier: str | None = None


@attrs.frozen(kw_only=True)
class Passport:
    """An agent's identity; ``agent_id`` and ``created_at`` are stamped by the hub.

    ``name`` is unique per hub and is what access globs match. ``kind`` is ``"agent"``,
    ``"human"`` or ``"remote_agent"``; ``None`` means ``"agent"``.
    """

    name: str
    owner: str = ""
    provider: str | None = None
    model: str | None = None
    cost: CostProfile | None = None
    region: str | None = None
    auth: AuthBlock = attrs.field(factory=AuthBlock)
    version: int = 1
    kind: str | None = None
    agent_id: str | None = None
    created_at: str = ""

    @property
    def effective_kind(self) -> str:
        return self.kind or "agent"


@attrs.frozen(kw_only=True)
class ResumeExample:
    """One piece of past work an agent points to."""

    title: str
    outcome: str = ""
    task_id: str | None = None
    session_id: str | None = None
    when: str | None = None
    note: str | None = None


@attrs.frozen(kw_only=True)
class ObservedStat:
    """The hub's track record of an agent on one capability."""

    n: int = 0
    completed: int = 0
    failed: int = 0
    expired: int = 0
    p50_latency_ms: int | None = None


@attrs.frozen(kw_only=True)
class Resume:
    """Claimed capabilities plus the observed track record; ``version`` is bumped by the hub."""

    claimed_capabilities: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    domains: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    summary: str = ""
    examples: tuple[ResumeExample, ...] = ()
    observed: dict[str, ObservedStat] = attrs.field(factory=dict)
    version: int = 1
    last_updated: str = ""

    def capabilities(self) -> set[str]:
        """Claimed and observed capabilities (what the capability index holds)."""
        return set(self.claimed_capabilities) | set(self.observed)
