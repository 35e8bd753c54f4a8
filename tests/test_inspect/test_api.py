"""The inspector's JSON and pages over a running hub, in process (httpx's ASGI transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from tests.harness import HubPair, open_hub_pair
from troupe.inspect import HubSource, inspector_app
from troupe.model import Resume, SessionMetadata, TaskState

from ._asgi import client


@attrs.define
class Inspected:
    h: HubPair
    source: HubSource

    def app(self, **options: Any) -> Any:
        return inspector_app(self.source, **options)


@pytest.fixture
async def ins() -> AsyncIterator[Inspected]:
    async with open_hub_pair() as h, trio.open_nursery() as nursery:
        source = HubSource(h.hub)
        await nursery.start(source.run)
        yield Inspected(h, source)
        nursery.cancel_scope.cancel()


async def get(ins: Inspected, path: str, status: int = 200) -> Any:
    async with client(ins.app()) as http:
        response = await http.get(path)
    assert response.status_code == status, response.text
    return response.json()


async def a_conversation(h: HubPair) -> SessionMetadata:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    await h.say(md, alice, "hello")
    await h.say(md, bob, "hi alice")
    return md


async def test_agents_show_kind_connection_capabilities_and_track_record(
    autojump_clock: trio.testing.MockClock, ins: Inspected
) -> None:
    h = ins.h
    alice = await h.agent("alice", resume=Resume(claimed_capabilities=["research"]))
    await h.agent("carol", connect=False, kind="human")
    await h.hub.record_observation(
        owner_id=alice.id, capability="research", outcome=TaskState.COMPLETED, latency_ms=40
    )
    agents = {a["name"]: a for a in (await get(ins, "/api/agents"))["agents"]}
    assert set(agents) == {"alice", "carol"}
    assert agents["alice"]["agent_id"] == alice.id
    assert (agents["alice"]["kind"], agents["alice"]["connected"]) == ("agent", True)
    assert (agents["carol"]["kind"], agents["carol"]["connected"]) == ("human", False)
    assert agents["alice"]["capabilities"] == ["research"]
    record = agents["alice"]["track_record"]["research"]
    assert (record["n"], record["completed"], record["p50_latency_ms"]) == (1, 1, 40)


async def test_sessions_list_newest_first_with_status_participants_and_last_seq(
    autojump_clock: trio.testing.MockClock, ins: Inspected
) -> None:
    h = ins.h
    first = await a_conversation(h)
    await trio.sleep(1)  # a later created_at
    alice, bob = h.agents["alice"], h.agents["bob"]
    second = await h.session("conversation", bob, alice)
    await h.hub.close_session(second.session_id, reason="done")
    sessions = (await get(ins, "/api/sessions"))["sessions"]
    assert [s["session_id"] for s in sessions] == [second.session_id, first.session_id]
    ended, live = sessions
    assert (live["status"], live["state"], live["last_seq"]) == ("live", "active", 5)
    assert (ended["status"], ended["state"], ended["close_reason"]) == ("ended", "closed", "done")
    assert [(p["name"], p["role"]) for p in live["participants"]] == [
        ("alice", "initiator"),
        ("bob", "respondent"),
    ]
    assert live["creator"] == {"agent_id": alice.id, "name": "alice"}


async def test_session_filters(autojump_clock: trio.testing.MockClock, ins: Inspected) -> None:
    h = ins.h
    kept = await a_conversation(h)
    carol = await h.agent("carol")
    other = await h.session("conversation", carol, h.agents["bob"])
    await h.hub.close_session(other.session_id, reason="done")

    async def ids(query: str) -> list[str]:
        return [s["session_id"] for s in (await get(ins, "/api/sessions?" + query))["sessions"]]

    assert await ids("status=live") == [kept.session_id]
    assert await ids("status=open") == [kept.session_id]
    assert await ids("status=ended") == [other.session_id]
    assert await ids("status=passivated") == []
    assert await ids("participant=carol") == [other.session_id]
    assert await ids(f"participant={h.agents['alice'].id}") == [kept.session_id]
    assert await ids("type=broadcast") == []
    # From the random tail: ids begin with their millisecond, which both sessions may share.
    assert await ids(f"q={kept.session_id[-9:-3]}") == [kept.session_id]
    assert len(await ids("limit=1")) == 1


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("status=sleeping", "'status'"),
        ("limit=0", "'limit'"),
        ("limit=many", "'limit'"),
        ("limit=100000", "'limit'"),
    ],
)
async def test_a_bad_query_parameter_is_a_400_naming_it(
    autojump_clock: trio.testing.MockClock, ins: Inspected, query: str, named: str
) -> None:
    answer = await get(ins, "/api/sessions?" + query, status=400)
    assert named in answer["error"]


async def test_a_session_s_wal_in_pages_with_every_field(
    autojump_clock: trio.testing.MockClock, ins: Inspected
) -> None:
    md = await a_conversation(ins.h)
    sid = md.session_id
    page = await get(ins, f"/api/sessions/{sid}/wal")
    assert page["session"]["session_id"] == sid
    assert not page["more"]
    envelopes = page["envelopes"]
    assert [e["seq"] for e in envelopes] == [1, 2, 3, 4, 5]
    said = envelopes[3]
    assert (said["event_type"], said["text"], said["event_data"]) == (
        "troupe.text",
        "hello",
        {"text": "hello"},
    )
    assert said["sender_id"] == ins.h.agents["alice"].id
    assert said["envelope_id"]
    assert said["created_at"]
    paged = await get(ins, f"/api/sessions/{sid}/wal?since=2&limit=2")
    assert ([e["seq"] for e in paged["envelopes"]], paged["more"]) == ([3, 4], True)
    last = await get(ins, f"/api/sessions/{sid}/wal?since=4&limit=2")
    assert ([e["seq"] for e in last["envelopes"]], last["more"]) == ([5], False)
    assert (await get(ins, f"/api/sessions/{sid}"))["last_seq"] == 5


async def test_an_unknown_session_is_a_404_naming_it(
    autojump_clock: trio.testing.MockClock, ins: Inspected
) -> None:
    for path in ("/api/sessions/nope", "/api/sessions/nope/wal"):
        assert "'nope'" in (await get(ins, path, status=404))["error"]
    async with client(ins.app()) as http:
        assert (await http.get("/sessions/nope")).status_code == 404


async def test_supervision_tree_with_restarts_and_the_last_crash(
    autojump_clock: trio.testing.MockClock, ins: Inspected
) -> None:
    h = ins.h
    md = await a_conversation(h)
    sid = md.session_id
    h.faults.crash_at("after_append", session_id=sid)
    await h.say(md, h.agents["alice"], "crashes after its append")
    await h.settle()
    tree = await get(ins, "/api/supervision")
    root = tree["root"]
    assert (root["name"], root["state"]) == ("hub", "running")
    children = {c["id"]: c for c in root["children"]}
    assert {"hub", "audit", "sessions", "endpoints"} <= set(children)
    sessions = children["sessions"]["supervisor"]
    assert sessions["name"] == "sessions"
    [session] = [c for c in sessions["children"] if c["id"] == sid]
    assert (session["running"], session["restarts"]) == (True, 1)
    crash = session["last_crash"]
    assert crash["exc_type"] == "InjectedCrash"
    assert crash["restarting"] is True
    endpoints = children["endpoints"]["supervisor"]
    assert {c["id"] for c in endpoints["children"]} == {"ep-alice", "ep-bob"}
    assert children["hub"]["last_crash"] is None


async def test_statistics_over_time_as_rates_and_levels(
    autojump_clock: trio.testing.MockClock, ins: Inspected
) -> None:
    h = ins.h
    # The first sample (t=0) came before the conversation's 5 envelopes, the next at t=1.
    md = await a_conversation(h)
    await trio.sleep(1.5)
    for i in range(4):
        await h.say(md, h.agents["alice"], f"#{i}")
    await trio.sleep(1)  # sample at 2: 4 more in one second
    stats = await get(ins, "/api/statistics")
    assert stats["live"] is True
    assert stats["every_s"] == 1.0
    assert stats["times"] == [-2.0, -1.0, 0.0]
    series = stats["series"]
    assert series["envelopes_accepted_per_s"] == [0.0, 5.0, 4.0]
    assert series["envelopes_rejected_per_s"] == [0.0, 0.0, 0.0]
    assert series["live_sessions"] == [0.0, 1.0, 1.0]
    assert set(series) >= {"dead_letters", "hub_mailbox_high_water", "connections"}
    assert stats["now"]["envelopes_accepted"] == 9


async def test_the_sample_ring_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async with open_hub_pair() as h, trio.open_nursery() as nursery:
        source = HubSource(h.hub, sample_every=0.5, samples_kept=3)
        await nursery.start(source.run)
        await trio.sleep(10)
        stats = await source.statistics()
        assert stats["times"] == [-1.0, -0.5, 0.0]
        nursery.cancel_scope.cancel()
    with pytest.raises(ValueError, match="sample_every"):
        HubSource(h.hub, sample_every=0)
    with pytest.raises(ValueError, match="samples_kept"):
        HubSource(h.hub, samples_kept=1)


async def test_audit_tail_newest_first_and_caught_up_incrementally(
    autojump_clock: trio.testing.MockClock, ins: Inspected
) -> None:
    h = ins.h
    md = await a_conversation(h)
    records = (await get(ins, "/api/audit?limit=2"))["records"]
    assert [r["kind"] for r in records] == ["session_opened", "invite_acked"]
    await h.hub.close_session(md.session_id, reason="done")
    await h.settle()
    records = (await get(ins, "/api/audit"))["records"]
    assert records[0]["kind"] == "session_closed"
    assert records[0]["reason"] == "done"
    assert [r["kind"] for r in records].count("agent_registered") == 2
    assert (await get(ins, "/api/audit?limit=0", status=400))["error"]


async def test_every_page_is_html_naming_its_script(
    autojump_clock: trio.testing.MockClock, ins: Inspected
) -> None:
    md = await a_conversation(ins.h)
    async with client(ins.app()) as http:
        for path in ("/", "/agents", "/supervision", "/statistics", "/audit"):
            page = await http.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert '<script src="/static/inspector.js"' in page.text
            assert "default-src 'self'" in page.headers["content-security-policy"]
        page = await http.get(f"/sessions/{md.session_id}")
        assert f'data-session="{md.session_id}"' in page.text
        script = await http.get("/static/inspector.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert "EventSource" in script.text
        assert (await http.get("/static/inspector.css")).status_code == 200
        assert (await http.get("/static/../_app.py")).status_code == 404
        assert (await http.get("/static/nothing.js")).status_code == 404


async def test_it_writes_nothing(autojump_clock: trio.testing.MockClock, ins: Inspected) -> None:
    h = ins.h
    md = await a_conversation(h)
    await h.settle()
    store = h.store
    before = (
        await store.read_audit(),
        await store.read(md.session_id),
        await store.load_sessions(),
        await store.load_agents(),
        attrs.evolve(h.hub.statistics(), hub_mailbox_high_water=0),
    )
    paths = [
        "/",
        "/agents",
        f"/sessions/{md.session_id}",
        "/api/agents",
        "/api/sessions",
        f"/api/sessions/{md.session_id}",
        f"/api/sessions/{md.session_id}/wal",
        "/api/supervision",
        "/api/statistics",
        "/api/audit",
    ]
    async with client(ins.app()) as http:
        for path in paths:
            assert (await http.get(path)).status_code == 200
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                assert (await http.request(method, path)).status_code == 405, (method, path)
    await h.settle()
    after = (
        await store.read_audit(),
        await store.read(md.session_id),
        await store.load_sessions(),
        await store.load_agents(),
        attrs.evolve(h.hub.statistics(), hub_mailbox_high_water=0),
    )
    assert after == before


async def test_a_passivated_session_is_listed_as_such_and_its_wal_still_reads(
    autojump_clock: trio.testing.MockClock, ins: Inspected
) -> None:
    from troupe.hub._passivation import passivate

    md = await a_conversation(ins.h)
    entry = ins.h.hub.core.directory.get(md.session_id)
    assert await passivate(ins.h.hub, entry)
    [listed] = (await get(ins, "/api/sessions?status=passivated"))["sessions"]
    assert (listed["session_id"], listed["status"], listed["last_seq"]) == (
        md.session_id,
        "passivated",
        5,
    )
    assert (await get(ins, "/api/sessions?status=live"))["sessions"] == []
    wal = await get(ins, f"/api/sessions/{md.session_id}/wal")
    assert len(wal["envelopes"]) == 5
    assert ins.h.hub.core.directory.get(md.session_id).ref is None  # reading woke nothing
