"""gossip: a rumour spreads through two-person conversations.

One agent knows a rumour. Each session is a conversation between two agents drawn at random;
they take turns, thinking a moment before each line, for a few lines (drawn per session).
Whoever knows the rumour tells it, and whoever hears it knows it from then on. The summary
says how many agents know it at the end, and when half of them did.

To write your own scenario, copy this file: ``run(sim)`` registers agents with
``sim.populate``, plays sessions with ``sim.run_sessions``, draws with ``sim.rand`` (a
function of the seed and a key, never of the order of calls), waits with ``sim.sleep``
(simulated seconds) and reports with ``sim.note``. Add it to ``SCENARIOS``.
"""

from __future__ import annotations

from functools import partial

import trio

from ..._errors import NetworkError
from ...client import AgentClient, Turn
from .._harness import Scenario, Sim

RUMOUR = "the hub never loses an envelope"
#: Simulated seconds an agent may think before a line.
MAX_THINK = 3.0
#: Simulated seconds after which a conversation that is not over is wound up.
TALK_LIMIT = 60.0


class Talk:
    """One conversation under way: how long it will be, and whether it is over."""

    def __init__(self, index: int, length: int) -> None:
        self.index = index
        self.length = length
        self.lines = 0
        self.over = trio.Event()


class Town:
    """Who knows the rumour, and the conversations under way."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.knows = bytearray(sim.agents)
        self.count = 0
        self.half_at: float | None = None
        self.talks: dict[str, Talk] = {}

    def learn(self, index: int) -> None:
        if not self.knows[index]:
            self.knows[index] = 1
            self.count += 1
            if self.half_at is None and 2 * self.count >= len(self.knows):
                self.half_at = trio.current_time() / self.sim.scale

    def line(self, index: int) -> str:
        return f"did you hear? {RUMOUR}" if self.knows[index] else "nothing new here"


class Gossip:
    """An agent: on its turn it thinks, then says what it knows, until the talk is over."""

    def __init__(self, town: Town, index: int) -> None:
        self.town = town
        self.index = index

    async def respond(self, turn: Turn) -> str | None:
        town = self.town
        talk = town.talks.get(turn.session_id)
        if talk is None:
            return None  # the conversation was already wound up
        if RUMOUR in turn.text:
            town.learn(self.index)
        if talk.lines >= talk.length:
            talk.over.set()
            return None
        talk.lines += 1
        await town.sim.sleep(MAX_THINK * town.sim.rand("think", talk.index, talk.lines))
        return town.line(self.index)


async def conversation(sim: Sim, town: Town, agents: list[AgentClient], i: int) -> bool:
    """Play conversation ``i`` between two agents drawn at random; whether it was held.

    The hub may refuse it (only in ``crash-storm``: a session that crashed too often, or a
    post rejected as poison); it is then wound up as far as it got.
    """
    n = len(agents)
    caller = sim.randint(0, n - 1, "caller", i)
    callee = (caller + sim.randint(1, n - 1, "callee", i)) % n
    await sim.sleep(sim.rand("start", i))
    talk = Talk(i, sim.randint(2, 6, "length", i))
    try:
        channel = await agents[caller].open(type="conversation", target=agents[callee].agent_id)
    except NetworkError:
        return False
    town.talks[channel.session_id] = talk
    held = True
    try:
        talk.lines += 1
        await channel.send(town.line(caller))
        with sim.move_on_after(TALK_LIMIT):
            await talk.over.wait()
    except NetworkError:
        held = False
    finally:
        del town.talks[channel.session_id]
    await channel.close(reason="talked")
    return held


async def run(sim: Sim) -> None:
    town = Town(sim)
    agents = await sim.populate(lambda i: Gossip(town, i), prefix="gossip")
    town.learn(0)
    await sim.run_sessions(partial(conversation, sim, town, agents))
    sim.note("agents who know the rumour", f"{town.count} of {len(agents)}")
    if town.half_at is not None:
        sim.note("half of them knew it after", f"{town.half_at:.1f} simulated s")


SCENARIO = Scenario(
    name="gossip",
    help="a rumour spreads through two-person conversations",
    run=run,
    agents=1000,
    sessions=2000,
)
