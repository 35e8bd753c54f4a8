"""A cluster of hubs on one store: shard ownership with fencing (issue 16, part).

A session's shard is a stable hash of its id; each node holds a fair share of the shards
under leases a :class:`Coordinator` judges (PostgreSQL's clock, or an in-memory one for
simulations), and every session write is fenced by its shard's epoch in its own
transaction. With a cluster key (``ClusterConfig(secret=...)``) the nodes route: a request
for another node's session is forwarded to its owner, and deliveries to a recipient bound
on another node reach it through hints (``_routing``, ``_peer``). See ``_shards`` (the
sans-IO core), ``_member`` (the trio driver) and the README's "Running a cluster".
"""

from .._errors import NotOwner as NotOwner
from ._coordinator import Coordinator as Coordinator
from ._coordinator import MemoryCoordinator as MemoryCoordinator
from ._coordinator import NodeInfo as NodeInfo
from ._coordinator import ShardInfo as ShardInfo
from ._member import ClusterMember as ClusterMember
from ._postgres import PostgresCoordinator as PostgresCoordinator
from ._routing import LocalPeers as LocalPeers
from ._routing import Router as Router
from ._shards import Claims as Claims
from ._shards import ClusterConfig as ClusterConfig
from ._shards import Ownership as Ownership
from ._shards import fair_share as fair_share
from ._shards import shard_of as shard_of

__all__ = (
    "Claims",
    "ClusterConfig",
    "ClusterMember",
    "Coordinator",
    "LocalPeers",
    "MemoryCoordinator",
    "NodeInfo",
    "NotOwner",
    "Ownership",
    "PostgresCoordinator",
    "Router",
    "ShardInfo",
    "fair_share",
    "shard_of",
)
