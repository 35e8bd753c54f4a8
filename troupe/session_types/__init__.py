"""Session types: the rules of each kind of session, as pure state machines."""

from ._base import AnySessionType as AnySessionType
from ._base import ExpectedTurn as ExpectedTurn
from ._base import HistoryItem as HistoryItem
from ._base import NameFor as NameFor
from ._base import Render as Render
from ._base import SessionType as SessionType
from ._base import Transition as Transition
from ._base import ViewPolicy as ViewPolicy
from ._views import FullTranscript as FullTranscript
from ._views import NamedTranscript as NamedTranscript
from ._views import NamedWindowedSummary as NamedWindowedSummary
from ._views import WindowedSummary as WindowedSummary

__all__ = (
    "AnySessionType",
    "ExpectedTurn",
    "FullTranscript",
    "HistoryItem",
    "NameFor",
    "NamedTranscript",
    "NamedWindowedSummary",
    "Render",
    "SessionType",
    "Transition",
    "ViewPolicy",
    "WindowedSummary",
)
