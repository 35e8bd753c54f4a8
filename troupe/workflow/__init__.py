"""Workflow sessions: the transition graph vocabulary and the replies that hand off.

Build a graph, pass ``graph.to_dict()`` as the session's ``knobs["graph"]``::

    graph = TransitionGraph(
        triage_id,
        [Transition(FromSpeaker(billing_id), RevertToInitiatorTarget())],
        default_target=TerminateTarget("resolved"),
        max_turns=10,
    )
    await me.open(type="workflow", target=[triage_id, billing_id], knobs={"graph": graph.to_dict()})

and let agents hand the floor on by returning ``Handoff(target_id, reason)`` or
``Reply(text, handoff=...)`` from ``respond`` (see :class:`Reply`).
"""

from .._errors import WorkflowGraphError as WorkflowGraphError
from ..session_types._graph import Transition as Transition
from ..session_types._graph import TransitionGraph as TransitionGraph
from ..session_types._graph import round_robin as round_robin
from ..session_types._graph import sequence as sequence
from ..session_types._graph_parts import AgentTarget as AgentTarget
from ..session_types._graph_parts import Always as Always
from ..session_types._graph_parts import Condition as Condition
from ..session_types._graph_parts import ContextEquals as ContextEquals
from ..session_types._graph_parts import Decision as Decision
from ..session_types._graph_parts import FromSpeaker as FromSpeaker
from ..session_types._graph_parts import RevertToInitiatorTarget as RevertToInitiatorTarget
from ..session_types._graph_parts import RoundRobinTarget as RoundRobinTarget
from ..session_types._graph_parts import StayTarget as StayTarget
from ..session_types._graph_parts import Target as Target
from ..session_types._graph_parts import TerminateTarget as TerminateTarget
from ..session_types._graph_parts import ToolCalled as ToolCalled
from ..session_types._packet import ContextUpdate as ContextUpdate
from ..session_types._packet import Packet as Packet
from ..session_types._packet import Routing as Routing
from ..session_types._packet import read_packet as read_packet
from ..session_types._reply import Handoff as Handoff
from ..session_types._reply import Reply as Reply
from ..session_types._workflow import WorkflowState as WorkflowState
from ..session_types._workflow import WorkflowType as WorkflowType

__all__ = (
    "AgentTarget",
    "Always",
    "Condition",
    "ContextEquals",
    "ContextUpdate",
    "Decision",
    "FromSpeaker",
    "Handoff",
    "Packet",
    "Reply",
    "RevertToInitiatorTarget",
    "RoundRobinTarget",
    "Routing",
    "StayTarget",
    "Target",
    "TerminateTarget",
    "ToolCalled",
    "Transition",
    "TransitionGraph",
    "WorkflowGraphError",
    "WorkflowState",
    "WorkflowType",
    "read_packet",
    "round_robin",
    "sequence",
)
