"""The records troupe speaks: identities, rules, envelopes, sessions, tasks and frames."""

from ._checks import MAX_ENVELOPE_BYTES as MAX_ENVELOPE_BYTES
from ._checks import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from ._checks import PRIORITIES as PRIORITIES
from ._checks import check_data as check_data
from ._checks import check_envelope as check_envelope
from ._checks import check_json as check_json
from ._checks import check_record as check_record
from ._codec import batch_overhead as batch_overhead
from ._codec import decode_frame as decode_frame
from ._codec import decode_frames as decode_frames
from ._codec import dumps as dumps
from ._codec import encode_batch as encode_batch
from ._codec import encode_frame as encode_frame
from ._codec import loads as loads
from ._codec import structure as structure
from ._codec import unstructure as unstructure
from ._convert import iso as iso
from ._convert import parse_iso as parse_iso
from ._envelope import EV_CHANNEL_INVITE as EV_CHANNEL_INVITE
from ._envelope import EV_CHANNEL_INVITE_ACK as EV_CHANNEL_INVITE_ACK
from ._envelope import EV_CHANNEL_INVITE_REJECT as EV_CHANNEL_INVITE_REJECT
from ._envelope import EV_CONTEXT_SET as EV_CONTEXT_SET
from ._envelope import EV_EXPECTATION_VIOLATED as EV_EXPECTATION_VIOLATED
from ._envelope import EV_PACKET as EV_PACKET
from ._envelope import EV_SESSION_CLOSED as EV_SESSION_CLOSED
from ._envelope import EV_SESSION_EXPIRED as EV_SESSION_EXPIRED
from ._envelope import EV_SESSION_OPENED as EV_SESSION_OPENED
from ._envelope import EV_TASK_CANCEL_REQUEST as EV_TASK_CANCEL_REQUEST
from ._envelope import EV_TASK_CANCELLED as EV_TASK_CANCELLED
from ._envelope import EV_TEXT as EV_TEXT
from ._envelope import PROTOCOL_PREFIXES as PROTOCOL_PREFIXES
from ._envelope import Envelope as Envelope
from ._envelope import is_protocol_event as is_protocol_event
from ._envelope import is_substantive as is_substantive
from ._frames import FRAME_TYPES as FRAME_TYPES
from ._frames import AcceptFrame as AcceptFrame
from ._frames import ChunkFrame as ChunkFrame
from ._frames import ErrorFrame as ErrorFrame
from ._frames import Frame as Frame
from ._frames import HelloFrame as HelloFrame
from ._frames import InvalidFrame as InvalidFrame
from ._frames import NotifyFrame as NotifyFrame
from ._frames import PingFrame as PingFrame
from ._frames import PongFrame as PongFrame
from ._frames import ReceiptFrame as ReceiptFrame
from ._frames import RequestFrame as RequestFrame
from ._frames import ResponseFrame as ResponseFrame
from ._frames import SendFrame as SendFrame
from ._frames import SessionStatus as SessionStatus
from ._frames import WelcomeFrame as WelcomeFrame
from ._identity import AuthBlock as AuthBlock
from ._identity import CostProfile as CostProfile
from ._identity import ObservedStat as ObservedStat
from ._identity import Passport as Passport
from ._identity import Resume as Resume
from ._identity import ResumeExample as ResumeExample
from ._rule import MAX_DURATION_S as MAX_DURATION_S
from ._rule import AccessBlock as AccessBlock
from ._rule import InboxBlock as InboxBlock
from ._rule import LimitsBlock as LimitsBlock
from ._rule import RateBlock as RateBlock
from ._rule import Rule as Rule
from ._rule import SessionTypeAccess as SessionTypeAccess
from ._rule import parse_duration as parse_duration
from ._session import Expectation as Expectation
from ._session import Participant as Participant
from ._session import ParticipantRole as ParticipantRole
from ._session import SessionMetadata as SessionMetadata
from ._session import SessionState as SessionState
from ._stream import StreamChunk as StreamChunk
from ._task import TaskMetadata as TaskMetadata
from ._task import TaskSpec as TaskSpec
from ._task import TaskState as TaskState

__all__ = (
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
    "FRAME_TYPES",
    "MAX_DURATION_S",
    "MAX_ENVELOPE_BYTES",
    "MAX_JSON_DEPTH",
    "PRIORITIES",
    "PROTOCOL_PREFIXES",
    "AcceptFrame",
    "AccessBlock",
    "AuthBlock",
    "ChunkFrame",
    "CostProfile",
    "Envelope",
    "ErrorFrame",
    "Expectation",
    "Frame",
    "HelloFrame",
    "InboxBlock",
    "InvalidFrame",
    "LimitsBlock",
    "NotifyFrame",
    "ObservedStat",
    "Participant",
    "ParticipantRole",
    "Passport",
    "PingFrame",
    "PongFrame",
    "RateBlock",
    "ReceiptFrame",
    "RequestFrame",
    "ResponseFrame",
    "Resume",
    "ResumeExample",
    "Rule",
    "SendFrame",
    "SessionMetadata",
    "SessionState",
    "SessionStatus",
    "SessionTypeAccess",
    "StreamChunk",
    "TaskMetadata",
    "TaskSpec",
    "TaskState",
    "WelcomeFrame",
    "batch_overhead",
    "check_data",
    "check_envelope",
    "check_json",
    "check_record",
    "decode_frame",
    "decode_frames",
    "dumps",
    "encode_batch",
    "encode_frame",
    "is_protocol_event",
    "is_substantive",
    "iso",
    "loads",
    "parse_duration",
    "parse_iso",
    "structure",
    "unstructure",
)
