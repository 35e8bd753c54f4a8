"""``hub.statistics()``: exact counts after a known sequence, high-water marks after a burst."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from troupe import NetworkError, NotFoundError, ProtocolError
from troupe.hub import Hub, HubHealth
from troupe.hub._hub import HEALTH_STORE_TIMEOUT_S
from troupe.model import TaskMetadata, TaskSpec
from troupe.store import MemoryStore
from troupe.testing import FaultyStore

from ..harness import HubPair, client_of, open_hub_pair, text_envelope


async def test_posts_accepted_refused_and_repeated_are_counted_exactly(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob, carol = await h.agent("alice"), await h.agent("bob"), await h.agent("carol")
    md = await h.session("conversation", alice, bob)  # invite, ack, opened
    sid = md.session_id
    await h.say(md, alice, "one")
    await h.say(md, bob, "two", idempotency_key="k")
    assert (await hub.post(text_envelope(md, bob, "two", idempotency_key="k"))).duplicate
    refusals: list[tuple[str, type[NetworkError]]] = [
        (carol.id, ProtocolError),  # not a participant: the session actor refuses it
        ("ghost", NotFoundError),  # not registered: refused before the session is asked
    ]
    for sender, error in refusals:
        with pytest.raises(error):
            await hub.post_envelope(text_envelope(md, sender))
    with pytest.raises(NotFoundError):
        await hub.post_envelope(text_envelope("no-such-session", alice))
    h.faults.crash_at("before_append", session_id=sid, times=2)
    with pytest.raises(ProtocolError, match="poison"):
        await h.say(md, alice, "poison")  # crashed the session twice: refused once
    await hub.close_session(sid)  # the closing notice is appended too
    with pytest.raises(ProtocolError, match="closed"):
        await h.say(md, alice, "too late")  # an ended session has no actor: refused before
    stats = hub.statistics()
    assert len(await hub.read_wal(sid)) == 6
    assert (stats.envelopes_accepted, stats.envelopes_rejected, stats.duplicates) == (6, 5, 1)
    assert (stats.session_restarts, stats.poison_envelopes, stats.sessions_crashed) == (2, 1, 0)


async def test_mailbox_high_water_marks_after_a_known_burst(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    await h.settle()
    before = hub.statistics()
    assert before.hub_mailbox_high_water < 5
    assert before.session_mailbox_high_water < 5
    assert before.connection_mailbox_high_water < 5

    # Six asks of the idle hub actor at once: the first is handed to it (a waiting receiver
    # gets a message without queueing it), the other five queue before it is done.
    async with trio.open_nursery() as nursery:
        for n in range(6):
            task = TaskMetadata(task_id=f"t{n}", owner_id=alice.id, spec=TaskSpec(title="t"))
            nursery.start_soon(hub.observe_task, task)
    assert hub.statistics().hub_mailbox_high_water == 5

    # Six posts into one session at once, while bob's connection cannot send: the session
    # actor takes the first and five queue; bob's connection takes the first delivery and
    # is stuck sending it, the other five queue behind it.
    endpoint = client_of(bob).endpoint
    endpoint.stalled = trio.Event()
    async with trio.open_nursery() as nursery:
        for n in range(6):
            nursery.start_soon(h.say, md, alice, f"burst {n}")
    await h.settle()
    stats = hub.statistics()
    assert (stats.session_mailbox_high_water, stats.connection_mailbox_high_water) == (5, 5)
    endpoint.stalled.set()
    await h.settle()
    assert client_of(bob).seqs(bob.id, md.session_id)[-6:] == [4, 5, 6, 7, 8, 9]
    # A mark is the most ever queued: draining does not lower it, nor does the session
    # actor stopping (its mark is kept when the session ends).
    await hub.close_session(md.session_id)
    assert hub.statistics().session_mailbox_high_water == 5


async def test_a_session_given_up_on_keeps_its_high_water_mark(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Its actor crashed, so it ran no on_stop, where the mark used to be kept.
    async with open_hub_pair(session_max_restarts=0) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        await h.settle()  # its actor waits for the next message
        async with trio.open_nursery() as nursery:
            for n in range(6):  # the first is handed to the actor, five queue
                nursery.start_soon(h.say, md, alice, f"burst {n}")
        assert h.hub.statistics().session_mailbox_high_water == 5
        h.faults.crash_at("before_append", session_id=md.session_id)
        with pytest.raises(ProtocolError):
            await h.say(md, alice, "crash")
        await h.settle()
        stats = h.hub.statistics()
        assert (stats.sessions_crashed, stats.session_mailbox_high_water) == (1, 5)


async def test_health_says_whether_the_hub_serves(autojump_clock: trio.testing.MockClock) -> None:
    faulty = FaultyStore(MemoryStore())
    async with open_hub_pair(faulty) as h:
        hub = h.hub
        alice, bob = await h.agent("alice"), await h.agent("bob")
        await h.session("conversation", alice, bob)
        health = await hub.health()
        assert health == HubHealth(
            serving=True,
            supervisor="running",
            store_reachable=True,
            live_sessions=1,
            connections=2,
        )
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            health.serving = False  # type: ignore[misc]
        faulty.fail_next("last_seq")
        failing = await hub.health()
        assert (failing.serving, failing.store_reachable) == (False, False)
        faulty.delay("last_seq", 60, n=1)
        start = trio.current_time()
        slow = await hub.health()
        assert (slow.serving, slow.store_reachable) == (False, False)
        assert trio.current_time() - start == HEALTH_STORE_TIMEOUT_S
        faulty.heal()
        assert (await hub.health()).serving
    ended = await hub.health()
    assert (ended.serving, ended.supervisor) == (False, "stopping")


async def test_supervisors_shows_the_hubs_tree_to_look_at(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair() as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        session = await h.session("conversation", alice, bob)
        sups = h.hub.supervisors()
        assert list(sups) == ["hub", "sessions", "endpoints"]
        root, sessions, endpoints = sups["hub"], sups["sessions"], sups["endpoints"]
        assert root is not None
        assert sessions is not None
        assert endpoints is not None
        assert root.state == "running"
        assert {c.id for c in root.which_children()} >= {"hub", "sessions", "endpoints"}
        assert [c.id for c in sessions.which_children()] == [session.session_id]
        assert len(endpoints.which_children()) == 2  # alice's and bob's connections
