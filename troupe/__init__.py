"""troupe: a supervised actor runtime for trio that hosts a multi-agent hub."""

from ._errors import AccessDeniedError as AccessDeniedError
from ._errors import ActorDead as ActorDead
from ._errors import AuthError as AuthError
from ._errors import DecodeError as DecodeError
from ._errors import IllegalTransition as IllegalTransition
from ._errors import InboxFull as InboxFull
from ._errors import IncompatibleStore as IncompatibleStore
from ._errors import MailboxClosed as MailboxClosed
from ._errors import MailboxFull as MailboxFull
from ._errors import NetworkError as NetworkError
from ._errors import NotFoundError as NotFoundError
from ._errors import ProtocolError as ProtocolError
from ._errors import RateLimited as RateLimited
from ._errors import RestartIntensityExceeded as RestartIntensityExceeded
from ._errors import StoreError as StoreError
from ._errors import TroupeError as TroupeError
from .store import MemoryStore as MemoryStore

__version__ = "0.1.0"

__all__ = (
    "AccessDeniedError",
    "ActorDead",
    "AuthError",
    "DecodeError",
    "IllegalTransition",
    "InboxFull",
    "IncompatibleStore",
    "MailboxClosed",
    "MailboxFull",
    "MemoryStore",
    "NetworkError",
    "NotFoundError",
    "ProtocolError",
    "RateLimited",
    "RestartIntensityExceeded",
    "StoreError",
    "TroupeError",
)
