"""The built-in scenarios of ``troupe sim``; each module is a short example to copy."""

from .._harness import Scenario
from . import crash_storm, gossip, market, round_tables

#: Every built-in scenario by name.
SCENARIOS: dict[str, Scenario] = {
    module.SCENARIO.name: module.SCENARIO for module in (gossip, round_tables, market, crash_storm)
}


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``.

    Raises:
      ValueError: there is none; the message lists the known names.
    """
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


__all__ = ("SCENARIOS", "Scenario", "get_scenario")
