"""Admission rules the hub enforces, without I/O (reference §3.3, §3.13).

Rules:

- Access globs (``fnmatchcase``) match agent **names**: a recipient's ``inbound_from`` against
  the sender, the sender's ``outbound_to`` against each explicitly addressed recipient.
- ``delegation_depth``: an envelope may be as deep as the sender's limit, not deeper
  (0 disables the check).
- ``rate``: one token bucket per sender, capacity ``max(1, burst or per_minute)``, refilled at
  ``per_minute / 60`` tokens a second, starting full; each post takes one token. The reference
  stores this block without enforcing it; troupe enforces it.
- Inbox: an agent's pending count is the substantive envelopes dispatched to it and not yet
  acknowledged; a post that would reach an agent already at ``max_pending`` is refused.
  Crossing ``high_water`` upwards is reported once per crossing.

Times are ``now`` arguments in seconds from the hub's monotonic clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase

from .._errors import AccessDeniedError, InboxFull, RateLimited
from ..model import InboxBlock, Passport, RateBlock, Rule

#: Characters that make a pattern a glob; a pattern without them matches only itself.
_MAGIC = frozenset("*?[")
#: pattern -> whether it has a wildcard (patterns come from rules: a small, fixed set).
_IS_GLOB: dict[str, bool] = {}
_IS_GLOB_KEPT = 4096


def _is_glob(pattern: str) -> bool:
    magic = _IS_GLOB.get(pattern)
    if magic is None:
        magic = not _MAGIC.isdisjoint(pattern)
        if len(_IS_GLOB) < _IS_GLOB_KEPT:
            _IS_GLOB[pattern] = magic
    return magic


def glob_allows(patterns: Iterable[str], name: str) -> bool:
    """Whether ``name`` matches one of ``patterns`` (``fnmatchcase``).

    On the post path (every recipient's ``inbound_from``): ``"*"`` and literal names are
    decided without ``fnmatchcase``; only patterns with a wildcard go through it.
    """
    for pattern in patterns:
        if pattern == "*":
            return True
        if _is_glob(pattern):
            if fnmatchcase(name, pattern):
                return True
        elif pattern == name:
            return True
    return False


def check_outbound(sender: Passport, rule: Rule, recipients: Iterable[Passport]) -> None:
    """Refuse an explicit audience the sender's ``outbound_to`` does not cover."""
    for recipient in recipients:
        if not glob_allows(rule.access.outbound_to, recipient.name):
            raise AccessDeniedError(
                f"agent {sender.name!r} ({sender.agent_id}) may not address "
                f"{recipient.name!r}: not in its outbound_to {list(rule.access.outbound_to)}"
            )


def check_depth(sender: Passport, rule: Rule, depth: int) -> None:
    limit = rule.limits.delegation_depth
    if limit > 0 and depth > limit:
        raise AccessDeniedError(
            f"envelope depth {depth} exceeds delegation_depth {limit} of agent "
            f"{sender.name!r} ({sender.agent_id})"
        )


def accepts_inbound(rule: Rule, sender_name: str) -> bool:
    return glob_allows(rule.access.inbound_from, sender_name)


class TokenBucket:
    """A token bucket: ``per_minute`` refill, ``max(1, burst or per_minute)`` capacity, full."""

    __slots__ = ("capacity", "per_second", "stamp", "tokens")

    def __init__(self, per_minute: int, burst: int, now: float) -> None:
        self.capacity = float(max(1, burst or per_minute))
        self.per_second = per_minute / 60.0
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.per_second)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_for_token(self) -> float:
        """Seconds until the next token (after a failed :meth:`take`)."""
        if self.per_second <= 0:
            return float("inf")
        return max(0.0, (1.0 - self.tokens) / self.per_second)


class RateLimiter:
    """Token buckets per sender; a changed rate block starts a fresh (full) bucket."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[RateBlock, TokenBucket]] = {}

    def check(self, sender: Passport, rate: RateBlock, now: float) -> None:
        """Take one token for ``sender`` or raise :class:`RateLimited`."""
        agent_id = sender.agent_id or sender.name
        if rate.per_minute <= 0:
            self._buckets.pop(agent_id, None)
            return
        entry = self._buckets.get(agent_id)
        if entry is None or entry[0] != rate:
            entry = (rate, TokenBucket(rate.per_minute, rate.burst, now))
            self._buckets[agent_id] = entry
        if not entry[1].take(now):
            raise RateLimited(
                f"agent {sender.name!r} ({agent_id}) is over its rate of "
                f"{rate.per_minute}/min (burst {rate.burst})"
            )

    def forget(self, agent_id: str) -> None:
        self._buckets.pop(agent_id, None)


class InboxLedger:
    """Pending (dispatched, unacknowledged) substantive envelopes per agent."""

    __slots__ = ("_pending", "freed", "watched")

    def __init__(self) -> None:
        self._pending: dict[str, int] = {}
        #: Agents whose inbox someone waits for room in (overflow "block"), and what to call
        #: when one of their pending envelopes is acknowledged (``_backpressure``).
        self.watched: set[str] = set()
        self.freed: Callable[[str], None] | None = None

    def pending(self, agent_id: str) -> int:
        return self._pending.get(agent_id, 0)

    def check(self, recipient: Passport, inbox: InboxBlock) -> None:
        """Raise :class:`InboxFull` when ``recipient`` is at its ``max_pending``."""
        if inbox.max_pending <= 0:
            return
        agent_id = recipient.agent_id or ""
        pending = self._pending.get(agent_id, 0)
        if pending >= inbox.max_pending:
            raise InboxFull(
                f"inbox of agent {recipient.name!r} ({agent_id}) is full: "
                f"{pending} pending, max_pending {inbox.max_pending}"
            )

    def add(self, agent_id: str, inbox: InboxBlock) -> int | None:
        """Count one more pending envelope; return the count when it crosses high water."""
        before = self._pending.get(agent_id, 0)
        after = before + 1
        self._pending[agent_id] = after
        mark = inbox.effective_high_water
        if mark is not None and before < mark <= after:
            return after
        return None

    def done(self, agent_id: str) -> None:
        """One pending envelope was acknowledged (never below zero)."""
        count = self._pending.get(agent_id, 0)
        if count <= 1:
            self._pending.pop(agent_id, None)
        else:
            self._pending[agent_id] = count - 1
        if agent_id in self.watched and self.freed is not None:
            self.freed(agent_id)

    def reset(self, agent_id: str) -> None:
        self._pending.pop(agent_id, None)
        if agent_id in self.watched and self.freed is not None:
            self.freed(agent_id)

    def total(self) -> int:
        return sum(self._pending.values())
