"""What only the SQLite engine has: its file, its schema, crash safety, group commit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
import trio.testing

import troupe
from troupe.model import TaskState, dumps
from troupe.store import Changes, SQLiteStore
from troupe.store import _schema as schema
from troupe.store._writer import SQLiteBatches

from .crash_writer import check_nothing_returned_was_lost, kill_mid_write
from .factories import env, envs, task


def make_foreign_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.close()


def add_migration(monkeypatch: pytest.MonkeyPatch, *step: str) -> None:
    """Pretend this troupe has one more schema version, reached by ``step``."""
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, step))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)


async def make_store(path: Path) -> None:
    async with SQLiteStore(path) as store:
        await store.append("s1", envs("s1", 1, 3))


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"just some notes\n", "not an SQLite database"),
        (b"SQLite format 3\x00" + b"\x07" * 200, "is not a troupe store"),
    ],
)
async def test_a_file_that_is_not_a_store_is_refused_untouched(
    tmp_path: Path, content: bytes, words: str
) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    with pytest.raises(troupe.IncompatibleStore, match=words) as info:
        async with SQLiteStore(path):
            pass
    assert str(path) in str(info.value)
    assert path.read_bytes() == content


async def test_someone_elses_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    make_foreign_db(path)
    before = path.read_bytes()
    with pytest.raises(troupe.IncompatibleStore, match="without the troupe marker") as info:
        async with SQLiteStore(path):
            pass
    assert str(path) in str(info.value)
    assert "customers" in str(info.value)
    assert path.read_bytes() == before


async def test_a_wrong_marker_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE troupe_meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO troupe_meta VALUES ('magic', 'something-else')")
    conn.close()
    with pytest.raises(troupe.IncompatibleStore, match="without the troupe marker"):
        async with SQLiteStore(path):
            pass


async def test_a_store_from_a_newer_troupe_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    await make_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(troupe.IncompatibleStore, match="newer troupe") as info:
        async with SQLiteStore(path):
            pass
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


async def test_a_directory_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(troupe.StoreError, match="cannot open store") as info:
        async with SQLiteStore(tmp_path):
            pass
    assert str(tmp_path) in str(info.value)


async def test_a_new_store_is_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    await make_store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("SELECT value FROM troupe_meta WHERE key = 'magic'").fetchone() == (
        schema.MAGIC,
    )
    # Rows are plain JSON text that sqlite's JSON functions can read.
    sql = "SELECT json_extract(envelope, '$.event_data.text') FROM wal ORDER BY seq"
    assert conn.execute(sql).fetchall() == [("message 1",), ("message 2",), ("message 3",)]
    conn.close()


async def test_a_schema_2_store_gets_the_change_feed_and_keeps_its_terminal_tasks(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hub.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in (*schema.MIGRATIONS[0], *schema.MIGRATIONS[1]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    done, running = task("t1", state=TaskState.FAILED), task("t2", state=TaskState.RUNNING)
    for t in (done, running):
        conn.execute("INSERT INTO tasks VALUES (?, ?)", (t.task_id, dumps(t).decode()))
    conn.close()
    async with SQLiteStore(path) as store:
        assert await store.last_change() == 0
        everything = await store.changes(-1)  # from before the feed: all at change 0
        assert everything.version == 0
        assert sorted(everything.tasks, key=lambda t: t.task_id) == [done, running]
        assert await store.save_open_task(task("t1")) == done
        assert await store.save_open_task(task("t2", state=TaskState.COMPLETED)) is None
        assert await store.changes(0) == Changes(
            version=2, tasks=(task("t2", state=TaskState.COMPLETED),)
        )


async def test_an_older_store_is_migrated_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hub.db"
    await make_store(path)
    add_migration(monkeypatch, "CREATE TABLE extra (x INTEGER)", "INSERT INTO extra VALUES (7)")
    async with SQLiteStore(path) as store:
        assert await store.last_seq("s1") == 3
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
    assert conn.execute("SELECT x FROM extra").fetchall() == [(7,)]
    conn.close()


@pytest.mark.parametrize(("level", "value"), [("FULL", 2), ("normal", 1), ("OFF", 0)])
async def test_synchronous_level_reaches_the_writer(tmp_path: Path, level: str, value: int) -> None:
    async with SQLiteStore(tmp_path / "hub.db", synchronous=level) as store:
        assert store._writer is not None
        assert isinstance(store._writer.engine, SQLiteBatches)
        assert store._writer.engine.conn.execute("PRAGMA synchronous").fetchone() == (value,)


def test_constructor_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="synchronous must be one of"):
        SQLiteStore("hub.db", synchronous="SOMETIMES")
    with pytest.raises(ValueError, match="use MemoryStore"):
        SQLiteStore(":memory:")


@pytest.mark.parametrize("threaded", [True, False])
async def test_concurrent_appends_share_one_commit(tmp_path: Path, threaded: bool) -> None:
    async with SQLiteStore(tmp_path / "hub.db", threaded=threaded) as store:
        failures: list[troupe.StoreError] = []

        async def append(sid: str, seq: int) -> None:
            try:
                await store.append(sid, [env(sid, seq)])
            except troupe.StoreError as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for n in range(20):
                # Session s7's append leaves a gap: it fails alone, inside the batch.
                nursery.start_soon(append, f"s{n}", 2 if n == 7 else 1)
        stats = store.statistics()
        assert (stats.batches, stats.writes, stats.failed_commits) == (1, 19, 0)
        assert len(failures) == 1
        assert "'s7'" in str(failures[0])
        assert await store.last_seq("s7") == 0
        assert [await store.last_seq(f"s{n}") for n in (0, 6, 8, 19)] == [1, 1, 1, 1]


async def test_inline_commits_do_not_let_virtual_time_jump(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # With threaded=True the loop would be idle while the thread commits, and the
    # autojump clock would leap to the sleeper's deadline: timeouts would fire at random.
    async with SQLiteStore(tmp_path / "hub.db", threaded=False) as store:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 1000)
            start = trio.current_time()
            for seq in range(1, 21):
                await store.append("s1", [env("s1", seq)])
            assert trio.current_time() == start
            nursery.cancel_scope.cancel()


async def test_statistics_need_an_open_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hub.db")
    with pytest.raises(troupe.StoreError, match="not open"):
        store.statistics()


async def test_kill_9_mid_write_loses_nothing_that_returned(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    with trio.fail_after(20):
        printed, _ = await kill_mid_write(str(path))
    async with SQLiteStore(path) as store:
        await check_nothing_returned_was_lost(store, printed)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


async def test_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "hub.db"
    with pytest.raises(troupe.StoreError, match="cannot open store") as info:
        async with SQLiteStore(path):
            pass
    assert str(path) in str(info.value)


def test_a_locked_file_is_busy_not_incompatible(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    schema.connect(path, synchronous="FULL").close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")  # in WAL mode, keeps readers out too
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(troupe.StoreError, match="database is locked") as info:
            schema.connect(path, synchronous="FULL", busy_timeout_ms=0)
        assert not isinstance(info.value, troupe.IncompatibleStore)
    finally:
        holder.close()


def test_a_file_that_refuses_wal_mode_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some file systems (no shared memory) cannot do WAL: SQLite then keeps the old mode.
    real_connect = sqlite3.connect

    class NoWal:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def execute(self, sql: str, *params: object) -> sqlite3.Cursor:
            if sql.startswith("PRAGMA journal_mode"):
                return self.conn.execute("SELECT 'delete'")
            return self.conn.execute(sql, *params)  # type: ignore[arg-type]

        def close(self) -> None:
            self.conn.close()

    monkeypatch.setattr(sqlite3, "connect", lambda *args, **kw: NoWal(real_connect(*args, **kw)))
    with pytest.raises(troupe.StoreError, match="cannot use WAL journal mode"):
        schema.connect(tmp_path / "hub.db", synchronous="FULL")


async def test_a_failed_migration_leaves_the_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hub.db"
    await make_store(path)
    add_migration(monkeypatch, "CREATE TABLE extra (x INTEGER)", "INSERT INTO nowhere VALUES (1)")
    with pytest.raises(troupe.StoreError, match="no such table: nowhere"):
        async with SQLiteStore(path):
            pass
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION - 1,)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert "extra" not in tables
    conn.close()


async def test_a_read_that_sqlite_refuses_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    async with SQLiteStore(path) as store:
        vandal = sqlite3.connect(path)
        vandal.execute("DROP TABLE kv")
        vandal.commit()
        vandal.close()
        with pytest.raises(troupe.StoreError, match="no such table: kv") as info:
            await store.load_kv("ns")
        assert str(path) in str(info.value)


async def test_idempotency_keys_an_earlier_troupe_put_in_the_dedup_table_are_still_found(
    tmp_path: Path,
) -> None:
    """A store written before idempotency keys were kept in the WAL's index only has a
    ``k:`` row in the dedup table as well: each key is found once, answers are unchanged."""
    db = tmp_path / "old.db"
    async with SQLiteStore(db) as store:
        await store.append("s1", [env("s1", 1, idempotency_key="k1")])
        await store.append("s1", [env("s1", 2, sender_id="bob", causation_id="s1-1")])
    with sqlite3.connect(db) as conn:  # as the earlier append wrote it
        conn.execute("INSERT INTO dedup VALUES ('s1', 'k:k1', 's1-1', 1)")
        (kept,) = conn.execute("SELECT count(*) FROM dedup WHERE key = 'k:k1'").fetchone()
    assert kept == 1
    async with SQLiteStore(db) as store:
        assert await store.find_dedup("s1", ["k:k1"]) == ("s1-1", 1)
        assert await store.load_dedup("s1") == {
            "k:k1": ("s1-1", 1),
            "c:bob|s1-1|troupe.text": ("s1-2", 2),
        }
        with pytest.raises(troupe.StoreError, match="idempotency key 'k1'"):
            await store.append("s1", [env("s1", 3, idempotency_key="k1")])


async def test_an_idempotency_key_is_written_once_in_the_wal_not_in_the_dedup_table(
    tmp_path: Path,
) -> None:
    db = tmp_path / "new.db"
    async with SQLiteStore(db) as store:
        await store.append("s1", [env("s1", 1, idempotency_key="k1")])
        await store.append("s1", [env("s1", 2, sender_id="bob", causation_id="s1-1")])
    with sqlite3.connect(db) as conn:
        keys = [key for (key,) in conn.execute("SELECT key FROM dedup ORDER BY seq")]
    assert keys == ["c:bob|s1-1|troupe.text"]
