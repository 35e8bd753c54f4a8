"""The hub: registry, sessions as supervised actors, posting, WAL recovery."""

from ._auth import ApiKeyAuth as ApiKeyAuth
from ._auth import AuthAdapter as AuthAdapter
from ._auth import AuthRegistry as AuthRegistry
from ._auth import NoAuth as NoAuth
from ._connection import Endpoint as Endpoint
from ._core import CRASH_POINTS as CRASH_POINTS
from ._core import Faults as Faults
from ._core import InjectedCrash as InjectedCrash
from ._expectations import ExpectationViolation as ExpectationViolation
from ._hub import Hub as Hub
from ._lanes import StreamStatistics as StreamStatistics
from ._open import open_hub as open_hub
from ._session_parts import Accepted as Accepted
from ._stats import HubHealth as HubHealth
from ._stats import HubStatistics as HubStatistics
from ._stats import PendingTurn as PendingTurn

__all__ = (
    "CRASH_POINTS",
    "Accepted",
    "ApiKeyAuth",
    "AuthAdapter",
    "AuthRegistry",
    "Endpoint",
    "ExpectationViolation",
    "Faults",
    "Hub",
    "HubHealth",
    "HubStatistics",
    "InjectedCrash",
    "NoAuth",
    "PendingTurn",
    "StreamStatistics",
    "open_hub",
)
