"""crash-storm: session actors crash at random, and no accepted envelope is lost.

The gossip scenario's conversations, on a hub whose fault injector crashes a session's actor
at one of the hub's crash points (``CRASH_POINTS``) with a small probability each time a
post passes one (a function of the seed, the session, the point and how many posts passed
it). The session supervisor restarts a crashed actor from its WAL; a post that
crashes its session twice is rejected as poison; a session that crashes more than three
times in five seconds is closed as ``crashed`` while the others carry on.

At the end every id a poster was told was accepted is looked up in the WALs: each must be
there exactly once, and no WAL may hold an id twice. The run fails if one is missing.
"""

from __future__ import annotations

from collections import Counter

from ...hub import InjectedCrash
from .._harness import Scenario, Sim
from .._seeded import draw
from .gossip import Gossip, Town, conversation

#: Chance that a post crashes its session at one crash point.
CRASH_RATE = 0.05


class StormFaults:
    """Crashes session actors at random, reproducibly (the hub's ``faults=``)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.passed: Counter[tuple[str, str]] = Counter()
        self.fired = 0

    def check(self, point: str, session_id: str) -> None:
        key = (session_id, point)
        self.passed[key] += 1
        if draw(self.seed, "crash", session_id, point, self.passed[key]) < CRASH_RATE:
            self.fired += 1
            raise InjectedCrash(f"injected crash at {point} in session {session_id}")


async def run(sim: Sim) -> None:
    town = Town(sim)
    agents = await sim.populate(lambda i: Gossip(town, i), prefix="chat")
    accepted = sim.track_accepted()
    abandoned = 0

    async def storm(i: int) -> None:
        nonlocal abandoned
        if not await conversation(sim, town, agents, i):
            abandoned += 1

    await sim.run_sessions(storm)

    in_wal: Counter[str] = Counter()
    store = sim.hub.core.store
    for session_id in list(sim.hub.core.directory.sessions):
        in_wal.update(e.envelope_id for e in await store.read(session_id))
    lost = sum(1 for envelope_id in accepted if in_wal[envelope_id] == 0)
    twice = sum(1 for count in in_wal.values() if count > 1)
    stats = sim.hub.statistics()
    assert isinstance(sim.faults, StormFaults)
    sim.note("crashes injected", sim.faults.fired)
    sim.note("sessions closed as crashed", stats.sessions_crashed)
    sim.note("poison envelopes rejected", stats.poison_envelopes)
    sim.note("talks abandoned (their session crashed)", abandoned)
    sim.note("accepted ids checked / lost / twice", f"{len(accepted)} / {lost} / {twice}")
    if lost or twice:
        raise AssertionError(f"{lost} accepted envelopes missing, {twice} ids twice in a WAL")


SCENARIO = Scenario(
    name="crash-storm",
    help="session actors crash at random; every accepted envelope is checked in the WAL",
    run=run,
    agents=500,
    sessions=1000,
    faults=StormFaults,
)
