"""Simulation of many agents: scenarios on a hub, under virtual time, reproducible by seed."""

from ._harness import Progress as Progress
from ._harness import Scenario as Scenario
from ._harness import Sim as Sim
from ._harness import SimOptions as SimOptions
from ._harness import TimedHubClient as TimedHubClient
from ._report import SimReport as SimReport
from ._report import wal_digest as wal_digest
from ._run import run_sim as run_sim
from ._run import simulate as simulate
from ._seeded import EPOCH as EPOCH
from ._seeded import SeededIds as SeededIds
from ._seeded import draw as draw
from ._seeded import seeded_scheduler as seeded_scheduler
from ._seeded import virtual_clock as virtual_clock

__all__ = (
    "EPOCH",
    "Progress",
    "Scenario",
    "SeededIds",
    "Sim",
    "SimOptions",
    "SimReport",
    "TimedHubClient",
    "draw",
    "run_sim",
    "seeded_scheduler",
    "simulate",
    "virtual_clock",
    "wal_digest",
)
