"""Actors: ``Actor``, ``ActorRef`` (tell / ask / stop) and ``spawn``."""

from .._errors import ActorDead as ActorDead
from ._actor import DEFAULT_CAPACITY as DEFAULT_CAPACITY
from ._actor import Actor as Actor
from ._actor import ActorRef as ActorRef
from ._actor import Message as Message
from ._actor import Refused as Refused
from ._actor import spawn as spawn

__all__ = (
    "DEFAULT_CAPACITY",
    "Actor",
    "ActorDead",
    "ActorRef",
    "Message",
    "Refused",
    "spawn",
)
