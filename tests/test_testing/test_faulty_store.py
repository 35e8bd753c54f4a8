"""FaultyStore: each fault does what it says, to the calls it names, and is counted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio

from troupe import Envelope, MemoryStore, SessionMetadata, SessionState, StoreError
from troupe.model import Participant, ParticipantRole
from troupe.store import PostgresStore
from troupe.testing import FaultyStore, make_store

from .._postgres import new_schema


def envelope(sid: str, seq: int) -> Envelope:
    return Envelope(
        session_id=sid,
        sender_id="a",
        event_type="troupe.text",
        event_data={"text": f"#{seq}"},
        envelope_id=f"{sid}-{seq}",
        seq=seq,
    )


def metadata(sid: str) -> SessionMetadata:
    return SessionMetadata(
        session_id=sid,
        manifest_type="conversation",
        manifest_version=1,
        creator_id="a",
        participants=(Participant(agent_id="a", role=ParticipantRole.INITIATOR, order=0),),
        state=SessionState.ACTIVE,
        created_at="2026-01-01T00:00:00Z",
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def faulty(request: pytest.FixtureRequest, tmp_path: Path) -> FaultyStore:
    if request.param == "postgres":
        schema = new_schema(request.getfixturevalue("pg_schemas"))
        dsn = request.getfixturevalue("pg_dsn")
        return FaultyStore(PostgresStore(dsn, schema=schema, threaded=False))
    return FaultyStore(make_store(request.param, tmp_path))


async def test_fail_next_append_fails_n_appends_and_writes_nothing(faulty: FaultyStore) -> None:
    async with faulty:
        faulty.fail_next("append", n=2)
        for _ in range(2):
            with pytest.raises(StoreError, match=r"injected fault: append for session 's'"):
                await faulty.append("s", [envelope("s", 1)])
        assert await faulty.read("s") == []
        await faulty.append("s", [envelope("s", 1)])
        assert [e.seq for e in await faulty.read("s")] == [1]
        stats = faulty.statistics()
        assert stats.failed == {"append": 2}
        assert stats.calls["append"] == 3
        assert stats.injected == 2
        assert faulty.armed == 0


async def test_a_session_filter_spares_the_other_sessions(faulty: FaultyStore) -> None:
    async with faulty:
        faulty.fail_next("append", session_id="b")
        await faulty.append("a", [envelope("a", 1)])
        with pytest.raises(StoreError):
            await faulty.append("b", [envelope("b", 1)])
        await faulty.append("b", [envelope("b", 1)])
        assert await faulty.last_seq("a") == await faulty.last_seq("b") == 1


async def test_commit_fails_any_write_and_reads_any_read(faulty: FaultyStore) -> None:
    async with faulty:
        faulty.fail_next("commit")
        with pytest.raises(StoreError, match="save_session"):
            await faulty.save_session(metadata("s"))
        assert await faulty.get_session("s") is None
        await faulty.save_session(metadata("s"))
        faulty.fail_next("reads", n=2)
        with pytest.raises(StoreError, match="get_session"):
            await faulty.get_session("s")
        with pytest.raises(StoreError, match="load_sessions"):
            await faulty.load_sessions()
        assert await faulty.get_session("s") == metadata("s")


async def test_snapshot_fails_only_snapshot_writes(faulty: FaultyStore) -> None:
    async with faulty:
        faulty.fail_next("snapshot")
        await faulty.append("s", [envelope("s", 1)])
        with pytest.raises(StoreError, match="save_snapshot"):
            await faulty.save_snapshot("s", 1, {"n": 1})
        assert await faulty.load_snapshot("s") is None
        await faulty.save_snapshot("s", 1, {"n": 1})
        snapshot = await faulty.load_snapshot("s")
        assert snapshot is not None
        assert snapshot.state == {"n": 1}


async def test_n_none_fails_until_healed(faulty: FaultyStore) -> None:
    async with faulty:
        faulty.fail_next("read", n=None)
        for _ in range(5):
            with pytest.raises(StoreError):
                await faulty.read("s")
        assert faulty.armed == 1
        faulty.heal("read")
        assert await faulty.read("s") == []


async def test_heal_without_a_target_disarms_everything(
    faulty: FaultyStore, autojump_clock: object
) -> None:
    async with faulty:
        faulty.fail_next("append", n=None)
        faulty.delay("reads", 10.0)
        faulty.heal()
        start = trio.current_time()
        await faulty.append("s", [envelope("s", 1)])
        await faulty.read("s")
        assert trio.current_time() == start


async def test_lost_reply_writes_then_fails(faulty: FaultyStore) -> None:
    async with faulty:
        faulty.fail_next("append", lost_reply=True)
        with pytest.raises(StoreError):
            await faulty.append("s", [envelope("s", 1)])
        assert [e.seq for e in await faulty.read("s")] == [1]


async def test_a_given_error_is_raised_as_it_is_or_made_by_a_factory(faulty: FaultyStore) -> None:
    async with faulty:
        faulty.fail_next("save_cursors", error=OSError(28, "No space left on device"))
        with pytest.raises(OSError, match="No space left"):
            await faulty.save_cursors([("a", "s", 1)])
        faulty.fail_next("save_cursors", n=2, error=lambda: StoreError("disk full"))
        for _ in range(2):
            with pytest.raises(StoreError, match="disk full"):
                await faulty.save_cursors([("a", "s", 1)])
        await faulty.save_cursors([("a", "s", 1)])
        assert await faulty.load_cursors("a") == {"s": 1}


async def test_open_can_fail(faulty: FaultyStore) -> None:
    faulty.fail_next("open")
    with pytest.raises(StoreError, match="open"):
        async with faulty:
            pytest.fail("entered a store whose opening failed")
    async with faulty:
        assert await faulty.load_agents() == []


async def test_delay_sleeps_on_trios_clock(faulty: FaultyStore, autojump_clock: object) -> None:
    async with faulty:
        faulty.delay("append", 2.5, n=1)
        start = trio.current_time()
        await faulty.append("s", [envelope("s", 1)])
        assert trio.current_time() - start == pytest.approx(2.5)
        await faulty.append("s", [envelope("s", 2)])
        assert trio.current_time() - start == pytest.approx(2.5)
        assert faulty.statistics().delayed == {"append": 1}


async def test_a_delayed_call_can_be_cancelled_before_it_runs(
    faulty: FaultyStore, autojump_clock: object
) -> None:
    async with faulty:
        faulty.delay("append", 10.0)
        with trio.move_on_after(1.0):
            await faulty.append("s", [envelope("s", 1)])
        assert await faulty.read("s") == []


def test_bad_arguments_are_refused() -> None:
    faulty = FaultyStore(MemoryStore())
    with pytest.raises(ValueError, match="unknown FaultyStore target 'apend'"):
        faulty.fail_next("apend")
    with pytest.raises(ValueError, match="at least 1"):
        faulty.fail_next("append", n=0)
    with pytest.raises(ValueError, match="writes only"):
        faulty.fail_next("reads", lost_reply=True)
    with pytest.raises(ValueError, match=">= 0"):
        faulty.delay("append", -1.0)
    with pytest.raises(ValueError, match=">= 0"):
        faulty.delay("append", math.nan)
    assert repr(faulty).startswith("FaultyStore(MemoryStore(")
