"""troupe: a supervised actor runtime for trio that hosts a multi-agent hub."""

from typing import TYPE_CHECKING, Any

from . import _version
from ._errors import AccessDeniedError as AccessDeniedError
from ._errors import ActorDead as ActorDead
from ._errors import AuthError as AuthError
from ._errors import ConnectionLost as ConnectionLost
from ._errors import DecodeError as DecodeError
from ._errors import IdentityInUse as IdentityInUse
from ._errors import IllegalTransition as IllegalTransition
from ._errors import InboxFull as InboxFull
from ._errors import IncompatibleStore as IncompatibleStore
from ._errors import MailboxClosed as MailboxClosed
from ._errors import MailboxFull as MailboxFull
from ._errors import NameTaken as NameTaken
from ._errors import NetworkError as NetworkError
from ._errors import NotFoundError as NotFoundError
from ._errors import NotOwner as NotOwner
from ._errors import ProtocolError as ProtocolError
from ._errors import RateLimited as RateLimited
from ._errors import RestartIntensityExceeded as RestartIntensityExceeded
from ._errors import StoreError as StoreError
from ._errors import StoreLocked as StoreLocked
from ._errors import TroupeError as TroupeError
from ._errors import WorkflowGraphError as WorkflowGraphError
from ._log import install as _install_logging
from .client import Agent as Agent
from .client import AgentClient as AgentClient
from .client import Channel as Channel
from .client import ChunkStream as ChunkStream
from .client import HubClient as HubClient
from .client import HumanClient as HumanClient
from .client import Turn as Turn
from .model import EV_CHANNEL_INVITE as EV_CHANNEL_INVITE
from .model import EV_CHANNEL_INVITE_ACK as EV_CHANNEL_INVITE_ACK
from .model import EV_CHANNEL_INVITE_REJECT as EV_CHANNEL_INVITE_REJECT
from .model import EV_CONTEXT_SET as EV_CONTEXT_SET
from .model import EV_EXPECTATION_VIOLATED as EV_EXPECTATION_VIOLATED
from .model import EV_PACKET as EV_PACKET
from .model import EV_SESSION_CLOSED as EV_SESSION_CLOSED
from .model import EV_SESSION_EXPIRED as EV_SESSION_EXPIRED
from .model import EV_SESSION_OPENED as EV_SESSION_OPENED
from .model import EV_TASK_CANCEL_REQUEST as EV_TASK_CANCEL_REQUEST
from .model import EV_TASK_CANCELLED as EV_TASK_CANCELLED
from .model import EV_TEXT as EV_TEXT
from .model import AccessBlock as AccessBlock
from .model import AuthBlock as AuthBlock
from .model import Envelope as Envelope
from .model import InboxBlock as InboxBlock
from .model import LimitsBlock as LimitsBlock
from .model import Passport as Passport
from .model import RateBlock as RateBlock
from .model import Resume as Resume
from .model import Rule as Rule
from .model import SessionMetadata as SessionMetadata
from .model import SessionState as SessionState
from .model import StreamChunk as StreamChunk
from .model import TaskMetadata as TaskMetadata
from .model import TaskSpec as TaskSpec
from .model import TaskState as TaskState
from .model import parse_duration as parse_duration
from .session_types import EV_AUCTION_SELECT as EV_AUCTION_SELECT
from .session_types import Handoff as Handoff
from .session_types import Reply as Reply
from .transport import LocalLink as LocalLink

__version__ = _version.__version__

if TYPE_CHECKING:
    from .hub import ApiKeyAuth as ApiKeyAuth
    from .hub import Hub as Hub
    from .hub import HubHealth as HubHealth
    from .hub import HubListener as HubListener
    from .hub import HubStatistics as HubStatistics
    from .hub import NoAuth as NoAuth
    from .hub import open_hub as open_hub
    from .store import MemoryStore as MemoryStore
    from .store import PostgresStore as PostgresStore
    from .store import SQLiteStore as SQLiteStore

#: Loaded on first use (PEP 562), so that ``import troupe.client`` (a client that only talks
#: WebSocket) loads neither the hub nor the store and sqlite3.
_LAZY = {
    "ApiKeyAuth": "hub",
    "Hub": "hub",
    "HubHealth": "hub",
    "HubListener": "hub",
    "HubStatistics": "hub",
    "NoAuth": "hub",
    "open_hub": "hub",
    "MemoryStore": "store",
    "PostgresStore": "store",
    "SQLiteStore": "store",
}


def __getattr__(name: str) -> Any:
    package = _LAZY.get(name)
    if package is None:
        raise AttributeError(f"module 'troupe' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{package}", __name__), name)
    globals()[name] = value
    return value


__all__ = (
    "EV_AUCTION_SELECT",
    "EV_CHANNEL_INVITE",
    "EV_CHANNEL_INVITE_ACK",
    "EV_CHANNEL_INVITE_REJECT",
    "EV_CONTEXT_SET",
    "EV_EXPECTATION_VIOLATED",
    "EV_PACKET",
    "EV_SESSION_CLOSED",
    "EV_SESSION_EXPIRED",
    "EV_SESSION_OPENED",
    "EV_TASK_CANCELLED",
    "EV_TASK_CANCEL_REQUEST",
    "EV_TEXT",
    "AccessBlock",
    "AccessDeniedError",
    "ActorDead",
    "Agent",
    "AgentClient",
    "ApiKeyAuth",
    "AuthBlock",
    "AuthError",
    "Channel",
    "ChunkStream",
    "ConnectionLost",
    "DecodeError",
    "Envelope",
    "Handoff",
    "Hub",
    "HubClient",
    "HubHealth",
    "HubListener",
    "HubStatistics",
    "HumanClient",
    "IdentityInUse",
    "IllegalTransition",
    "InboxBlock",
    "InboxFull",
    "IncompatibleStore",
    "LimitsBlock",
    "LocalLink",
    "MailboxClosed",
    "MailboxFull",
    "MemoryStore",
    "NameTaken",
    "NetworkError",
    "NoAuth",
    "NotFoundError",
    "NotOwner",
    "Passport",
    "PostgresStore",
    "ProtocolError",
    "RateBlock",
    "RateLimited",
    "Reply",
    "RestartIntensityExceeded",
    "Resume",
    "Rule",
    "SQLiteStore",
    "SessionMetadata",
    "SessionState",
    "StoreError",
    "StoreLocked",
    "StreamChunk",
    "TaskMetadata",
    "TaskSpec",
    "TaskState",
    "TroupeError",
    "Turn",
    "WorkflowGraphError",
    "open_hub",
    "parse_duration",
)

# A library leaves logging to its application: without the null handler, Python's last-resort
# handler would print troupe's warnings (a crashed session, a retried close) to every user's
# stderr. The application's own bugs (a failed turn) still reach stderr: see ``_log``.
_install_logging()
