"""Cluster nodes in one trio run: hubs on views of one MemoryStore, one MemoryCoordinator.

A node's store is its own fenced :meth:`MemoryStore.view` of the world's data behind a
:class:`Gated` store, so a test can pause the node's store calls (a stalled process: they
hang, then go on when resumed) or cut them (a node cut off from the database: they fail).
``kill`` is ``kill -9``: the node's calls fail from then on, and its hub is cancelled
without handing anything over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import attrs
import trio

from troupe import EV_TEXT, Envelope, HubClient, LocalLink, Passport, SessionMetadata, Turn
from troupe.cluster import ClusterConfig, ClusterMember, LocalPeers, MemoryCoordinator, shard_of
from troupe.hub import Hub, open_hub
from troupe.store import MemoryStore
from troupe.testing import FaultyStore, seeded_ids

T = TypeVar("T")

SHARDS = 8
LEASE_S = 10.0
TICK_S = 2.0
MARGIN_S = 2.0


class Silent:
    """An agent that never answers."""

    async def respond(self, turn: Turn) -> str | None:
        await trio.lowlevel.checkpoint()
        return None


@attrs.frozen
class World:
    """What the bootstrap hub left in the shared store: two agents and their sessions."""

    store: MemoryStore
    ann: str
    bob: str
    sessions: tuple[str, ...]


async def bootstrap(
    sessions: int, *, others: tuple[str, ...] = (), ttl: int | None = None
) -> World:
    """Register ann and bob and open ``sessions`` broadcasts from ann (she speaks when she
    likes; each with ``ttl`` seconds to live, if given) on a plain hub, then stop it;
    register ``others`` too (in none of them)."""
    store = MemoryStore()
    async with (
        open_hub(store.view(), ttl_sweep_interval=0, new_id=seeded_ids(99)) as hub,
        HubClient(LocalLink(hub)) as hc,
    ):
        ann = await hc.register(Silent(), Passport(name="ann"))
        await hc.register(Silent(), Passport(name="bob"))
        sids = []
        for _ in range(sessions):
            channel = await ann.open(type="broadcast", target=["bob"], ttl=ttl)
            sids.append(channel.session_id)
        for name in others:
            await hc.register(Silent(), Passport(name=name))
        bob_id = await hub.find_agent("bob")
        assert bob_id is not None
    return World(store, ann.agent_id, bob_id, tuple(sids))


def text(world: World, session_id: str, body: str, key: str | None = None) -> Envelope:
    return Envelope(
        session_id=session_id,
        sender_id=world.ann,
        event_type=EV_TEXT,
        event_data={"text": body},
        idempotency_key=key,
    )


@attrs.frozen
class Write:
    """One append as it landed: by which node under which claim, and what the coordinator
    said at that instant."""

    session_id: str
    seq: int
    node_id: str
    epoch: int | None
    owner: str | None
    current_epoch: int
    lease_running: bool

    @property
    def stale(self) -> bool:
        return not (
            self.owner == self.node_id and self.epoch == self.current_epoch and self.lease_running
        )


class Gated(FaultyStore):
    """A FaultyStore whose calls can also be paused: they wait at its gate until resumed.

    ``on_append`` is told of every append that landed, in the same trio step as the write.
    """

    def __init__(
        self, inner: MemoryStore, on_append: Callable[[str, Sequence[Envelope]], None]
    ) -> None:
        super().__init__(inner)
        self.paused: trio.Event | None = None
        self.on_append = on_append

    async def append(
        self,
        session_id: str,
        envelopes: Sequence[Envelope],
        *,
        metadata: SessionMetadata | None = None,
    ) -> None:
        await super().append(session_id, envelopes, metadata=metadata)
        self.on_append(session_id, envelopes)  # no checkpoint since the write

    async def _call(
        self, method: str, session_id: str | None, call: Callable[[], Awaitable[T]]
    ) -> T:
        while self.paused is not None:
            await self.paused.wait()
        return await super()._call(method, session_id, call)


@attrs.define(eq=False)
class Node:
    """One running node: its hub, membership and gated view of the store."""

    node_id: str
    member: ClusterMember
    store: Gated
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    hub: Hub | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    #: "up", "paused", "cut" or "dead".
    state: str = "up"


def config(node_id: str, *, secret: str | None = None, **overrides: float) -> ClusterConfig:
    options: dict[str, Any] = {
        "lease_s": LEASE_S,
        "tick_s": TICK_S,
        "margin_s": MARGIN_S,
        "secret": secret,
        **overrides,
    }
    return ClusterConfig(node_id=node_id, address=f"mem://{node_id}", shards=SHARDS, **options)


class Cluster:
    """Nodes started in ``nursery`` on ``world``'s store, judged by one MemoryCoordinator."""

    def __init__(self, world: World, nursery: trio.Nursery, *, secret: str | None = None) -> None:
        self.world = world
        self.nursery = nursery
        self.coordinator = MemoryCoordinator()
        #: With a cluster key the nodes route, over in-process links (``LocalPeers``).
        self.secret = secret
        self.peers = LocalPeers()
        self.nodes: dict[str, Node] = {}
        #: Every append that landed, in order.
        self.writes: list[Write] = []
        self._seeds = 0

    async def start(self, node_id: str) -> Node:
        """Start a node (a fresh process: a dead node's id may come back)."""
        member = ClusterMember(
            config(node_id, secret=self.secret), self.coordinator, connect=self.peers.connect
        )
        self.coordinator.resume(node_id)
        fence = self.coordinator.fence(node_id, SHARDS, member.claimed)

        def on_append(session_id: str, envelopes: Sequence[Envelope]) -> None:
            shard = shard_of(session_id, SHARDS)
            row = self.coordinator.shards[shard]
            for e in envelopes:
                self.writes.append(
                    Write(
                        session_id,
                        e.seq,
                        node_id,
                        member.claimed(shard),
                        row.owner,
                        row.epoch,
                        row.lease_until > trio.current_time(),
                    )
                )

        node = Node(node_id, member, Gated(self.world.store.view(fence=fence), on_append))
        self.nodes[node_id] = node
        self._seeds += 1
        await self.nursery.start(self._run, node, self._seeds)
        return node

    async def _run(self, node: Node, seed: int, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with node.scope:
                async with open_hub(
                    node.store,
                    cluster=node.member,
                    ttl_sweep_interval=0,
                    expectation_sweep_interval=0,
                    passivate_after=None,
                    new_id=seeded_ids(seed),
                ) as hub:
                    node.hub = hub
                    self.peers.add(node.node_id, hub)
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            if self.peers.hubs.get(node.node_id) is node.hub:
                self.peers.remove(node.node_id)
            node.hub = None
            node.done.set()

    def up(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.state != "dead"]

    async def kill(self, node: Node) -> None:
        """``kill -9``: nothing of it reaches the store or the coordinator from now on."""
        node.state = "dead"
        self.coordinator.cut(node.node_id)
        node.store.fail_next("reads", None)
        node.store.fail_next("commit", None)
        if node.store.paused is not None:
            node.store.paused.set()
            node.store.paused = None
        node.scope.cancel()
        await node.done.wait()

    async def stop_node(self, node: Node) -> None:
        """A clean stop (SIGTERM): the hub's block ends, the node drains and hands over."""
        node.state = "dead"
        node.scope.cancel()
        await node.done.wait()

    def pause(self, node: Node) -> None:
        """A stalled process: its store and coordinator calls hang until :meth:`resume`."""
        node.state = "paused"
        self.coordinator.pause(node.node_id)
        if node.store.paused is None:
            node.store.paused = trio.Event()

    def cut(self, node: Node) -> None:
        """Cut from the database: its store and coordinator calls fail until resumed."""
        node.state = "cut"
        self.coordinator.cut(node.node_id)
        node.store.fail_next("reads", None)
        node.store.fail_next("commit", None)

    def resume(self, node: Node) -> None:
        node.state = "up"
        self.coordinator.resume(node.node_id)
        node.store.heal()
        if node.store.paused is not None:
            node.store.paused.set()
            node.store.paused = None

    async def stop(self) -> None:
        for node in list(self.nodes.values()):
            if node.state != "dead":
                self.resume(node)
                node.scope.cancel()
                await node.done.wait()


def owner_of(cluster: Cluster, session_id: str) -> Node | None:
    """The node the coordinator says owns the session's shard now (lease running)."""
    shard = cluster.coordinator.shards[shard_of(session_id, SHARDS)]
    if shard.owner is None or shard.lease_until <= trio.current_time():
        return None
    node = cluster.nodes.get(shard.owner)
    return None if node is None or node.state == "dead" else node


async def wal_of(world: World, session_id: str) -> list[Envelope]:
    """The session's WAL as the shared store holds it (no node's view, no fence)."""
    async with world.store.view() as store:
        return await store.read(session_id)


async def eventually(condition: Callable[[], bool], within_s: float, step_s: float = 0.1) -> float:
    """Wait (virtual time) until ``condition()`` holds; the time it took. Fails past
    ``within_s``."""
    start = trio.current_time()
    for _ in range(int(within_s / step_s) + 1):
        if condition():
            return trio.current_time() - start
        await trio.sleep(step_s)
    raise AssertionError(f"not true within {within_s} s: {condition}")
