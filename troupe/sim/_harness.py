"""The harness: run a scenario on a hub, under virtual or wall time, and report on it.

``run_sim`` owns the whole run: it starts ``trio.run`` (with an autojump ``MockClock`` and
a seeded scheduler under virtual time), opens a hub whose ids, timestamps and faults come
from the seed, hands the scenario a :class:`Sim`, waits until every delivery was handled,
then hashes the WALs and reads the hub's statistics.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import attrs
import trio
import trio.testing

from ..api import Accepted
from ..client import AgentClient, HubClient
from ..client._hub_client import Agent
from ..hub import Faults, Hub
from ..model import Envelope, Passport
from ..store import MemoryStore, SQLiteStore, Store
from ..transport import LocalLink
from ._seeded import draw

T = TypeVar("T")

#: ``(phase, done, total)``: called as agents are registered and sessions finish.
Progress = Callable[[str, int, int], None]

#: How much faster than simulated time a wall-time run goes by default.
WALL_TIME_SCALE = 0.01


@attrs.frozen(kw_only=True)
class SimOptions:
    """What to run, how big, and on which clock.

    Args:
      scenario: a name from ``troupe.sim.scenarios.SCENARIOS``.
      agents / sessions: the population and the number of sessions (None: the scenario's).
      seed: fixes every draw, id and (under virtual time) the scheduling order.
      virtual_time: run on trio's ``MockClock`` with autojump (reproducible) instead of the
        real clock.
      db: an SQLite file to write the run to (it must not exist); None keeps it in memory.
      time_scale: real seconds per simulated second (None: 1 under virtual time, where
        waiting costs nothing, and ``WALL_TIME_SCALE`` under wall time).
      passivate_after: simulated seconds a session may sit unused before it is passivated.
      concurrency: how many sessions run at once.
    """

    scenario: str
    agents: int | None = None
    sessions: int | None = None
    seed: int = 0
    virtual_time: bool = True
    db: Path | None = None
    time_scale: float | None = None
    passivate_after: float = 2.0
    concurrency: int = 256

    @property
    def scale(self) -> float:
        if self.time_scale is not None:
            return self.time_scale
        return 1.0 if self.virtual_time else WALL_TIME_SCALE


class TimedHubClient(HubClient):
    """A HubClient that times every post and, on request, keeps the accepted ids."""

    def __init__(self, link: LocalLink) -> None:
        super().__init__(link)
        self.latencies = array("d")
        #: Ids of accepted posts, when a scenario asked for them (``Sim.track_accepted``).
        self.accepted: list[str] | None = None

    async def post(self, envelope: Envelope) -> Accepted:
        # Every post goes through here (post_envelope and the identities' posts too).
        start = time.perf_counter()
        accepted = await super().post(envelope)
        self.latencies.append(time.perf_counter() - start)
        if self.accepted is not None:
            self.accepted.append(accepted.envelope_id)
        return accepted


@attrs.frozen(kw_only=True)
class Scenario:
    """A named simulation: ``run(sim)`` registers its agents and plays its sessions.

    Args:
      name: what ``troupe sim`` calls it.
      help: one line for ``troupe sim --help``.
      run: the scenario itself (see :class:`troupe.sim.Sim` for what it may use).
      agents / sessions: the sizes ``troupe sim`` uses unless told otherwise.
      min_agents: fewer agents than this cannot play it.
      faults: makes the hub's fault injector from the seed (None: no faults).
    """

    name: str
    help: str
    run: Callable[[Sim], Awaitable[None]]
    agents: int
    sessions: int
    min_agents: int = 2
    faults: Callable[[int], Faults] | None = None


class Sim:
    """What a scenario gets: the hub, a client, seeded draws, a clock, progress, notes."""

    def __init__(
        self,
        options: SimOptions,
        scenario: Scenario,
        hub: Hub,
        client: TimedHubClient,
        faults: Faults | None,
        progress: Progress | None,
    ) -> None:
        self.options = options
        self.hub = hub
        self.client = client
        self.faults = faults
        self.seed = options.seed
        self.agents = options.agents if options.agents is not None else scenario.agents
        self.sessions = options.sessions if options.sessions is not None else scenario.sessions
        self.scale = options.scale
        self.sessions_done = 0
        self._progress = progress
        self._notes: dict[str, str] = {}

    # -- seeded choices ------------------------------------------------------------------

    def rand(self, *key: object) -> float:
        """A number in [0, 1) fixed by the seed and ``key``."""
        return draw(self.seed, *key)

    def randint(self, low: int, high: int, *key: object) -> int:
        """An integer in ``[low, high]`` fixed by the seed and ``key``."""
        return low + int(draw(self.seed, *key) * (high - low + 1))

    def pick(self, items: Sequence[T], *key: object) -> T:
        """One of ``items``, fixed by the seed and ``key``."""
        return items[int(draw(self.seed, *key) * len(items))]

    # -- time ------------------------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of simulated time."""
        await trio.sleep(seconds * self.scale)

    def move_on_after(self, seconds: float) -> trio.CancelScope:
        """``trio.move_on_after`` in simulated seconds."""
        return trio.move_on_after(seconds * self.scale)

    # -- population and sessions ---------------------------------------------------------

    async def populate(
        self, make: Callable[[int], Agent], *, prefix: str = "agent"
    ) -> list[AgentClient]:
        """Register ``self.agents`` agents made by ``make(index)``, named ``prefix-000042``.

        The hub keeps them out of the garbage collector's scans (``open_hub(gc_freeze=)``).
        """
        agents: list[AgentClient] = []
        step = max(1, self.agents // 100)
        for index in range(self.agents):
            agent = make(index)
            agents.append(await self.client.register(agent, Passport(name=f"{prefix}-{index:06d}")))
            if (index + 1) % step == 0:
                self._report("agents", index + 1, self.agents)
        self._report("agents", self.agents, self.agents)
        return agents

    async def run_sessions(self, script: Callable[[int], Awaitable[object]]) -> None:
        """Run ``script(i)`` for each of ``self.sessions`` sessions, a few hundred at once."""
        indexes = iter(range(self.sessions))

        async def worker() -> None:
            for index in indexes:
                await script(index)
                self.sessions_done += 1
                self._report("sessions", self.sessions_done, self.sessions)

        self._report("sessions", 0, self.sessions)
        async with trio.open_nursery() as nursery:
            for _ in range(min(self.sessions, max(1, self.options.concurrency))):
                nursery.start_soon(worker)

    def track_accepted(self) -> list[str]:
        """Keep the id of every accepted post from now on; return the list that fills."""
        self.client.accepted = []
        return self.client.accepted

    def note(self, label: str, value: object) -> None:
        """Add a line to the run's summary."""
        self._notes[label] = str(value)

    def _report(self, phase: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(phase, done, total)


def open_sim_store(options: SimOptions) -> Store:
    """A MemoryStore, or a new SQLite file that commits on the trio thread under virtual time.

    Raises:
      FileExistsError: ``options.db`` exists and is not empty.
    """
    if options.db is None:
        return MemoryStore()
    if options.db.exists() and options.db.stat().st_size > 0:
        raise FileExistsError(f"{options.db} exists; a simulation writes a new store file")
    return SQLiteStore(options.db, synchronous="NORMAL", threaded=not options.virtual_time)
