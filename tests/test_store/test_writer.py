"""The group-commit writer on its own: batches, savepoints, failed commits, shutdown."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

import troupe
from troupe.store._writer import (
    GATHER_BUSY_STEPS,
    GATHER_MAX_STEPS,
    GATHER_STEPS,
    GroupCommitWriter,
    SQLiteBatches,
    Write,
    in_worker_thread,
)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    # Checked at COMMIT, not at INSERT: the way to make a COMMIT fail on purpose.
    conn.execute(
        "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) "
        "DEFERRABLE INITIALLY DEFERRED)"
    )
    yield conn
    conn.close()


def insert(table: str, value: int) -> Write:
    def write(conn: sqlite3.Connection) -> None:
        conn.execute(f"INSERT INTO {table} VALUES (?)", (value,))

    return write


def sqlite_writer(
    conn: sqlite3.Connection, name: str, *, threaded: bool
) -> GroupCommitWriter[sqlite3.Connection]:
    return GroupCommitWriter(SQLiteBatches(conn, name=name, threaded=threaded), name=name)


def rows(conn: sqlite3.Connection, table: str) -> list[int]:
    return [value for (value,) in conn.execute(f"SELECT * FROM {table} ORDER BY 1")]


async def submit_all(
    writer: GroupCommitWriter[sqlite3.Connection], writes: list[Write]
) -> list[Exception | None]:
    """Submit every write at once (they land in one batch) and collect the outcomes."""
    outcomes: list[Exception | None] = [None] * len(writes)

    async def one(n: int) -> None:
        try:
            await writer.submit(writes[n])
        except Exception as exc:
            outcomes[n] = exc

    async with trio.open_nursery() as nursery:
        for n in range(len(writes)):
            nursery.start_soon(one, n)
    return outcomes


@pytest.mark.parametrize("threaded", [True, False])
async def test_a_failed_commit_fails_the_whole_batch(
    conn: sqlite3.Connection, threaded: bool
) -> None:
    writer = sqlite_writer(conn, "w.db", threaded=threaded)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        outcomes = await submit_all(writer, [insert("parent", 1), insert("child", 99)])
        for exc in outcomes:
            assert isinstance(exc, troupe.StoreError)
            assert "commit failed, nothing written" in str(exc)
            assert isinstance(exc.__cause__, sqlite3.IntegrityError)
        assert rows(conn, "parent") == []
        # The writer carries on with the next batch.
        await writer.submit(insert("parent", 2))
        assert rows(conn, "parent") == [2]
        stats = writer.statistics()
        assert (stats.batches, stats.writes, stats.failed_commits) == (1, 1, 1)
        writer.close()


async def test_a_write_that_raises_fails_only_itself(conn: sqlite3.Connection) -> None:
    def half_then_raise(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO parent VALUES (50)")
        raise ValueError("the caller's own bug")

    writer = sqlite_writer(conn, "w.db", threaded=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        outcomes = await submit_all(
            writer, [insert("parent", 1), half_then_raise, insert("nosuch", 1), insert("parent", 3)]
        )
        assert outcomes[0] is None
        assert outcomes[3] is None
        assert isinstance(outcomes[1], ValueError)
        # An sqlite error comes back as a StoreError.
        assert isinstance(outcomes[2], troupe.StoreError)
        assert "no such table: nosuch" in str(outcomes[2])
        assert rows(conn, "parent") == [1, 3]  # 50 was rolled back to its savepoint
        assert writer.statistics().batches == 1
        writer.close()


async def submit_apart(
    writer: GroupCommitWriter[sqlite3.Connection], count: int, steps_apart: int, first: int = 0
) -> None:
    """Submit ``count`` writes, write ``n`` (of parent ``first + n``) after
    ``n * steps_apart`` scheduler steps."""

    async def later(n: int) -> None:
        for _ in range(n * steps_apart):
            await trio.lowlevel.checkpoint()
        await writer.submit(insert("parent", first + n))

    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(later, n)


async def test_writes_that_keep_coming_share_one_commit(conn: sqlite3.Connection) -> None:
    """Issue 15, item 6: a burst that trickles in, a write every other scheduler step (64
    sessions being created, each a few hops behind the last commit), is one commit, not one
    per ``GATHER_STEPS`` window."""
    writer = sqlite_writer(conn, "w.db", threaded=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await submit_apart(writer, 20, 2)
        assert rows(conn, "parent") == list(range(20))
        assert (writer.statistics().batches, writer.statistics().writes) == (1, 20)
        writer.close()


async def test_a_busy_writer_waits_longer_for_the_next_write(conn: sqlite3.Connection) -> None:
    """After a lone write the writer commits once ``GATHER_STEPS`` steps bring nothing (a
    lone writer does not wait longer than before); after a batch of several it waits
    ``GATHER_BUSY_STEPS``, so two writes that far apart share a commit only then."""
    apart = (GATHER_STEPS + GATHER_BUSY_STEPS) // 2
    writer = sqlite_writer(conn, "w.db", threaded=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.submit(insert("parent", 100))  # a lone write: the writer is not busy
        await submit_apart(writer, 2, apart)
        assert writer.statistics().batches == 3  # one each
        await submit_all(writer, [insert("parent", n) for n in range(10, 13)])  # now it is
        assert writer.statistics().batches == 4
        await submit_apart(writer, 2, apart, first=20)
        assert writer.statistics().batches == 5  # together
        assert rows(conn, "parent") == [0, 1, 10, 11, 12, 20, 21, 100]
        writer.close()


async def test_the_writer_gathers_for_gather_max_steps_at_most(conn: sqlite3.Connection) -> None:
    """Writes that never stop coming are still committed: a batch waits for
    ``GATHER_MAX_STEPS`` scheduler steps at most."""
    writer = sqlite_writer(conn, "w.db", threaded=False)
    count = GATHER_MAX_STEPS  # one every other step: twice as long as a batch may gather
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await submit_apart(writer, count, 2)
        assert rows(conn, "parent") == list(range(count))
        assert writer.statistics().batches >= 2
        writer.close()


async def test_close_drains_pending_writes_then_refuses_new_ones(
    conn: sqlite3.Connection,
) -> None:
    writer = sqlite_writer(conn, "w.db", threaded=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        nursery.start_soon(writer.submit, insert("parent", 1))
        nursery.start_soon(writer.submit, insert("parent", 2))
        await trio.testing.wait_all_tasks_blocked()
        writer.close()
    assert rows(conn, "parent") == [1, 2]
    with pytest.raises(troupe.StoreError, match=r"w\.db is not open"):
        await writer.submit(insert("parent", 3))


async def test_a_cancelled_writer_fails_what_it_did_not_commit(
    conn: sqlite3.Connection,
) -> None:
    gate = threading.Event()

    def commit_waits_for_the_gate(statement: str) -> None:
        if statement == "COMMIT":  # (in the worker thread: the statements run before it)
            gate.wait(10)

    conn.set_trace_callback(commit_waits_for_the_gate)
    slow = insert("parent", 1)
    writer = sqlite_writer(conn, "w.db", threaded=True)
    outcomes: dict[str, str] = {}

    async def caller(name: str, write: Write) -> None:
        try:
            await writer.submit(write)
            outcomes[name] = "committed"
        except troupe.StoreError as exc:
            outcomes[name] = str(exc)

    async def run_writer(*, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await writer.run()

    async with trio.open_nursery() as nursery:
        writer_scope = await nursery.start(run_writer)
        nursery.start_soon(caller, "slow", slow)
        await trio.testing.wait_all_tasks_blocked()  # "slow"'s COMMIT is in the worker thread
        nursery.start_soon(caller, "queued", insert("parent", 2))
        await trio.testing.wait_all_tasks_blocked()  # "queued" waits for the next batch
        writer_scope.cancel()
        gate.set()
    # The batch in the thread finishes (a commit is never abandoned half-way); the rest fails.
    assert outcomes["slow"] == "committed"
    assert outcomes["queued"] == "w.db closed before this write committed"
    assert rows(conn, "parent") == [1]


async def test_writes_a_few_scheduler_steps_apart_share_one_commit(
    conn: sqlite3.Connection,
) -> None:
    # Posts into different sessions reach the writer a step or two apart (each goes through
    # its session actor first); the idle writer waits GATHER_STEPS steps so they share a commit.

    writer = sqlite_writer(conn, "w", threaded=False)

    async def after_steps(n: int) -> None:
        for _ in range(n % 3):  # 0, 1 or 2 steps late
            await trio.lowlevel.checkpoint()
        await writer.submit(insert("parent", n))

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as posters:
            for n in range(9):
                posters.start_soon(after_steps, n)
        writer.close()
    assert rows(conn, "parent") == list(range(9))
    assert writer.statistics().batches == 1


async def test_a_batch_holds_at_most_max_batch_writes(conn: sqlite3.Connection) -> None:
    writer = GroupCommitWriter(SQLiteBatches(conn, name="w", threaded=False), name="w", max_batch=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        outcomes = await submit_all(writer, [insert("parent", n) for n in range(7)])
        assert outcomes == [None] * 7
        assert rows(conn, "parent") == list(range(7))
        stats = writer.statistics()
        assert (stats.batches, stats.writes) == (3, 7)  # 3 + 3 + 1
        writer.close()


async def test_a_batch_whose_writes_all_succeed_takes_no_savepoints(
    conn: sqlite3.Connection,
) -> None:
    """Savepoints only matter when a write fails: a batch runs without them first, and only
    if a write raises is it rolled back and run again in savepoints (one failure then fails
    only its own write, as above). Two statements less per write on the common path."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    writer = sqlite_writer(conn, "w.db", threaded=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        assert await submit_all(writer, [insert("parent", n) for n in range(3)]) == [None] * 3
        assert statements[0] == "BEGIN IMMEDIATE"
        assert sorted(statements[1:-1]) == [f"INSERT INTO parent VALUES ({n})" for n in range(3)]
        assert statements[-1] == "COMMIT"
        statements.clear()
        outcomes = await submit_all(writer, [insert("parent", 10), insert("nosuch", 1)])
        assert outcomes[0] is None
        assert isinstance(outcomes[1], troupe.StoreError)
        assert [s for s in statements if "SAVEPOINT" in s]  # run again, in savepoints
        assert rows(conn, "parent") == [0, 1, 2, 10]
        writer.close()


async def test_a_threaded_batch_sends_only_its_commit_to_the_worker_thread(
    conn: sqlite3.Connection,
) -> None:
    """Nothing waits on the disk before the COMMIT (WAL mode), and a statement in the worker
    thread waited for the GIL at every step while the trio thread was busy: the statements
    run on the trio thread, only the COMMIT (its fsync) in the worker."""
    threads: list[tuple[str, bool]] = []
    conn.set_trace_callback(
        lambda statement: threads.append(
            (statement.split()[0], threading.current_thread() is threading.main_thread())
        )
    )
    writer = sqlite_writer(conn, "w.db", threaded=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await submit_all(writer, [insert("parent", 1), insert("parent", 2)])
        writer.close()
    assert threads == [("BEGIN", True), ("INSERT", True), ("INSERT", True), ("COMMIT", False)]
    assert rows(conn, "parent") == [1, 2]


async def test_a_commit_begun_in_the_worker_thread_finishes_though_the_writer_is_cancelled(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that comes while the COMMIT runs in the worker thread waits for it: the
    transaction is never left half-way, and the write it committed is reported committed."""
    in_commit, go_on = threading.Event(), threading.Event()
    finish = SQLiteBatches._finish

    def held_finish(self: SQLiteBatches) -> None:
        in_commit.set()
        go_on.wait(10)
        finish(self)

    monkeypatch.setattr(SQLiteBatches, "_finish", held_finish)
    writer = sqlite_writer(conn, "w.db", threaded=True)
    write = insert("parent", 7)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            nursery.start_soon(writer.submit, write)
            assert await trio.to_thread.run_sync(in_commit.wait, 10)
            nursery.cancel_scope.cancel()
            go_on.set()
    assert writer.statistics().batches == 1
    assert writer.statistics().writes == 1
    assert not conn.in_transaction
    assert rows(conn, "parent") == [7]


async def test_an_error_raised_in_the_worker_thread_is_raised_in_the_waiting_task() -> None:
    def fails() -> None:
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        await in_worker_thread(fails)
    ran_in: list[bool] = []
    await in_worker_thread(
        lambda: ran_in.append(threading.current_thread() is threading.main_thread())
    )
    assert ran_in == [False]
