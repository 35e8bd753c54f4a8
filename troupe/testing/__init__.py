"""``troupe.testing``: fault injection and helpers for testing agents against a hub.

- :class:`FaultyStore` wraps any store and fails or delays its calls on demand.
- :class:`CrashPoints` crashes session actors at named steps of a post (``faults=``).
- :class:`ScriptedAgent` plays a list of :data:`ScriptStep` and records the turns it was given.
- :func:`expect_envelope` / :func:`expect_no_envelope` wait for deliveries with a deadline.
- :func:`check_invariants` checks a hub's WALs against its published state;
  :func:`no_task_leaks` checks that a block left no task behind.
- A pytest plugin (loaded automatically) with the fixtures ``troupe_hub``,
  ``troupe_hub_client``, ``troupe_hub_store``, ``troupe_store_faults``,
  ``troupe_crash_points`` and ``troupe_hub_options``; :func:`open_test_hub` is ``troupe_hub``
  as an ``async with`` (for a test that restarts a hub on one store).
"""

from ._crash_points import CrashPoints as CrashPoints
from ._crash_points import CrashPointsStatistics as CrashPointsStatistics
from ._expect import EnvelopeNotSeen as EnvelopeNotSeen
from ._expect import UnexpectedEnvelope as UnexpectedEnvelope
from ._expect import expect_envelope as expect_envelope
from ._expect import expect_no_envelope as expect_no_envelope
from ._faulty_store import FaultyStore as FaultyStore
from ._faulty_store import FaultyStoreStatistics as FaultyStoreStatistics
from ._invariants import InvariantReport as InvariantReport
from ._invariants import InvariantViolation as InvariantViolation
from ._invariants import TaskLeak as TaskLeak
from ._invariants import check_invariants as check_invariants
from ._invariants import fold_wal as fold_wal
from ._invariants import live_tasks as live_tasks
from ._invariants import no_task_leaks as no_task_leaks
from ._invariants import seeded_ids as seeded_ids
from ._plugin import make_store as make_store
from ._plugin import open_test_hub as open_test_hub
from ._scripted import ScriptedAgent as ScriptedAgent
from ._scripted import ScriptExhausted as ScriptExhausted
from ._scripted import ScriptStep as ScriptStep

#: The old name of :data:`ScriptStep`, kept importable for now; not public (it read like
#: ``troupe.Reply``, the session types' reply packet).
Reply = ScriptStep

__all__ = (
    "CrashPoints",
    "CrashPointsStatistics",
    "EnvelopeNotSeen",
    "FaultyStore",
    "FaultyStoreStatistics",
    "InvariantReport",
    "InvariantViolation",
    "ScriptExhausted",
    "ScriptStep",
    "ScriptedAgent",
    "TaskLeak",
    "UnexpectedEnvelope",
    "check_invariants",
    "expect_envelope",
    "expect_no_envelope",
    "fold_wal",
    "live_tasks",
    "make_store",
    "no_task_leaks",
    "open_test_hub",
    "seeded_ids",
)
