"""The deterministic layer of a cluster: several hubs in one trio run under MockClock on one
in-memory store and coordinator, driven by a Hypothesis state machine (issue 16, "Done means").

Rules: post (with an idempotency key, retried on another node as a client would,
re-reading the shard map), register a name on one node or on two at once (a race), kill a
node (``kill -9``: it hands nothing over), stop one cleanly (it drains and hands over),
pause it past its lease (its store and coordinator calls hang), cut it from the store
(they fail), resume it, start a node (a dead one comes back as a new incarnation of its
id).

Invariants after every step:

- each accepted envelope is in the WAL exactly once, at the seq its poster was given;
- every session's WAL has seqs 1..n, no gaps;
- along a session, the epoch of the writes the fence let through never goes back;
- a post ends within lease + retry budget (``POST_BUDGET_S``), and is accepted when a node
  was up for it (not paused, cut or dead);
- no two live agents share a name across nodes: a name is registered once (however many
  nodes race for it), and no node takes another agent for its holder.

It runs derandomized (the same examples every run) on a modest budget (a few seconds);
``TROUPE_RELIABILITY=full`` runs 300 new random examples of 40 steps.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import Counter
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from troupe import NetworkError, NotOwner, Passport, ProtocolError, StoreError
from troupe.api import Accepted

from ..test_reliability._bridge import Bridge
from ._nodes import LEASE_S, TICK_S, Cluster, Node, World, bootstrap, owner_of, text, wal_of

#: Sessions every example posts into (8 shards: some share one).
SESSIONS = 4
#: Node ids a cluster may have.
NODE_IDS = ("a", "b", "c")
#: One attempt at a post waits this long for an answer before the client tries again.
ATTEMPT_S = 3.0
#: Between attempts.
RETRY_S = 0.5
#: A post ends (accepted or given up) within this: a takeover (lease + one tick), then an
#: attempt and a retry.
POST_BUDGET_S = LEASE_S + TICK_S + ATTEMPT_S + RETRY_S + TICK_S

#: Names the examples register (few: they race for them).
NAMES = ("xan", "yve", "zed")

#: ``TROUPE_RELIABILITY=full``: many more examples, new random ones each run.
FULL = os.environ.get("TROUPE_RELIABILITY") == "full"

SETTINGS = settings(
    max_examples=300 if FULL else 25,
    stateful_step_count=40 if FULL else 30,
    deadline=None,
    derandomize=not FULL,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


#: What the examples did, in all (the test checks they did each thing).
STATS: Counter[str] = Counter()


@attrs.frozen
class Posted:
    session_id: str
    key: str
    accepted: Accepted


class ClusterMachine(RuleBasedStateMachine):
    bridge: Bridge

    def __init__(self) -> None:
        super().__init__()
        self.world: World | None = None
        self.cluster: Cluster | None = None
        self.posted: list[Posted] = []
        self.keys = itertools.count()
        #: name -> the agent id its (only) successful register was given.
        self.names: dict[str, str] = {}

    # -- set-up and teardown --------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        self.bridge.run(self._start)

    #: The cluster key: with one the nodes route (see :class:`RoutingMachine`).
    secret: str | None = None

    async def _start(self) -> None:
        self.world = await bootstrap(SESSIONS)
        self.cluster = Cluster(self.world, self.bridge.nursery, secret=self.secret)
        for node_id in NODE_IDS[:2]:
            await self.cluster.start(node_id)

    def teardown(self) -> None:
        if self.cluster is not None:
            self.bridge.run(self.cluster.stop, settle=False)

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    def nodes(self, *states: str) -> list[Node]:
        return [n for n in self.c.nodes.values() if n.state in states]

    # -- rules ------------------------------------------------------------------------------

    @rule(data=st.data())
    def post(self, data: st.DataObject) -> None:
        assert self.world is not None
        sid = data.draw(st.sampled_from(self.world.sessions), label="session")
        key = f"k{next(self.keys)}"
        up = bool(self.nodes("up"))
        began = self.bridge.clock.current_time()
        accepted = self.bridge.run(self._post, sid, key, settle=False)
        took = self.bridge.clock.current_time() - began
        assert took <= POST_BUDGET_S + ATTEMPT_S, f"post {key} took {took} s"
        STATS["posts accepted" if accepted is not None else "posts given up"] += 1
        if accepted is None:
            assert not up, f"post {key} to {sid} was never accepted though a node was up"
            return
        self.posted.append(Posted(sid, key, accepted))
        if data.draw(st.booleans(), label="retried"):
            again = self.bridge.run(self._post, sid, key, settle=False)
            if again is not None:
                assert (again.envelope_id, again.seq) == (accepted.envelope_id, accepted.seq)
                assert again.duplicate

    @rule(data=st.data())
    def post_more(self, data: st.DataObject) -> None:
        self.post(data)  # posts are half the steps

    async def _post(self, sid: str, key: str) -> Accepted | None:
        """A client: post to the shard's owner as the map says (else to any node), and try
        again with the same key until accepted or out of budget."""
        assert self.world is not None
        envelope = text(self.world, sid, key, key=key)
        with trio.move_on_after(POST_BUDGET_S):
            for attempt in itertools.count():
                node = self._node_for(sid, attempt)
                if node is not None and node.hub is not None:
                    with trio.move_on_after(ATTEMPT_S):
                        try:
                            return await node.hub.post(envelope)
                        except (StoreError, NetworkError):
                            pass  # not the owner, cut off, shutting down: try again
                await trio.sleep(RETRY_S)
        return None

    def _node_for(self, sid: str, attempt: int) -> Node | None:
        """Where a client posts: the owner as the map says, else any live node."""
        owner = owner_of(self.c, sid)
        live = [n for n in self.c.nodes.values() if n.hub is not None]
        return owner or (live[attempt % len(live)] if live else None)

    @precondition(lambda self: any(n.hub is not None for n in self.nodes("up")))
    @rule(data=st.data())
    def register(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(NAMES), label="name")
        live = sorted((n for n in self.nodes("up") if n.hub is not None), key=lambda n: n.node_id)
        racers = data.draw(
            st.lists(st.sampled_from(live), min_size=1, max_size=2, unique_by=lambda n: n.node_id),
            label="nodes",
        )
        won = self.bridge.run(self._register, racers, name, settle=False)
        assert len(won) <= 1, f"{name!r} registered {len(won)} times at once: {won}"
        if won:
            assert name not in self.names, f"{name!r} registered again: {won}"
            self.names[name] = won[0]
        STATS["name races" if len(racers) > 1 else "names asked"] += 1

    async def _register(self, racers: list[Node], name: str) -> list[str]:
        """Register ``name`` on each of ``racers`` at once; the agent ids it was given."""
        won: list[str] = []

        async def one(node: Node) -> None:
            assert node.hub is not None
            with trio.move_on_after(ATTEMPT_S):
                try:
                    passport = await node.hub.register(Passport(name=name))
                except ProtocolError:
                    STATS["names taken"] += 1
                else:
                    assert passport.agent_id is not None
                    won.append(passport.agent_id)
                return
            # An up node answers at once: the name is its caller's, or taken (as on one
            # node), never a store error for a name another node took.
            raise AssertionError(f"register {name!r} on {node.node_id} did not answer")

        async with trio.open_nursery() as nursery:
            for node in racers:
                nursery.start_soon(one, node)
        return won

    @precondition(lambda self: len(self.nodes("up")) > 1)
    @rule(data=st.data())
    def kill(self, data: st.DataObject) -> None:
        STATS["kill"] += 1
        node = data.draw(st.sampled_from(self.nodes("up", "paused", "cut")), label="kill")
        self.bridge.run(self.c.kill, node)

    @precondition(lambda self: len(self.nodes("up")) > 1)
    @rule(data=st.data())
    def stop_cleanly(self, data: st.DataObject) -> None:
        STATS["stop_cleanly"] += 1
        node = data.draw(st.sampled_from(self.nodes("up")), label="stop")
        self.bridge.run(self.c.stop_node, node)

    @precondition(lambda self: len(self.c.nodes) < len(NODE_IDS) or self.nodes("dead"))
    @rule(data=st.data())
    def start_node(self, data: st.DataObject) -> None:
        STATS["start_node"] += 1
        free = [i for i in NODE_IDS if i not in self.c.nodes] + [
            n.node_id for n in self.nodes("dead")
        ]
        node_id = data.draw(st.sampled_from(sorted(free)), label="start")
        self.bridge.run(self.c.start, node_id)

    @precondition(lambda self: len(self.nodes("up")) > 1)
    @rule(data=st.data())
    def pause_past_lease(self, data: st.DataObject) -> None:
        STATS["pause_past_lease"] += 1
        node = data.draw(st.sampled_from(self.nodes("up")), label="pause")
        self.bridge.run(self._pause, node)

    async def _pause(self, node: Node) -> None:
        self.c.pause(node)
        # A post that reaches it now hangs at its store, to be fenced when it resumes.
        assert self.world is not None
        if node.hub is not None:
            sid = next((s for s in self.world.sessions if owner_of(self.c, s) is node), None)
            if sid is not None:
                self.bridge.nursery.start_soon(self._stalled, node, sid)
        await trio.sleep(LEASE_S + TICK_S)

    async def _stalled(self, node: Node, sid: str) -> None:
        assert self.world is not None
        assert node.hub is not None
        try:
            await node.hub.post(text(self.world, sid, "stalled"))
        except NotOwner:
            STATS["stalled posts fenced"] += 1
        except (StoreError, NetworkError):
            STATS["stalled posts refused"] += 1
        else:
            STATS["stalled posts accepted"] += 1

    @precondition(lambda self: len(self.nodes("up")) > 1)
    @rule(data=st.data())
    def cut(self, data: st.DataObject) -> None:
        STATS["cut"] += 1
        node = data.draw(st.sampled_from(self.nodes("up")), label="cut")
        self.bridge.run(self._sync, self.c.cut, node)

    @precondition(lambda self: bool(self.nodes("paused", "cut")))
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        STATS["resume"] += 1
        node = data.draw(st.sampled_from(self.nodes("paused", "cut")), label="resume")
        self.bridge.run(self._sync, self.c.resume, node)

    async def _sync(self, fn: Any, *args: Any) -> None:
        await trio.lowlevel.checkpoint()
        fn(*args)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def the_wal_holds_each_accepted_envelope_once_at_its_seq_without_gaps(self) -> None:
        if self.world is None:
            return
        wals = self.bridge.run(self._wals, settle=False)
        for sid, wal in wals.items():
            assert [e.seq for e in wal] == list(range(1, len(wal) + 1)), f"gap in {sid}"
        for p in self.posted:
            wal = wals[p.session_id]
            hits = [e for e in wal if e.envelope_id == p.accepted.envelope_id]
            assert len(hits) == 1, f"{p.key}: {len(hits)} copies"
            assert hits[0].seq == p.accepted.seq, f"{p.key} at {hits[0].seq}, told {p.accepted}"
            assert sum(1 for e in wal if e.idempotency_key == p.key) == 1

    async def _wals(self) -> dict[str, list[Any]]:
        assert self.world is not None
        return {sid: await wal_of(self.world, sid) for sid in self.world.sessions}

    @invariant()
    def no_two_live_agents_share_a_name_across_nodes(self) -> None:
        if self.world is None:
            return
        stored = self.bridge.run(self._agents, settle=False)
        holders = {r.passport.name: r.passport.agent_id for r in stored}
        assert len(holders) == len(stored), "a name held twice in the store"
        for name, agent_id in self.names.items():
            assert holders.get(name) == agent_id, f"{name!r} is not its winner's"
        for node in self.c.nodes.values():
            if node.hub is None:
                continue
            for name in NAMES:
                held = node.hub.find_agent_id(name)
                assert held is None or held == holders.get(name), (
                    f"node {node.node_id} takes {held} for {name!r}'s holder, "
                    f"the store {holders.get(name)}"
                )

    async def _agents(self) -> list[Any]:
        assert self.world is not None
        async with self.world.store.view() as store:
            return await store.load_agents()

    @invariant()
    def no_write_lands_under_a_stale_epoch_and_no_epoch_goes_back_along_a_session(self) -> None:
        if self.cluster is None:
            return
        last: dict[str, int] = {}
        for w in self.c.writes:
            assert not w.stale, f"a write under a stale epoch: {w}"
            assert w.epoch is not None
            assert w.epoch >= last.get(w.session_id, 0), f"epoch went back: {w}"
            last[w.session_id] = w.epoch


class RoutingMachine(ClusterMachine):
    """The same cluster with a cluster key: a client posts to a node that does *not* own
    the session whenever one is up (else to the owner), which forwards it; the same
    invariants hold, and a post still ends within its budget."""

    secret = "the cluster key of the machine"

    def _node_for(self, sid: str, attempt: int) -> Node | None:
        owner = owner_of(self.c, sid)
        others = [n for n in self.c.nodes.values() if n.hub is not None and n is not owner]
        if others:
            STATS["posts through another node"] += 1
            return others[attempt % len(others)]
        return owner


@pytest.mark.parametrize("kind", [ClusterMachine, RoutingMachine], ids=["direct", "routed"])
async def test_a_cluster_keeps_its_promises_whatever_happens_to_its_nodes(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    kind: type[ClusterMachine],
) -> None:
    caplog.set_level(logging.CRITICAL, logger="troupe")
    async with trio.open_nursery() as nursery:
        with Bridge(autojump_clock, nursery) as bridge:
            machine = type("BoundClusterMachine", (kind,), {"bridge": bridge})
            STATS.clear()
            await trio.to_thread.run_sync(
                partial(run_state_machine_as_test, machine, settings=SETTINGS)
            )
    # The examples did what they are for (a rule whose precondition never held tests nothing).
    rules = ("kill", "stop_cleanly", "start_node", "pause_past_lease", "cut", "resume")
    for did in ("posts accepted", "name races", "names taken", *rules):
        assert STATS[did] > 0, dict(STATS)
    assert STATS["stalled posts fenced"] > 0, dict(STATS)
    if kind is RoutingMachine:
        assert STATS["posts through another node"] > 0, dict(STATS)
