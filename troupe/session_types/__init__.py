"""Session types: the rules of each kind of session, as pure state machines.

The workflow graph vocabulary (``TransitionGraph``, ``Transition``, conditions, targets) is
public in :mod:`troupe.workflow` (its ``Transition`` is not this package's lifecycle
``Transition``).
"""

from ._auction import EV_AUCTION_SELECT as EV_AUCTION_SELECT
from ._auction import AuctionPhase as AuctionPhase
from ._auction import AuctionState as AuctionState
from ._auction import AuctionType as AuctionType
from ._auction import select_winner as select_winner
from ._base import AnySessionType as AnySessionType
from ._base import ExpectedTurn as ExpectedTurn
from ._base import HistoryItem as HistoryItem
from ._base import NameFor as NameFor
from ._base import Render as Render
from ._base import SessionType as SessionType
from ._base import Transition as Transition
from ._base import ViewPolicy as ViewPolicy
from ._broadcast import BroadcastState as BroadcastState
from ._broadcast import BroadcastType as BroadcastType
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
from ._notification import NotificationState as NotificationState
from ._notification import NotificationType as NotificationType
from ._registry import builtin_types as builtin_types
from ._registry import get as get
from ._reply import Handoff as Handoff
from ._reply import Reply as Reply
from ._views import FullTranscript as FullTranscript
from ._views import NamedTranscript as NamedTranscript
from ._views import NamedWindowedSummary as NamedWindowedSummary
from ._views import WindowedSummary as WindowedSummary
from ._workflow import WorkflowState as WorkflowState
from ._workflow import WorkflowType as WorkflowType

__all__ = (
    "EV_AUCTION_SELECT",
    "AnySessionType",
    "AuctionPhase",
    "AuctionState",
    "AuctionType",
    "BaseSessionType",
    "BroadcastState",
    "BroadcastType",
    "ConsultingPhase",
    "ConsultingState",
    "ConsultingType",
    "ConversationState",
    "ConversationType",
    "DiscussionState",
    "DiscussionType",
    "ExpectedTurn",
    "FullTranscript",
    "Handoff",
    "HistoryItem",
    "NameFor",
    "NamedTranscript",
    "NamedWindowedSummary",
    "NotificationState",
    "NotificationType",
    "Render",
    "Reply",
    "SessionType",
    "Transition",
    "ViewPolicy",
    "WindowedSummary",
    "WorkflowState",
    "WorkflowType",
    "builtin_types",
    "check_knobs",
    "check_participants",
    "get",
    "select_winner",
)
