"""Across a hub restart: violations do not fire twice, and sessions refold the same state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
from trio.testing import MockClock

from tests.harness import open_hub_pair
from troupe import HumanClient
from troupe.hub._activity import ACTIVITY_NS
from troupe.hub._expectations import EXPECT_NS
from troupe.model import EV_CONTEXT_SET, EV_PACKET, Envelope
from troupe.session_types import select_winner
from troupe.store import MemoryStore
from troupe.workflow import Handoff, Reply, round_robin
from troupe.workflow import WorkflowType as _Workflow

WORKFLOW = _Workflow()


async def test_a_fired_violation_stays_fired_after_a_restart(autojump_clock: MockClock) -> None:
    store = MemoryStore()
    async with open_hub_pair(store) as net:
        (_, b), sid = await net.people_session("discussion", "a", "b", kickoff="kickoff")
        await trio.sleep(120)
        [warned] = await net.hub.check_expectations()
        assert warned.on_violation == "warn"
    async with open_hub_pair(store) as net:
        await trio.sleep(60)
        assert await net.hub.check_expectations() == []  # b's same missed turn
        await trio.sleep(420)
        [hidden] = await net.hub.check_expectations()
        assert (hidden.on_violation, hidden.violators) == ("hide", (b.agent_id,))
        assert [n.event_data["on_violation"] for n in await net.notices(sid)] == ["warn", "hide"]


async def test_an_audited_violation_stays_fired_after_a_restart(
    autojump_clock: MockClock,
) -> None:
    store = MemoryStore()
    async with open_hub_pair(store) as net:
        a, _ = await net.people("a", "b")
        await (await a.open(type="conversation", target="b")).send("hi")
        await trio.sleep(3600)
        assert len(await net.hub.check_expectations()) == 1
    async with open_hub_pair(store) as net:
        await trio.sleep(10)
        assert await net.hub.check_expectations() == []


async def test_dedup_keys_go_when_the_session_ends(autojump_clock: MockClock) -> None:
    store = MemoryStore()
    async with open_hub_pair(store) as net:
        a, _ = await net.people("a", "b")
        first = await a.open(type="conversation", target="b")
        second = await a.open(type="conversation", target="b")
        await trio.sleep(3600)
        assert len(await net.hub.check_expectations()) == 2
        assert len(await store.load_kv(EXPECT_NS)) == 2
        await first.close()
        await net.hub.check_expectations()
        assert list((await store.load_kv(EXPECT_NS)).values()) == [second.session_id]
        await second.close()  # the hub stops before a tick notices
    async with open_hub_pair(store) as net:
        assert await net.hub.check_expectations() == []
        assert await store.load_kv(EXPECT_NS) == {}


# -- refolding -----------------------------------------------------------------------------

Play = Callable[[list[HumanClient], str], Awaitable[None]]


async def talk(people: list[HumanClient], sid: str, *speakers: int) -> None:
    for i in speakers:
        await people[i].send(sid, f"from {i}")


async def reply(person: HumanClient, sid: str, answer: object) -> None:
    """Post what the default turn handler would for ``answer`` to the last envelope."""
    hc = person.hub_client
    trigger = (await hc.read_wal(sid))[-1]
    built = WORKFLOW.build_reply(await hc.get_session(sid), person.agent_id, answer, trigger)
    assert built is not None
    assert built.event_type == EV_PACKET
    await person.post_envelope(built)


async def play_workflow(p: list[HumanClient], sid: str) -> None:
    await talk(p, sid, 0)
    await reply(p[1], sid, Reply("noted", context={"stage": 2}))
    await reply(p[2], sid, Handoff(p[1].agent_id, reason="yours"))
    await talk(p, sid, 1)
    await p[0].post_envelope(
        Envelope(
            session_id=sid,
            sender_id=p[0].agent_id,
            event_type=EV_CONTEXT_SET,
            event_data={"delete": ["stage"], "set": {"done": True}},
        )
    )


async def play_auction(p: list[HumanClient], sid: str) -> None:
    await talk(p, sid, 0, 2, 1)
    await p[0].post_envelope(select_winner(sid, p[0].agent_id, p[1].agent_id))
    await talk(p, sid, 1, 0)


async def play_nothing(p: list[HumanClient], sid: str) -> None:
    await trio.lowlevel.checkpoint()


PLAYS: dict[str, tuple[int, dict[str, object], Play]] = {
    "consulting": (2, {}, lambda p, sid: talk(p, sid, 0)),
    "conversation": (2, {}, lambda p, sid: talk(p, sid, 0, 1, 1, 0)),
    "discussion": (3, {}, lambda p, sid: talk(p, sid, 0, 1, 2, 0, 1)),
    "broadcast": (3, {}, lambda p, sid: talk(p, sid, 0, 0, 0)),
    "auction": (3, {}, play_auction),
    "notification": (2, {}, play_nothing),
    "workflow": (3, {"graph": None}, play_workflow),
}


@pytest.mark.parametrize("snapshot_every", [0, 2, 3])
@pytest.mark.parametrize("kind", sorted(PLAYS))
async def test_a_restart_refolds_the_same_state_and_activity(
    autojump_clock: MockClock, kind: str, snapshot_every: int
) -> None:
    store = MemoryStore()
    count, knobs, play = PLAYS[kind]
    async with open_hub_pair(store, snapshot_every=snapshot_every) as net:
        people = await net.people(*"abc"[:count])
        ids = [p.agent_id for p in people]
        if "graph" in knobs:
            knobs = {"graph": round_robin(ids).to_dict()}
        sid = (await people[0].open(type=kind, target=ids[1:], knobs=knobs)).session_id
        await play(people, sid)
        entry = net.hub.core.directory.get(sid)
        before = (entry.state, entry.activity)
        assert entry.activity is not None
        assert entry.activity.last_seq == entry.last_seq
    async with store:
        snapshot = await store.load_snapshot(sid)
        assert (snapshot is not None) == bool(snapshot_every)
    async with open_hub_pair(store, snapshot_every=snapshot_every) as net:
        entry = net.hub.core.directory.get(sid)
        assert (entry.state, entry.activity) == before
    async with store:
        # Without the saved summary (a crash between the snapshot and its write): rebuilt.
        await store.delete_kv(ACTIVITY_NS + sid)
    async with open_hub_pair(store, snapshot_every=snapshot_every) as net:
        entry = net.hub.core.directory.get(sid)
        assert (entry.state, entry.activity) == before
