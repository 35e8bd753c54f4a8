"""The hub's edge: the request records every layer shares, and the ``HubApi`` protocol."""

from ._calls import HubCalls as HubCalls
from ._protocol import Endpoint as Endpoint
from ._protocol import HubApi as HubApi
from ._protocol import LocalHub as LocalHub
from ._requests import MAX_REASON_CHARS as MAX_REASON_CHARS
from ._requests import REQUESTS as REQUESTS
from ._requests import SORT_BY as SORT_BY
from ._requests import Accepted as Accepted
from ._requests import CanSend as CanSend
from ._requests import CheckpointTask as CheckpointTask
from ._requests import CloseSession as CloseSession
from ._requests import CreateSession as CreateSession
from ._requests import FindAgentId as FindAgentId
from ._requests import FindEnvelopeByCausation as FindEnvelopeByCausation
from ._requests import GetAgent as GetAgent
from ._requests import GetResume as GetResume
from ._requests import GetRule as GetRule
from ._requests import GetSession as GetSession
from ._requests import GetSkill as GetSkill
from ._requests import GetTask as GetTask
from ._requests import ListAgents as ListAgents
from ._requests import ListSessions as ListSessions
from ._requests import ListTasks as ListTasks
from ._requests import NamesFor as NamesFor
from ._requests import ObserveTask as ObserveTask
from ._requests import PendingTurn as PendingTurn
from ._requests import PendingTurnsFor as PendingTurnsFor
from ._requests import PostEnvelope as PostEnvelope
from ._requests import ReadTaskCheckpoint as ReadTaskCheckpoint
from ._requests import ReadWal as ReadWal
from ._requests import RecordObservation as RecordObservation
from ._requests import Register as Register
from ._requests import ReportTurnFailure as ReportTurnFailure
from ._requests import Request as Request
from ._requests import SetResume as SetResume
from ._requests import SetRule as SetRule
from ._requests import SetSkill as SetSkill
from ._requests import Unregister as Unregister
from ._requests import UpdateTask as UpdateTask
from ._requests import WalPage as WalPage

__all__ = (
    "MAX_REASON_CHARS",
    "REQUESTS",
    "SORT_BY",
    "Accepted",
    "CanSend",
    "CheckpointTask",
    "CloseSession",
    "CreateSession",
    "Endpoint",
    "FindAgentId",
    "FindEnvelopeByCausation",
    "GetAgent",
    "GetResume",
    "GetRule",
    "GetSession",
    "GetSkill",
    "GetTask",
    "HubApi",
    "HubCalls",
    "ListAgents",
    "ListSessions",
    "ListTasks",
    "LocalHub",
    "NamesFor",
    "ObserveTask",
    "PendingTurn",
    "PendingTurnsFor",
    "PostEnvelope",
    "ReadTaskCheckpoint",
    "ReadWal",
    "RecordObservation",
    "Register",
    "ReportTurnFailure",
    "Request",
    "SetResume",
    "SetRule",
    "SetSkill",
    "Unregister",
    "UpdateTask",
    "WalPage",
)
