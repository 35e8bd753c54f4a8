"""The live feed (``/api/events``): what a viewer reads, its bound, and that it never slows
the hub."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from starlette.applications import Starlette

from tests.harness import HubPair, open_hub_pair
from troupe.inspect import HubSource, inspector_app
from troupe.inspect._feed import KEEPALIVE_S
from troupe.store import MemoryStore

from ._asgi import client, open_feed


@pytest.fixture
async def h() -> AsyncIterator[HubPair]:
    async with open_hub_pair() as harness:
        yield harness


def app_of(h: HubPair, *, feed_capacity: int = 256, max_viewers: int = 32) -> Starlette:
    return inspector_app(HubSource(h.hub), feed_capacity=feed_capacity, max_viewers=max_viewers)


async def test_a_viewer_sees_sessions_appear_and_envelopes_accepted(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    async with open_feed(app_of(h)) as feed:
        assert await feed.start() == 200
        assert feed.headers[b"content-type"].startswith(b"text/event-stream")
        assert await feed.next() == ("hello", {"session": None, "capacity": 256})
        md = await h.session("conversation", alice, bob)
        created = await feed.until("session_created")
        assert created["session_id"] == md.session_id
        assert created["participants"] == [alice.id, bob.id]
        await h.say(md, alice, "live!")
        while True:
            accepted = await feed.until("envelope_accepted")
            if accepted["envelope"]["event_type"] == "troupe.text":
                break
        assert accepted["session_id"] == md.session_id
        assert accepted["seq"] == 4
        assert accepted["envelope"]["text"] == "live!"
        assert accepted["envelope"]["sender_id"] == alice.id


async def test_a_session_s_feed_carries_only_that_session(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    mine = await h.session("conversation", alice, bob)
    other = await h.session("conversation", bob, alice)
    async with open_feed(app_of(h), f"session={mine.session_id}") as feed:
        await feed.start()
        assert (await feed.next())[1]["session"] == mine.session_id
        await h.say(other, bob, "elsewhere")
        await h.say(mine, alice, "here")
        await h.hub.close_session(mine.session_id, reason="done")
        seen = [await feed.next() for _ in range(3)]
    assert [(name, data.get("seq")) for name, data in seen] == [
        ("envelope_accepted", 4),
        ("envelope_accepted", 5),
        ("session_closed", None),
    ]
    assert {data["session_id"] for _, data in seen} == {mine.session_id}
    assert seen[0][1]["envelope"]["text"] == "here"


async def test_a_stalled_viewer_misses_events_and_the_hub_does_not_wait(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    async with open_feed(app_of(h, feed_capacity=3), f"session={md.session_id}") as feed:
        await feed.start()
        await feed.next()  # hello; the viewer reads nothing more while 20 are posted
        with trio.fail_after(1):  # virtual: nothing here waits for the viewer
            for i in range(20):
                await h.say(md, alice, f"#{i}")
        # The feed holds the one it was sending, then 3, then the gap.
        seen = [await feed.next() for _ in range(5)]
    texts = [data["envelope"]["text"] for name, data in seen if name == "envelope_accepted"]
    assert texts == ["#0", "#1", "#2", "#3"]
    assert seen[-1] == ("missed", {"kind": "missed", "count": 16})
    assert h.hub.statistics().envelopes_accepted == 3 + 20


async def test_viewers_are_bounded(autojump_clock: trio.testing.MockClock, h: HubPair) -> None:
    app = app_of(h, max_viewers=1)
    async with open_feed(app) as first:
        assert await first.start() == 200
        async with open_feed(app) as second:
            assert await second.start() == 503
            await second._more()
            assert b"too many viewers (at most 1)" in second.body
    async with open_feed(app) as again:  # the first left: its place is free
        assert await again.start() == 200
    assert len(h.hub.core.events.subscribers) == 0


async def test_a_quiet_feed_sends_keepalives(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    async with open_feed(app_of(h)) as feed:
        await feed.start()
        await feed.next()
        with trio.move_on_after(KEEPALIVE_S * 2.5):
            await feed.next()  # reads keep-alives only: nothing happens
        assert feed.keepalives == 2
        alice = await h.agent("alice", connect=False)
        assert (await feed.until("agent_registered"))["agent_id"] == alice.id


async def test_the_feed_ends_when_the_hub_closes(autojump_clock: trio.testing.MockClock) -> None:
    ended = trio.Event()

    async def watch(app: Starlette, task_status: trio.TaskStatus[None]) -> None:
        async with open_feed(app) as feed:
            await feed.start()
            await feed.next()
            task_status.started()
            await feed.until("end")
            assert feed.ended
            ended.set()

    async with trio.open_nursery() as nursery:
        async with open_hub_pair() as h:
            await nursery.start(watch, app_of(h))
        with trio.fail_after(1):
            await ended.wait()


async def test_a_store_at_rest_has_no_feed() -> None:
    from troupe.inspect import StoreSource

    app = inspector_app(StoreSource(MemoryStore()))
    async with client(app) as http:
        answer = await http.get("/api/events")
    assert answer.status_code == 404
    assert "store at rest" in answer.json()["error"]
