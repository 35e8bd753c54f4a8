"""A scenario: what ``troupe sim NAME`` runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs

from ..hub import Faults

if TYPE_CHECKING:
    from ._harness import Sim


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
