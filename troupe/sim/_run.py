"""Running a scenario by name: the harness (``_harness``) plus the built-in scenarios."""

from __future__ import annotations

import time

import trio
import trio.testing

from ..hub import open_hub
from ..transport import LocalLink
from ._harness import Progress, Sim, SimOptions, TimedHubClient, open_sim_store
from ._report import SimReport, peak_rss_bytes, percentile, wal_digest
from ._seeded import SeededIds, seeded_scheduler, virtual_clock
from .scenarios import get_scenario


async def _settle(client: TimedHubClient, scale: float) -> None:
    """Wait until every delivery was handled (agents may still be thinking)."""
    nursery = client._nursery
    # Polling: a client has no event for "nothing left to deliver" (a drain task exists
    # per (identity, session) while deliveries are waiting; see HubClient).
    while nursery is not None and nursery.child_tasks:  # noqa: ASYNC110
        await trio.sleep(0.1 * scale)
    await trio.testing.wait_all_tasks_blocked()


async def simulate(options: SimOptions, progress: Progress | None = None) -> SimReport:
    """Run the scenario inside the current ``trio.run`` (see :func:`run_sim`)."""
    scenario = get_scenario(options.scenario)
    agents = options.agents if options.agents is not None else scenario.agents
    if agents < scenario.min_agents:
        raise ValueError(f"scenario {scenario.name!r} needs at least {scenario.min_agents} agents")
    faults = scenario.faults(options.seed) if scenario.faults is not None else None
    scale = options.scale
    wall_start = time.perf_counter()
    start = trio.current_time()
    failure: Exception | None = None
    async with (
        open_hub(
            open_sim_store(options),
            clock=virtual_clock() if options.virtual_time else None,
            new_id=SeededIds(options.seed),
            faults=faults,
            passivate_after=options.passivate_after * scale,
            ttl_sweep_interval=0,
        ) as hub,
        TimedHubClient(LocalLink(hub)) as client,
    ):
        sim = Sim(options, scenario, hub, client, faults, progress)
        try:
            await scenario.run(sim)
            await _settle(client, scale)
        except Exception as exc:
            # Raised once the hub is closed: out here it would come wrapped in the
            # exception group of the hub's nursery.
            failure = exc
        sim_seconds = (trio.current_time() - start) / scale
        digest, envelopes = await wal_digest(hub)
        stats = hub.statistics()
    if failure is not None:
        raise failure
    wall_seconds = time.perf_counter() - wall_start
    latencies = sorted(client.latencies)
    return SimReport(
        scenario=scenario.name,
        seed=options.seed,
        virtual_time=options.virtual_time,
        agents=sim.agents,
        sessions=stats.sessions,
        envelopes=envelopes,
        wal_hash=digest,
        sim_seconds=round(sim_seconds, 6),
        wall_seconds=wall_seconds,
        post_p50_us=percentile(latencies, 0.50) * 1e6,
        post_p99_us=percentile(latencies, 0.99) * 1e6,
        posts=len(latencies),
        peak_rss_bytes=peak_rss_bytes(),
        hub=stats,
        notes=tuple(sim._notes.items()),
    )


def run_sim(options: SimOptions, progress: Progress | None = None) -> SimReport:
    """Run a simulation to the end and return its report (starts its own ``trio.run``).

    Under virtual time the run is reproducible: the same options give the same
    ``SimReport.reproducible()``, WAL hash included.
    """
    if options.virtual_time:
        clock = trio.testing.MockClock(autojump_threshold=0)
        with seeded_scheduler(options.seed):
            return trio.run(simulate, options, progress, clock=clock)
    return trio.run(simulate, options, progress)
