"""Session types: the rules of each kind of session, as pure state machines."""

from ._base import AnySessionType as AnySessionType
from ._base import ExpectedTurn as ExpectedTurn
from ._base import HistoryItem as HistoryItem
from ._base import NameFor as NameFor
from ._base import Render as Render
from ._base import SessionType as SessionType
from ._base import Transition as Transition
from ._base import ViewPolicy as ViewPolicy
from ._common import BaseSessionType as BaseSessionType
from ._common import check_knobs as check_knobs
from ._common import check_participants as check_participants
from ._consulting import ConsultingPhase as ConsultingPhase
from ._consulting import ConsultingState as ConsultingState
from ._consulting import ConsultingType as ConsultingType
from ._conversation import ConversationState as ConversationState
from ._conversation import ConversationType as ConversationType
from ._discussion import DiscussionState as DiscussionState
from ._discussion import DiscussionType as DiscussionType
from ._registry import builtin_types as builtin_types
from ._registry import get as get
from ._views import FullTranscript as FullTranscript
from ._views import NamedTranscript as NamedTranscript
from ._views import NamedWindowedSummary as NamedWindowedSummary
from ._views import WindowedSummary as WindowedSummary

__all__ = (
    "AnySessionType",
    "BaseSessionType",
    "ConsultingPhase",
    "ConsultingState",
    "ConsultingType",
    "ConversationState",
    "ConversationType",
    "DiscussionState",
    "DiscussionType",
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
    "builtin_types",
    "check_knobs",
    "check_participants",
    "get",
)
