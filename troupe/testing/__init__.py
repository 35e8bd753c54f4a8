"""``troupe.testing``: fault injection and helpers for testing agents against a hub.

- :class:`FaultyStore` wraps any store and fails or delays its calls on demand.
- :class:`CrashPoints` crashes session actors at named steps of a post (``faults=``).
"""

from ._crash_points import CrashPoints as CrashPoints
from ._crash_points import CrashPointsStatistics as CrashPointsStatistics
from ._faulty_store import FaultyStore as FaultyStore
from ._faulty_store import FaultyStoreStatistics as FaultyStoreStatistics

__all__ = (
    "CrashPoints",
    "CrashPointsStatistics",
    "FaultyStore",
    "FaultyStoreStatistics",
)
