"""The inspector over a store at rest (``troupe inspect``): the same JSON, read-only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio
import trio.testing

from tests.harness import open_hub_pair
from troupe.inspect import SessionFilter, StoreSource, inspector_app
from troupe.inspect._sources import LIST_BATCH, _newest_kept
from troupe.model import Participant, ParticipantRole, SessionMetadata, SessionState
from troupe.store import MemoryStore, SQLiteStore

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


def a_session(number: int, state: SessionState) -> SessionMetadata:
    return SessionMetadata(
        session_id=f"s-{number:05d}",
        manifest_type="conversation",
        manifest_version=1,
        creator_id="a-1",
        participants=(Participant(agent_id="a-1", role=ParticipantRole.INITIATOR, order=0),),
        state=state,
        created_at=f"2030-01-01T00:00:00.{number:06d}+00:00",
    )


async def test_a_long_list_gives_the_newest_and_lets_others_run_meanwhile() -> None:
    count = 6 * LIST_BATCH + 7
    sessions = [
        a_session(n, SessionState.CLOSED if n % 2 else SessionState.ACTIVE) for n in range(count)
    ]
    async with MemoryStore() as store:
        for md in sessions:
            await store.save_session(md)
        listed = await StoreSource(store).sessions(SessionFilter(status="ended", limit=3))
    newest_ended = [f"s-{n:05d}" for n in range(count - 1, -1, -1) if n % 2][:3]
    assert [s["session_id"] for s in listed] == newest_ended

    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            await trio.lowlevel.checkpoint()
            turns += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        kept = await _newest_kept(sessions, lambda md: (md, None), SessionFilter(), str)
        nursery.cancel_scope.cancel()
    assert [md.session_id for md in kept] == [
        f"s-{n:05d}" for n in range(count - 1, count - 201, -1)
    ]
    # The other task ran between the batches (about once per LIST_BATCH looked at; trio's
    # scheduler orders the tasks of a batch either way: 5 or 6 here); without the
    # checkpoints it would not have run at all.
    assert turns >= count // LIST_BATCH // 2
