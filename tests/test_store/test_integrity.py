"""A store has one hub, and a damaged store is never mistaken for a new or a sound one.

Issue 13 items 9 and 10: two hubs on one file both wrote (an agent name twice, which
``troupe wal verify`` called sound); a store truncated to 0 bytes started as a new, empty
store; a bit flip that still parsed as JSON was replayed as if nothing happened.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

import troupe
from troupe import Passport, SQLiteStore, open_hub
from troupe._wal_cli import main as wal_main
from troupe.model import dumps
from troupe.store import AgentRecord, MemoryStore, Store
from troupe.store import _schema as schema

from ..harness import open_hub_pair
from ..test_transport.test_serve import troupe_serve
from .factories import env, envs, session

REPO = Path(__file__).resolve().parents[2]


def wal_cli(capsys: pytest.CaptureFixture[str], db: Path, action: str) -> tuple[int, str]:
    """``troupe wal ACTION --db db``: the exit code and everything it printed."""
    code = wal_main(str(db), action, None, 20)
    out, err = capsys.readouterr()
    return code, out + err


async def make_store(path: Path) -> None:
    async with SQLiteStore(path) as store:
        await store.save_session(session("s1"))
        await store.append("s1", envs("s1", 1, 3))


def make_v1_store(path: Path) -> None:
    """A store as troupe wrote it before schema 2, holding the name ``dave`` twice (as two
    hubs on one file made it): no checksums, no name column."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in schema.MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    for agent_id, name in (("a1", "dave"), ("a2", "dave"), ("a3", "erin")):
        conn.execute(
            "INSERT INTO agents VALUES (?, ?, ?, ?, NULL)",
            (
                agent_id,
                dumps(Passport(name=name, agent_id=agent_id)).decode(),
                dumps(troupe.Resume()).decode(),
                dumps(troupe.Rule()).decode(),
            ),
        )
    conn.execute("INSERT INTO sessions VALUES (?, ?)", ("s1", dumps(session("s1")).decode()))
    for e in envs("s1", 1, 3):
        conn.execute(
            "INSERT INTO wal VALUES (?, ?, ?, ?, ?)",
            ("s1", e.seq, e.envelope_id, e.idempotency_key, dumps(e).decode()),
        )
    conn.close()


def record(agent_id: str, name: str) -> AgentRecord:
    return AgentRecord(
        passport=Passport(name=name, agent_id=agent_id), resume=troupe.Resume(), rule=troupe.Rule()
    )


# -- item 9: one hub per store ---------------------------------------------------------------


async def test_a_second_writer_is_refused_at_once_naming_file_and_holder(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    async with SQLiteStore(path) as first:
        with pytest.raises(troupe.StoreLocked) as info:
            async with SQLiteStore(path):
                pass
        message = str(info.value)
        assert str(path) in message
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
        # The refused opener changed nothing, and the holder goes on writing.
        await first.append("s1", envs("s1", 1, 2))
        # A reader takes no lock: it works while the writer runs.
        async with SQLiteStore(path, read_only=True) as reader:
            assert [e.seq for e in await reader.read("s1")] == [1, 2]
            with pytest.raises(troupe.StoreError, match="read-only"):
                await reader.append("s1", envs("s1", 3, 3))
    async with SQLiteStore(path) as again:  # released on close
        assert await again.last_seq("s1") == 2


async def test_two_open_hubs_on_one_file_the_second_fails(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    async with open_hub(path) as hub:
        await hub.register(Passport(name="dave"))
        with pytest.raises(troupe.StoreLocked, match="a store has one hub"):
            async with open_hub(path):
                pass
    async with open_hub(path) as hub:
        assert [p.name for p in await hub.list_agents()] == ["dave"]


@pytest.mark.slow
async def test_two_troupe_serve_processes_the_second_exits_naming_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "hub.db"
    with trio.fail_after(30):
        async with troupe_serve(db, tmp_path / "first.log") as first:
            second = await trio.run_process(
                [sys.executable, "-m", "troupe", "serve", "--db", str(db), "--port", "0"],
                cwd=REPO,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            err = second.stderr.decode()
            assert second.returncode == 1, err
            assert f"'{db}' is already open for writing by pid {first.process.pid}" in err
            assert "Traceback" not in err
            assert b"listening" not in second.stdout
            # Read-only tools keep working while the hub runs.
            code, out = await trio.to_thread.run_sync(lambda: wal_cli(capsys, db, "inspect"))
            assert (code, out.splitlines()[0]) == (0, "0 agents")
            # The OS releases the lock when the holder dies, however it dies.
            first.process.send_signal(signal.SIGKILL)
            assert await first.process.wait() == -signal.SIGKILL
        async with open_hub(db) as hub:
            await hub.register(Passport(name="dave"))


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
async def test_an_agent_name_is_unique_in_the_store(tmp_path: Path, engine: str) -> None:
    store: Store = MemoryStore() if engine == "memory" else SQLiteStore(tmp_path / "hub.db")
    async with store:
        await store.save_agent(record("a1", "dave"))
        await store.save_agent(record("a1", "dave"))  # the same agent again: an update
        with pytest.raises(troupe.StoreError, match="'dave' is already held by agent 'a1'"):
            await store.save_agent(record("a2", "dave"))
        await store.delete_agent("a1")
        await store.save_agent(record("a2", "dave"))
        assert [r.passport.agent_id for r in await store.load_agents()] == ["a2"]


async def test_a_store_from_before_opens_keeps_every_row_and_verify_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hub.db"
    make_v1_store(path)
    code, out = await trio.to_thread.run_sync(lambda: wal_cli(capsys, path, "verify"))
    assert code == 1, out
    assert "agent name 'dave' is held by more than one agent (a1, a2)" in out
    assert "s1: 3 envelopes from before checksums (schema 1), not checked" in out
    assert "damaged" not in out
    async with SQLiteStore(path) as store:
        agents = [(r.passport.agent_id, r.passport.name) for r in await store.load_agents()]
        assert agents == [("a1", "dave"), ("a2", "dave"), ("a3", "erin")]  # nothing lost
        assert await store.read("s1") == envs("s1", 1, 3)
        await store.append("s1", envs("s1", 4, 4))  # new rows carry a checksum
        with pytest.raises(troupe.StoreError, match="'erin' is already held by agent 'a3'"):
            await store.save_agent(record("a4", "erin"))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
    assert conn.execute("SELECT seq FROM wal WHERE crc IS NOT NULL").fetchall() == [(4,)]
    conn.close()


async def test_a_store_from_before_without_duplicates_verifies_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hub.db"
    make_v1_store(path)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM agents WHERE agent_id = 'a2'")
    conn.commit()
    conn.close()
    code, out = await trio.to_thread.run_sync(lambda: wal_cli(capsys, path, "verify"))
    assert code == 0, out
    assert out.startswith("ok: every session")
    assert "s1: 3 envelopes from before checksums (schema 1), not checked" in out


# -- item 10: damage is never mistaken for a new or a sound store ------------------------------


async def test_a_store_truncated_to_nothing_is_refused_not_started_anew(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hub.db"
    await make_store(path)
    path.write_bytes(b"")
    for opener in (lambda: SQLiteStore(path), lambda: open_hub(path)):
        with pytest.raises(troupe.IncompatibleStore, match="an empty file") as info:
            async with opener():
                pass
        assert str(path) in str(info.value)
    assert path.read_bytes() == b""  # left as it was
    code, out = await trio.to_thread.run_sync(lambda: wal_cli(capsys, path, "verify"))
    assert code == 2
    assert out.count("\n") == 1
    assert out.startswith("troupe wal: ")
    assert "an empty file" in out


async def test_a_missing_store_is_created_whole(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    await make_store(path)
    assert sorted(os.listdir(tmp_path)) == ["hub.db", "hub.db.lock"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
    conn.close()


def flip(path: Path, seq: int, old: str, new: str) -> None:
    """Damage one stored envelope so that it still parses as JSON."""
    conn = sqlite3.connect(path)
    sql = "UPDATE wal SET envelope = replace(envelope, ?, ?) WHERE seq = ?"
    assert conn.execute(sql, (old, new, seq)).rowcount == 1
    conn.commit()
    conn.close()


async def test_a_bit_flip_is_caught_on_read_and_by_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hub.db"
    await make_store(path)
    async with SQLiteStore(path) as store:
        await store.append("s1", [env("s1", 4, idempotency_key="k4")])
    flip(path, 2, "message 2", "massage 2")
    flip(path, 4, "message 4", "message 5")
    async with SQLiteStore(path) as store:
        with pytest.raises(troupe.StoreError, match=r"session 's1': .* at seq 2 is damaged"):
            await store.read("s1")
        assert await store.read("s1", since=2, until=3) == [env("s1", 3)]
        with pytest.raises(troupe.StoreError, match="at seq 4 is damaged"):
            await store.find_idempotent("s1", "k4")
    code, out = await trio.to_thread.run_sync(lambda: wal_cli(capsys, path, "verify"))
    assert code == 1
    assert "s1: the envelope at seq 2 is damaged (checksum)" in out
    assert "s1: the envelope at seq 4 is damaged (checksum)" in out


async def test_a_damaged_row_stops_its_session_not_the_hub(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "hub.db"

    def hub_store() -> SQLiteStore:
        return SQLiteStore(path, synchronous="NORMAL", threaded=False)

    async with open_hub_pair(hub_store(), passivate_after=None) as h:
        a, b = await h.agent("a"), await h.agent("b")
        sids = [(await h.session("conversation", a, b)).session_id for _ in range(2)]
        for sid in sids:
            for body in ("one", "two"):
                await h.say(sid, a, body)
        last = [(await h.hub.read_wal(sid))[-1].seq for sid in sids]
    damaged_sid = sids[0]
    conn = sqlite3.connect(path)
    sql = (
        "UPDATE wal SET envelope = replace(envelope, '\"one\"', '\"eno\"') "
        "WHERE session_id = ? AND envelope LIKE '%\"one\"%'"
    )
    assert conn.execute(sql, (damaged_sid,)).rowcount == 1
    conn.commit()
    conn.close()
    async with open_hub_pair(hub_store(), passivate_after=None) as h:
        a, b = await h.agent("a"), await h.agent("b")
        for _ in range(3):  # each use tries again and fails the same way: no crash loop
            with pytest.raises(troupe.StoreError, match=f"session '{damaged_sid}': .* seq"):
                await h.say(damaged_sid, a, "three")
        # The rest of the hub goes on.
        await h.say(sids[1], a, "three")
        assert (await h.hub.read_wal(sids[1]))[-1].seq == last[1] + 1
        assert h.hub.statistics().sessions_crashed == 0
    async with SQLiteStore(path, read_only=True) as store:
        assert await store.last_seq(damaged_sid) == last[0]  # nothing folded or appended
