"""Group commit: one writer task turns many callers' writes into one transaction per batch.

Rules:

- Callers :meth:`~GroupCommitWriter.submit` a write (a function of the connection) and wait.
  The writer task, woken by a write, lets the other tasks run until ``GATHER_STEPS``
  scheduler steps in a row bring no new write (``GATHER_BUSY_STEPS`` when its last batch
  had more than one write; ``GATHER_MAX_STEPS`` in all at most), then takes
  every write pending at that moment (at most ``max_batch``, when the engine wants a bound)
  as one batch and hands it to its
  engine (:class:`BatchEngine`: SQLite's :class:`SQLiteBatches`, PostgreSQL's in
  ``_postgres.py``), which runs it as one transaction: ``BEGIN``, each write in its own
  ``SAVEPOINT``, ``COMMIT``. A write returns only after its batch committed. (SQLite runs
  the writes without savepoints first, and only if one raises rolls the transaction back
  and runs them again in savepoints: two statements less per write when none fails.)
- A write that raises is rolled back to its savepoint and fails only its own caller; the
  rest of the batch still commits.
- A failed ``COMMIT`` fails every write of the batch, and none of them is visible.
- A caller cancelled before the writer took its write withdraws it: it never happens. A
  caller cancelled later may or may not see its write committed (read back to find out).
- SQLite: with ``threaded=True`` the batch's COMMIT runs in a worker thread, so the trio loop
  keeps running during the fsync (its statements run on the trio thread: nothing waits on the
  disk before the COMMIT). With ``threaded=False`` it all runs on the trio thread, blocking
  the loop: that is what deterministic virtual time needs (``MockClock(autojump_threshold=0)``
  jumps the clock whenever every task waits, including while one waits for a thread).
- When the writer stops (closed or cancelled), every write it did not commit fails with
  :class:`StoreError`; no caller is left waiting.

The writer itself knows no engine: the transaction, its errors and any retries are the
engine's, so one writer serves SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import attrs
import trio

from .._errors import StoreError

if TYPE_CHECKING:
    import outcome  # (trio's own dependency: the type of what a worker thread delivers)

C = TypeVar("C")

#: One caller's write: a function of the engine's connection, run inside the batch.
Write = Callable[[sqlite3.Connection], None]

#: Scheduler steps the idle writer waits after the first write of a burst, for the others:
#: it commits once this many steps in a row brought no new write (a lone writer's wait)...
GATHER_STEPS = 3
#: ... or this many, when the last batch had more than one write (writers are busy)...
GATHER_BUSY_STEPS = 8
#: ... or after this many steps in all. Writes that trickle in a few steps apart (64
#: sessions being created, each write a few hops after the last commit woke its task)
#: share one commit instead of one each: 9-11 writes per commit instead of 2.8 in bench
#: sim's creates, 10-15% less CPU per session; direct appends (bench store) are unchanged.
GATHER_MAX_STEPS = 64


@attrs.frozen(kw_only=True)
class WriterStatistics:
    """What the writer has done so far (trio's ``statistics()`` convention)."""

    batches: int
    writes: int
    failed_commits: int
    pending: int


@attrs.define(eq=False)
class Pending(Generic[C]):
    """One submitted write and what became of it (the engine sets ``error``)."""

    write: Callable[[C], None]
    done: trio.Event = attrs.field(factory=trio.Event)
    taken: bool = False
    committed: bool = False
    error: Exception | None = None


class BatchEngine(Protocol[C]):
    """Runs one batch of writes as one transaction, for :class:`GroupCommitWriter`."""

    async def commit(self, batch: Sequence[Pending[C]]) -> None:
        """Run every write of ``batch`` in its own savepoint of one transaction and commit.

        A write that failed alone gets its ``error`` set (a driver error as
        :class:`StoreError`, the caller's own exception as it is). Raises
        :class:`StoreError` when the batch as a whole did not commit; the writer then fails
        every write of it that has no error of its own.
        """
        ...


class GroupCommitWriter(Generic[C]):
    """The single writer of one store: see the module rules."""

    def __init__(self, engine: BatchEngine[C], *, name: str, max_batch: int | None = None) -> None:
        self.engine = engine
        self._name = name
        self._max_batch = max_batch
        self._pending: list[Pending[C]] = []
        self._wakeup = trio.Event()
        self._running = False
        self._closing = False
        self._batches = 0
        self._writes = 0
        self._failed_commits = 0

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            batches=self._batches,
            writes=self._writes,
            failed_commits=self._failed_commits,
            pending=len(self._pending),
        )

    async def submit(self, write: Callable[[C], None]) -> None:
        """Run ``write`` in the next batch and return once that batch has committed.

        Args:
          write: runs inside the batch's transaction, in its own savepoint.

        Raises:
          StoreError: the store is closed, the commit failed, or ``write`` raised an error
            of the database driver; any other exception ``write`` raised is re-raised as is.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closing or not self._running:
            raise StoreError(f"{self._name} is not open; use it inside 'async with store:'")
        pending = Pending(write)
        self._pending.append(pending)
        self._wakeup.set()
        try:
            await pending.done.wait()
        finally:
            if not pending.taken:
                # Cancelled before the writer took it: withdraw, so it never happens.
                self._pending.remove(pending)
        if pending.error is not None:
            raise pending.error

    def close(self) -> None:
        """Let the writer commit what is pending, then stop; later submits fail."""
        self._closing = True
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: commit batches until :meth:`close` (or cancellation)."""
        self._running, self._closing = True, False
        task_status.started()
        batch: list[Pending[C]] = []
        last_batch = 0
        try:
            while self._pending or not self._closing:
                if not self._pending:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                    # Woken by the first write of a burst: let the tasks that are runnable
                    # now (other sessions mid-post) add theirs, so they share the commit,
                    # as long as they keep coming (GATHER_STEPS, GATHER_MAX_STEPS).
                    patience = GATHER_BUSY_STEPS if last_batch > 1 else GATHER_STEPS
                    idle = 0
                    for _ in range(GATHER_MAX_STEPS):
                        before = len(self._pending)
                        await trio.lowlevel.checkpoint()
                        idle = 0 if len(self._pending) > before else idle + 1
                        if idle == patience:
                            break
                    continue
                batch = self._pending[: self._max_batch]
                self._pending = self._pending[len(batch) :]
                for pending in batch:
                    pending.taken = True
                await self._commit(batch)
                for pending in batch:
                    pending.done.set()
                last_batch, batch = len(batch), []
        finally:
            self._running = False
            for pending in [*batch, *self._pending]:
                if not pending.committed and pending.error is None:
                    pending.error = StoreError(f"{self._name} closed before this write committed")
                pending.taken = True
                pending.done.set()
            self._pending = []

    async def _commit(self, batch: list[Pending[C]]) -> None:
        try:
            await self.engine.commit(batch)
        except StoreError as exc:
            self._failed_commits += 1
            for pending in batch:
                if pending.error is None:
                    # One exception object per caller: each raises (and extends) its own.
                    failed = type(exc)(*exc.args)
                    pending.error = _caused(failed, exc.__cause__ or exc)
            return
        self._batches += 1
        for pending in batch:
            if pending.error is None:
                pending.committed = True
                self._writes += 1


class SQLiteBatches:
    """SQLite's :class:`BatchEngine`: ``BEGIN IMMEDIATE``, savepoints, ``COMMIT``.

    Args:
      conn: the store's write connection, in autocommit mode (transactions are explicit).
      name: the store, for error messages.
      threaded: run the batch in a worker thread (else on the trio thread; module rules).
    """

    def __init__(self, conn: sqlite3.Connection, *, name: str, threaded: bool = True) -> None:
        self.conn = conn
        self._name = name
        self._threaded = threaded

    async def commit(self, batch: Sequence[Pending[sqlite3.Connection]]) -> None:
        if not self._threaded:
            self._commit(batch)
            return
        # The statements on the trio thread, only the COMMIT (its fsync) in a worker thread.
        # Before the commit nothing waits on the disk (WAL mode writes the pages at COMMIT),
        # and a worker thread paid for each statement twice over: the GIL is let go and
        # taken back around every step, and while the trio thread is busy (a hub serving
        # connections) each take waited, so a commit took ~0.9 ms for a ~0.15 ms fsync.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._write(batch)
        await in_worker_thread(self._finish)  # (uncancellable: begun, never left half-way)

    def _commit(self, batch: Sequence[Pending[sqlite3.Connection]]) -> None:
        """One transaction for the whole batch, on the trio thread."""
        self._write(batch)
        self._finish()

    def _write(self, batch: Sequence[Pending[sqlite3.Connection]]) -> None:
        """Begin the batch's transaction and run its writes (see the module's rules)."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            if not _run_plainly(conn, batch):
                # Begun again, not rolled back to a savepoint over the batch: that savepoint
                # made SQLite journal every page the batch touched (about 18 us of CPU per
                # envelope on the agent path). The write lock is let go in between, which
                # costs nothing here: one process writes a store (StoreLocked), readers do
                # not block a writer in WAL mode, and busy_timeout covers the rest.
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                run_in_savepoints(conn, batch, self._name, sqlite3.Error)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    def _finish(self) -> None:
        """Commit the batch's transaction (the fsync); runs in a worker thread or inline."""
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: sqlite3.Error) -> StoreError:
        """Roll back what is left of the transaction; the batch failed as a whole."""
        conn = self.conn
        if conn.in_transaction:
            # SQLite may have rolled back already; the batch failed either way.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        return StoreError(f"{self._name}: commit failed, nothing written: {exc}")


async def in_worker_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` in one of trio's cached worker threads and wait for it, uncancellable.

    What ``trio.to_thread.run_sync`` under a shield does, less what a commit does not need:
    it names the thread after the call and back (two ``pthread_setname_np`` calls through
    ctypes, holding the GIL), takes a token of its limiter and copies the context, ~16 of the
    ~44 µs of CPU its round trip takes here, every commit, while the hub waits on it.
    """
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def deliver(result: outcome.Outcome[None]) -> None:
        token.run_sync_soon(trio.lowlevel.reschedule, task, result)

    trio.lowlevel.start_thread_soon(fn, deliver)
    await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)


def _run_plainly(conn: Any, batch: Sequence[Pending[Any]]) -> bool:
    """Run every write of ``batch`` in the open transaction, without savepoints; False as
    soon as one raises (the caller then rolls the transaction back and runs the batch again
    in savepoints, which give each write its own outcome)."""
    for pending in batch:
        pending.error = None
        try:
            pending.write(conn)
        except Exception:
            return False
    return True


def run_in_savepoints(
    conn: Any,
    batch: Sequence[Pending[Any]],
    name: str,
    driver_error: type[Exception],
    *,
    passes_through: Callable[[Exception], bool] = lambda exc: False,
    joined: bool = False,
) -> None:
    """Run each write of ``batch`` in its own savepoint of the open transaction on ``conn``.

    A write that raises is rolled back to its savepoint and gets the error: a
    ``driver_error`` as :class:`StoreError` naming the store, anything else as it is.

    Args:
      conn: a connection with an ``execute(sql)`` method, inside a transaction.
      batch: the writes; their ``error`` is set here (cleared first: a retried batch starts
        afresh).
      name: the store, for error messages.
      driver_error: the driver's base exception class.
      passes_through: errors this says yes to are not the write's: they propagate and the
        whole batch fails (PostgreSQL: a lost connection, which a retry may cure).
      joined: send each ``RELEASE`` with the next ``SAVEPOINT`` in one round trip, and leave
        the last savepoint to the ``COMMIT`` (PostgreSQL: a statement string may hold two).
    """
    release = False
    for pending in batch:
        pending.error = None
        conn.execute("RELEASE write; SAVEPOINT write" if release else "SAVEPOINT write")
        try:
            pending.write(conn)
        except Exception as exc:
            if passes_through(exc):
                raise
            conn.execute("ROLLBACK TO write")
            if isinstance(exc, driver_error):
                pending.error = _caused(StoreError(f"{name}: {exc}"), exc)
            else:  # the caller's own failure, handed back to it
                pending.error = exc
        if joined:
            release = True
        else:
            conn.execute("RELEASE write")


def _caused(error: StoreError, cause: BaseException) -> StoreError:
    # ``raise ... from`` happens later, in the caller's task; record the cause now.
    error.__cause__ = cause
    return error
