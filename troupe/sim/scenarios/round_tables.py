"""round-tables: many round-robin discussions in parallel.

Each session is a discussion among three to six agents drawn at random. The one who opens it
asks a question; then the floor goes round, and each speaker thinks a moment and makes a
point, until the table has heard as many points as it had time for (drawn per table). The
next speaker then stays silent, which ends the round, and the table is closed.
"""

from __future__ import annotations

import trio

from ...client import AgentClient, Turn
from .._harness import Scenario, Sim

#: Simulated seconds a speaker may think before making a point.
MAX_THINK = 4.0


class Table:
    """One discussion under way: its budget of points and whether it is over."""

    def __init__(self, index: int, budget: int) -> None:
        self.index = index
        self.budget = budget
        self.points = 0
        self.over = trio.Event()


class Speaker:
    """An agent: when it has the floor it makes a point, unless the table is out of time."""

    def __init__(self, sim: Sim, tables: dict[str, Table], index: int) -> None:
        self.sim = sim
        self.tables = tables
        self.index = index

    async def respond(self, turn: Turn) -> str | None:
        table = self.tables.get(turn.session_id)
        if table is None or table.points >= table.budget:
            if table is not None:
                table.over.set()
            return None
        table.points += 1
        await self.sim.sleep(MAX_THINK * self.sim.rand("think", table.index, table.points))
        return f"point {table.points}, from speaker {self.index}"


async def run(sim: Sim) -> None:
    tables: dict[str, Table] = {}
    agents: list[AgentClient] = await sim.populate(
        lambda i: Speaker(sim, tables, i), prefix="speaker"
    )
    n = len(agents)
    heard: list[int] = []

    async def round_table(i: int) -> None:
        size = min(n, sim.randint(3, 6, "size", i))
        first = sim.randint(0, n - 1, "first", i)
        stride = sim.randint(1, max(1, n - 1), "stride", i)
        seats = sorted({(first + k * stride) % n for k in range(size)})
        if len(seats) < 2:
            seats = [first, (first + 1) % n]
        host, *guests = (agents[s] for s in seats)
        await sim.sleep(sim.rand("start", i))
        table = Table(i, sim.randint(2, 12, "budget", i))
        channel = await host.open(type="discussion", target=[g.agent_id for g in guests])
        tables[channel.session_id] = table
        await channel.send(f"table {i}: what should we build next?")
        await table.over.wait()
        del tables[channel.session_id]
        heard.append(table.points)
        await channel.close(reason="round over")

    await sim.run_sessions(round_table)
    if heard:
        sim.note("points made per table (mean)", f"{sum(heard) / len(heard):.1f}")


SCENARIO = Scenario(
    name="round-tables",
    help="many round-robin discussions in parallel, each closed when a speaker falls silent",
    run=run,
    agents=1000,
    sessions=1000,
    min_agents=3,
)
