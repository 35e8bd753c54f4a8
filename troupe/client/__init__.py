"""Clients: HubClient, AgentClient, HumanClient (both an Identity), Channel, the turn handler."""

from ._agent_client import AgentClient as AgentClient
from ._channel import Channel as Channel
from ._hub_client import HubClient as HubClient
from ._human_client import HumanClient as HumanClient
from ._identity import Identity as Identity
from ._inbox import Disconnected as Disconnected
from ._streaming import ChunkStream as ChunkStream
from ._turn import Agent as Agent
from ._turn import Turn as Turn

__all__ = (
    "Agent",
    "AgentClient",
    "Channel",
    "ChunkStream",
    "Disconnected",
    "HubClient",
    "HumanClient",
    "Identity",
    "Turn",
)
