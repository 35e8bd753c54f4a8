"""The inspector over a store at rest (``troupe inspect``): the same JSON, read-only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio
import trio.testing

from tests.harness import open_hub_pair
from troupe.inspect import StoreSource, inspector_app
from troupe.store import SQLiteStore

from ._asgi import client


async def a_hub_ran_on(path: Path) -> dict[str, str]:
    """Leave a store behind: alice and bob talked (one crash), bob and alice closed."""
    async with open_hub_pair(SQLiteStore(path, synchronous="NORMAL", threaded=False)) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        await h.agent("carol", connect=False)
        talked = await h.session("conversation", alice, bob)
        h.faults.crash_at("after_append", session_id=talked.session_id)
        await h.say(talked, alice, "hello")
        await h.say(talked, bob, "hi")
        closed = await h.session("conversation", bob, alice)
        await h.hub.close_session(closed.session_id, reason="done")
        await h.settle()
    return {"talked": talked.session_id, "closed": closed.session_id}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_store_at_rest_shows_the_same_data_and_is_left_as_it_was(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "hub.db"
    ids = await a_hub_ran_on(path)
    before = digest(path)
    async with SQLiteStore(path, read_only=True, threaded=False) as store:
        app = inspector_app(StoreSource(store))
        async with client(app) as http:
            agents = (await http.get("/api/agents")).json()["agents"]
            assert {a["name"]: a["connected"] for a in agents} == {
                "alice": None,
                "bob": None,
                "carol": None,
            }
            sessions = {
                s["session_id"]: s for s in (await http.get("/api/sessions")).json()["sessions"]
            }
            talked, closed = sessions[ids["talked"]], sessions[ids["closed"]]
            assert (talked["status"], talked["last_seq"]) == ("open", 5)
            assert [p["name"] for p in talked["participants"]] == ["alice", "bob"]
            assert (closed["status"], closed["close_reason"]) == ("ended", "done")
            ended = (await http.get("/api/sessions?status=ended")).json()["sessions"]
            assert [s["session_id"] for s in ended] == [ids["closed"]]

            wal = (await http.get(f"/api/sessions/{ids['talked']}/wal")).json()
            assert [e["text"] for e in wal["envelopes"] if e["text"]] == ["hello", "hi"]

            supervision = (await http.get("/api/supervision")).json()
            assert supervision["live"] is False
            assert supervision["root"] is None
            crash = supervision["crashes"][ids["talked"]]
            assert crash["exc_type"] == "InjectedCrash"

            stats = (await http.get("/api/statistics")).json()
            assert stats["now"] == {"agents": 3, "sessions": 2, "open_sessions": 1}
            assert (stats["live"], stats["series"]) == (False, {})

            audit = (await http.get("/api/audit?limit=1")).json()["records"]
            assert [r["kind"] for r in audit] == ["session_closed"]

            page = await http.get("/")
            assert 'data-live="0"' in page.text
            assert (await http.get(f"/sessions/{ids['talked']}")).status_code == 200
    assert digest(path) == before


async def test_a_store_a_hub_is_running_on_shows_its_progress_on_each_read(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "hub.db"
    async with open_hub_pair(SQLiteStore(path, synchronous="NORMAL", threaded=False)) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        async with SQLiteStore(path, read_only=True, threaded=False) as store:
            async with client(inspector_app(StoreSource(store))) as http:
                url = f"/api/sessions/{md.session_id}"
                assert (await http.get(url)).json()["last_seq"] == 3
                await h.say(md, alice, "later")
                assert (await http.get(url)).json()["last_seq"] == 4
                wal = (await http.get(url + "/wal?since=3")).json()["envelopes"]
                assert [e["text"] for e in wal] == ["later"]
