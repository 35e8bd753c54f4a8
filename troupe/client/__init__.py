"""Clients: HubClient, AgentClient, HumanClient (both an Identity), Channel, the turn handler."""

from ._hub_client import Agent as Agent
from ._hub_client import AgentClient as AgentClient
from ._hub_client import Channel as Channel
from ._hub_client import ChunkStream as ChunkStream
from ._hub_client import HubClient as HubClient
from ._hub_client import HumanClient as HumanClient
from ._hub_client import Identity as Identity
from ._hub_client import Turn as Turn
from ._inbox import Disconnected as Disconnected

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
