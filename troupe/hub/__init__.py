"""The hub: registry, sessions as supervised actors, posting, WAL recovery."""

from ..api import Accepted as Accepted
from ..api import Endpoint as Endpoint
from ..api import PendingTurn as PendingTurn
from ._activity import Activity as Activity
from ._activity import Mark as Mark
from ._arbiters import Arbiter as Arbiter
from ._auth import ApiKeyAuth as ApiKeyAuth
from ._auth import AuthAdapter as AuthAdapter
from ._auth import AuthRegistry as AuthRegistry
from ._auth import NoAuth as NoAuth
from ._core import CRASH_POINTS as CRASH_POINTS
from ._core import Faults as Faults
from ._core import InjectedCrash as InjectedCrash
from ._evaluators import Evaluator as Evaluator
from ._evaluators import Late as Late
from ._evaluators import Seen as Seen
from ._events import AgentRegistered as AgentRegistered
from ._events import AgentUnregistered as AgentUnregistered
from ._events import Audited as Audited
from ._events import DispatchFailed as DispatchFailed
from ._events import EnvelopeAccepted as EnvelopeAccepted
from ._events import EnvelopeRejected as EnvelopeRejected
from ._events import EventStream as EventStream
from ._events import EventStreamStatistics as EventStreamStatistics
from ._events import ExpectationViolated as ExpectationViolated
from ._events import ExpectationViolation as ExpectationViolation
from ._events import HubEvent as HubEvent
from ._events import Missed as Missed
from ._events import SessionActorCrashed as SessionActorCrashed
from ._events import SessionActorRestarted as SessionActorRestarted
from ._events import SessionClosed as SessionClosed
from ._events import SessionCreated as SessionCreated
from ._events import SessionOpened as SessionOpened
from ._events import TaskChanged as TaskChanged
from ._events import TurnFailed as TurnFailed
from ._expectations import Handler as Handler
from ._hub import Hub as Hub
from ._lanes import StreamStatistics as StreamStatistics
from ._listeners import HubListener as HubListener
from ._open import open_hub as open_hub
from ._stats import HubHealth as HubHealth
from ._stats import HubStatistics as HubStatistics

__all__ = (
    "CRASH_POINTS",
    "Accepted",
    "Activity",
    "AgentRegistered",
    "AgentUnregistered",
    "ApiKeyAuth",
    "Arbiter",
    "Audited",
    "AuthAdapter",
    "AuthRegistry",
    "DispatchFailed",
    "Endpoint",
    "EnvelopeAccepted",
    "EnvelopeRejected",
    "Evaluator",
    "EventStream",
    "EventStreamStatistics",
    "ExpectationViolated",
    "ExpectationViolation",
    "Faults",
    "Handler",
    "Hub",
    "HubEvent",
    "HubHealth",
    "HubListener",
    "HubStatistics",
    "InjectedCrash",
    "Late",
    "Mark",
    "Missed",
    "NoAuth",
    "PendingTurn",
    "Seen",
    "SessionActorCrashed",
    "SessionActorRestarted",
    "SessionClosed",
    "SessionCreated",
    "SessionOpened",
    "StreamStatistics",
    "TaskChanged",
    "TurnFailed",
    "open_hub",
)
