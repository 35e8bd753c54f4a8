"""Routing between cluster nodes in one trio run (MockClock): forwarding, hints, the key.

Nodes ``a``, ``b`` and ``c`` share a cluster key and reach each other over in-process peer
links (``LocalPeers``: a LocalLink to each node's hub, requests as frames, the peer hello
included). A client connects to any node; what it asks of another node's session is
forwarded to the owner, and what the owner delivers to it comes through a hint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from troupe import EV_TEXT, HubClient, LocalLink, NotOwner, Turn
from troupe.api import GetSession, PostEnvelope, ReadWal
from troupe.cluster import shard_of
from troupe.cluster._peer import Forward, PeerChallenge, PeerHello, proof
from troupe.hub import Hub
from troupe.model import (
    Frame,
    HelloFrame,
    ResponseFrame,
    WelcomeFrame,
    unstructure,
)
from troupe.transport import LocalLinkClient

from ..test_transport._wire import eventually as wire_eventually
from ._nodes import (
    SHARDS,
    TICK_S,
    Cluster,
    Node,
    World,
    bootstrap,
    eventually,
    owner_of,
    text,
    wal_of,
)

KEY = "k" * 32


def hub_of(node: Node) -> Hub:
    assert node.hub is not None, f"node {node.node_id} is not running"
    return node.hub


@asynccontextmanager
async def three_nodes(
    sessions: int = 8, secret: str | None = KEY
) -> AsyncIterator[tuple[World, Cluster, Node, Node, Node]]:
    """Nodes ``a``, ``b``, ``c`` with the cluster key, settled on their shards; ``cy`` is
    registered too, in none of the sessions."""
    world = await bootstrap(sessions, others=("cy",))
    async with trio.open_nursery() as nursery:
        cluster = Cluster(world, nursery, secret=secret)
        a = await cluster.start("a")
        b = await cluster.start("b")
        c = await cluster.start("c")
        await trio.sleep(3 * TICK_S)
        yield world, cluster, a, b, c
        await cluster.stop()


def owned_by(cluster: Cluster, node: Node) -> str:
    return next(s for s in cluster.world.sessions if owner_of(cluster, s) is node)


def router_of(node: Node) -> Any:
    assert node.member.router is not None
    return node.member.router


class Recorder:
    """An agent that keeps what it was delivered and never answers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str]] = []

    async def respond(self, turn: Turn) -> str | None:
        envelope = turn.envelope
        self.seen.append((envelope.session_id, envelope.seq, envelope.event_type))
        await trio.lowlevel.checkpoint()
        return None


class Wire:
    """A raw connection to a hub over a LocalLink: frames in, frames out (no HubClient)."""

    def __init__(self, conn: LocalLinkClient) -> None:
        self.conn = conn
        self.frames = conn.frames()
        self.ids = 0

    async def send(self, frame: Frame) -> None:
        await self.conn.send_frame(frame)

    async def answer(self, request_id: str) -> Frame:
        while True:
            frame = await anext(self.frames)
            if getattr(frame, "request_id", None) == request_id:
                return frame

    async def call(self, op: str, params: dict[str, Any]) -> ResponseFrame:
        from troupe.model import RequestFrame

        self.ids += 1
        rid = str(self.ids)
        await self.send(RequestFrame(request_id=rid, op=op, params=params))
        answer = await self.answer(rid)
        assert isinstance(answer, ResponseFrame), answer
        return answer

    async def hello(self, name: str) -> None:
        await self.send(HelloFrame(name=name, request_id="hello"))
        assert isinstance(await self.answer("hello"), WelcomeFrame)


@asynccontextmanager
async def wire(hub: Hub) -> AsyncIterator[Wire]:
    conn = LocalLink(hub).client()
    await conn.open()
    connection = Wire(conn)
    try:
        yield connection
    finally:
        await connection.frames.aclose()
        await conn.aclose()


async def test_a_post_to_a_node_that_does_not_own_the_session_is_forwarded_and_lands_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with three_nodes() as (world, cluster, a, b, _):
        sid = owned_by(cluster, a)
        async with HubClient(LocalLink(hub_of(b))) as hc:
            ann = await hc.attach(Recorder(), "ann")
            first = await ann.post_envelope(text(world, sid, "hello", key="k1"))
            again = await hc.post(text(world, sid, "hello", key="k1"))
        assert again.envelope_id == first
        assert again.duplicate
        assert router_of(b).forwarded >= 2
        wal = await wal_of(world, sid)
        assert [(e.text, e.seq) for e in wal if e.event_type == EV_TEXT] == [("hello", again.seq)]
        # Reads of the session go to its owner too: b's directory may be stale, a's is not.
        page = await hub_of(b).call(ReadWal(session_id=sid))
        assert [e.envelope_id for e in page.envelopes if e.event_type == EV_TEXT] == [first]
        md = await hub_of(b).call(GetSession(session_id=sid))
        assert md.session_id == sid


async def test_a_forwarded_post_lands_once_when_its_owner_loses_the_shard_on_the_way(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with three_nodes() as (world, cluster, a, b, _):
        sid = owned_by(cluster, a)
        shard = shard_of(sid, SHARDS)
        epoch = cluster.coordinator.shards[shard].epoch
        cluster.pause(a)  # its store and coordinator calls hang: the post waits there
        answers: list[Any] = []

        async def post() -> None:
            answers.append(await hub_of(b).post(text(world, sid, "through", key="k2")))

        cluster.nursery.start_soon(post)
        await eventually(lambda: router_of(b).forwarded >= 1, 1.0, 0.01)
        await trio.sleep(0.5)
        assert not answers  # held at a, whose store does not answer
        # a's lease runs out; another node claims the shard (a new epoch) ...
        await eventually(
            lambda: (owner := owner_of(cluster, sid)) is not None and owner is not a,
            4 * TICK_S + 12.0,
        )
        new_owner = owner_of(cluster, sid)
        assert new_owner is not None
        assert cluster.coordinator.shards[shard].epoch > epoch
        # ... and a, resumed, refuses what it holds (it no longer serves the shard): b
        # re-reads the map and forwards the same post (same key) to the new owner.
        cluster.resume(a)
        await eventually(lambda: bool(answers), 2 * TICK_S + 12.0)
        wal = await wal_of(world, sid)
        texts = [e for e in wal if e.event_type == EV_TEXT]
        assert [(e.text, e.seq) for e in texts] == [("through", answers[0].seq)]
        mine = [w for w in cluster.writes if w.session_id == sid and w.seq == answers[0].seq]
        assert [w.node_id for w in mine] == [new_owner.node_id]
        assert not any(w.stale for w in cluster.writes)
        # b or c claimed it (trio's scheduler decides who ticks first): b then served the
        # post itself after one forward, or forwarded it to c a second time.
        assert router_of(b).forwarded == (1 if new_owner is b else 2)


async def test_a_recipient_on_another_node_is_delivered_the_owners_session_and_acks_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with three_nodes() as (world, _, a, b, _):
        bob = Recorder()
        async with HubClient(LocalLink(hub_of(b))) as hc:
            await hc.attach(bob, "bob")
            await eventually(lambda: router_of(a).remote.get(world.bob) == "b", 2 * TICK_S)
            # A session created on a after b loaded its directory: b has no entry for it.
            md = await hub_of(a).create_session(
                creator_id=world.ann, manifest_type="broadcast", participants=[world.bob]
            )
            sid = md.session_id
            assert sid not in hub_of(b).core.directory.sessions
            accepted = await hub_of(a).post(text(world, sid, "to bob", key="k3"))
            conn = next(x for x in hub_of(b).core.connections.values() if world.bob in x.agents)
            await eventually(lambda: conn.sent.get((world.bob, sid), 0) >= accepted.seq, 2.0, 0.01)
            assert sid not in hub_of(b).core.directory.sessions  # caught up from the store
            # bob's client acked it to b, which saved his cursor in the shared store.
            await cursor_reaches(hub_of(a), world.bob, sid, accepted.seq)
            assert router_of(b).forwarded >= 1  # bob's invite ack went to a
        assert router_of(a).hints_sent >= 1


async def test_hints_for_one_recipient_and_session_are_coalesced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with three_nodes() as (world, cluster, a, b, _):
        sid = owned_by(cluster, a)
        async with HubClient(LocalLink(hub_of(b))) as hc:
            bob = await hc.attach(Recorder(), "bob")
            await eventually(lambda: router_of(a).remote.get(world.bob) == "b", 2 * TICK_S)
            before = router_of(a).hints_sent
            posts = 40
            async with trio.open_nursery() as nursery:
                for i in range(posts):
                    nursery.start_soon(hub_of(a).post, text(world, sid, f"t{i}", key=f"t{i}"))
            last = max(e.seq for e in await wal_of(world, sid))
            conn = next(x for x in hub_of(b).core.connections.values() if bob.agent_id in x.agents)
            await eventually(lambda: conn.sent.get((world.bob, sid), 0) >= last, 2.0, 0.01)
        # Each post was a hint, but they went in fewer (recipient, session) sends.
        assert 1 <= router_of(a).hints_sent - before < posts
        texts = [e.seq for e in await wal_of(world, sid) if e.event_type == EV_TEXT]
        assert len(texts) == posts


async def test_a_recipient_that_comes_back_on_a_third_node_is_replayed_what_it_missed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with three_nodes() as (world, _, a, b, c):
        async with HubClient(LocalLink(hub_of(b))) as hc:
            await hc.attach(Recorder(), "bob")
            await eventually(lambda: router_of(a).remote.get(world.bob) == "b", 2 * TICK_S)
            md = await hub_of(a).create_session(
                creator_id=world.ann, manifest_type="broadcast", participants=[world.bob]
            )
        sid = md.session_id
        await eventually(lambda: world.bob not in router_of(a).remote, 2 * TICK_S)
        # bob is away: what ann says now waits in the WAL.
        missed = [await hub_of(a).post(text(world, sid, f"m{i}", key=f"m{i}")) for i in range(3)]
        assert sid not in hub_of(c).core.directory.sessions
        async with HubClient(LocalLink(hub_of(c))) as hc:
            await hc.attach(Recorder(), "bob")  # asks for a replay: a hints c at once
            conn = next(x for x in hub_of(c).core.connections.values() if world.bob in x.agents)
            await eventually(
                lambda: conn.sent.get((world.bob, sid), 0) >= missed[-1].seq, 2 * TICK_S, 0.01
            )
            await cursor_reaches(hub_of(a), world.bob, sid, missed[-1].seq)


async def cursor_reaches(hub: Hub, agent_id: str, session_id: str, seq: int) -> None:
    """Wait (2 s of virtual time at most) until the shared store holds ``agent_id``'s cursor
    of ``session_id`` at ``seq`` or beyond (a connection saves acks after its flush interval)."""

    async def reached() -> bool:
        return (await hub.core.store.load_cursors(agent_id)).get(session_id, 0) >= seq

    with trio.fail_after(2):
        await wire_eventually(reached, every=0.05)


async def test_a_peer_must_prove_the_cluster_key(autojump_clock: trio.testing.MockClock) -> None:
    async with three_nodes() as (world, cluster, a, _, _):
        sid = owned_by(cluster, a)
        post = PostEnvelope(envelope=text(world, sid, "sneaky", key="k4"))
        forward = unstructure(Forward(request_op=post.op, params=unstructure(post)))
        async with wire(hub_of(a)) as conn:
            refused = await conn.call("peer_forward", forward)
            assert (refused.ok, refused.error_code) == (False, "access_denied")
            nonce = (await conn.call("peer_challenge", {})).result
            wrong = PeerHello(node_id="b", proof=proof("not the key at all!", nonce, "b"))
            hello = await conn.call("peer_hello", unstructure(wrong))
            assert (hello.ok, hello.error_code) == (False, "auth_failed")
            # The nonce was spent on the failed hello: the right proof of it is too late.
            late = PeerHello(node_id="b", proof=proof(KEY, nonce, "b"))
            again = await conn.call("peer_hello", unstructure(late))
            assert (again.ok, again.error_code) == (False, "auth_failed")
            still = await conn.call("peer_forward", forward)
            assert (still.ok, still.error_code) == (False, "access_denied")
            # With a fresh nonce and the key, the same connection is a peer.
            nonce = (await conn.call("peer_challenge", {})).result
            right = PeerHello(node_id="b", proof=proof(KEY, nonce, "b"))
            assert (await conn.call("peer_hello", unstructure(right))).ok
            landed = await conn.call("peer_forward", forward)
            assert landed.ok, landed
        wal = await wal_of(world, sid)
        assert [e.text for e in wal if e.event_type == EV_TEXT] == ["sneaky"]
        assert PeerChallenge.op == "peer_challenge"


async def test_a_hub_without_the_key_refuses_peers_and_does_not_forward(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with three_nodes(secret=None) as (_, _, a, _, _):
        async with wire(hub_of(a)) as conn:
            answer = await conn.call("peer_challenge", {})
            assert (answer.ok, answer.error_code) == (False, "access_denied")
        assert a.member.router is None


async def test_the_acting_identity_is_checked_before_forwarding_and_the_owner_checks_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with three_nodes() as (world, cluster, a, b, _):
        sid = owned_by(cluster, a)
        async with wire(hub_of(b)) as conn:
            await conn.hello("bob")
            before = router_of(b).forwarded
            # bob's connection may not act as ann: refused on b, nothing forwarded.
            post = PostEnvelope(envelope=text(world, sid, "as ann", key="k5"))
            refused = await conn.call("post_envelope", unstructure(post))
            assert (refused.ok, refused.error_code) == (False, "access_denied")
            assert router_of(b).forwarded == before
            # bob is a participant: a read of the session is forwarded and answered.
            page = await conn.call("read_wal", {"session_id": sid})
            assert page.ok, page
            assert router_of(b).forwarded == before + 1
        assert not [e for e in await wal_of(world, sid) if e.event_type == EV_TEXT]
        async with wire(hub_of(b)) as conn:
            await conn.hello("cy")
            # cy may read what it takes part in only: b cannot tell (its directory may not
            # know the session), the owner can, from the identities the forward carries.
            denied = await conn.call("read_wal", {"session_id": sid})
            assert (denied.ok, denied.error_code) == (False, "access_denied")
            assert "no identity of this connection is a participant" in denied.error_message
            assert router_of(b).forwarded == before + 2


async def test_a_peer_with_another_key_is_not_a_peer_and_the_caller_gets_not_owner_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = await bootstrap(8)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(world, nursery, secret=KEY)
        a = await cluster.start("a")
        cluster.secret = "another key, not the cluster's"
        b = await cluster.start("b")
        await trio.sleep(3 * TICK_S)
        sid = owned_by(cluster, a)
        started = trio.current_time()
        with pytest.raises(NotOwner) as refused:
            await hub_of(b).post(text(world, sid, "lost", key="k6"))
        # It looked for an owner that would take it for lease + tick, then gave up.
        assert trio.current_time() - started <= router_of(b).budget_s + TICK_S
        assert refused.value.owner == "a"
        assert "no owner took the request" in str(refused.value)
        assert "refused" in str(refused.value.__cause__) or refused.value.__cause__ is not None
        # Nothing crashed on either node: the links failed, the nodes went on.
        for node in (a, b):
            health = await hub_of(node).health()
            assert health.serving, health
            assert hub_of(node).supervisors()["hub"].statistics().restarts == 0  # type: ignore[union-attr]
        assert not [e for e in await wal_of(world, sid) if e.event_type == EV_TEXT]
        await cluster.stop()


async def test_a_node_that_stopped_refuses_at_once_instead_of_looking_for_an_owner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with three_nodes() as (world, cluster, a, b, _):
        sid = owned_by(cluster, a)
        stopped = hub_of(b)
        await cluster.stop_node(b)
        began = trio.current_time()
        with pytest.raises(NotOwner, match="not routing now"):
            await stopped.post(text(world, sid, "late", key="k7"))
        assert trio.current_time() - began < 0.1  # not lease + tick of looking
