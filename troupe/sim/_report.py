"""What a simulated run reports: the WAL hash, latencies, memory and the hub's counters."""

from __future__ import annotations

import hashlib
import resource
import sys
from collections.abc import Sequence
from typing import Any

import attrs

from ..hub import Hub, HubStatistics
from ..model import dumps


@attrs.frozen(kw_only=True)
class SimReport:
    """The outcome of one run.

    ``reproducible()`` holds what the seed fixes under virtual time (same seed, same
    values, byte for byte); the rest is measured on the machine (wall time, latency, RSS).
    """

    scenario: str
    seed: int
    virtual_time: bool
    agents: int
    sessions: int
    envelopes: int
    wal_hash: str
    sim_seconds: float
    wall_seconds: float
    post_p50_us: float
    post_p99_us: float
    posts: int
    peak_rss_bytes: int
    hub: HubStatistics
    notes: tuple[tuple[str, str], ...] = ()

    @property
    def envelopes_per_second(self) -> float:
        """Envelopes appended per second of wall time."""
        return self.envelopes / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def reproducible(self) -> dict[str, Any]:
        """The fields a seed reproduces under virtual time."""
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "agents": self.agents,
            "sessions": self.sessions,
            "envelopes": self.envelopes,
            "wal_hash": self.wal_hash,
            "sim_seconds": self.sim_seconds,
            "posts": self.posts,
            "hub": self.hub,
            "notes": self.notes,
        }


async def wal_digest(hub: Hub) -> tuple[str, int]:
    """SHA-256 over every session's WAL (sessions in creation order, envelopes in seq
    order, each as the codec's JSON) and the number of envelopes hashed."""
    digest = hashlib.sha256()
    count = 0
    store = hub.core.store
    for session_id in list(hub.core.directory.sessions):
        digest.update(session_id.encode())
        for envelope in await store.read(session_id):
            digest.update(dumps(envelope))
            count += 1
    return digest.hexdigest(), count


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank; 0 when empty."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
