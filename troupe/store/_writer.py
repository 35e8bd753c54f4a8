"""Group commit: one writer task turns many callers' writes into one transaction per batch.

Rules:

- Callers :meth:`~GroupCommitWriter.submit` a write (a function of the connection) and wait.
  The writer task takes every write pending at that moment as one batch: ``BEGIN``, each
  write in its own ``SAVEPOINT``, ``COMMIT``. A write returns only after its batch committed.
- A write that raises is rolled back to its savepoint and fails only its own caller; the
  rest of the batch still commits.
- A failed ``COMMIT`` fails every write of the batch, and none of them is visible.
- A caller cancelled before the writer took its write withdraws it: it never happens. A
  caller cancelled later may or may not see its write committed (read back to find out).
- With ``threaded=True`` the batch runs in a worker thread, so the trio loop keeps running
  during the fsync. With ``threaded=False`` it runs on the trio thread, blocking the loop:
  that is what deterministic virtual time needs (``MockClock(autojump_threshold=0)`` jumps
  the clock whenever every task waits, including while one waits for a thread).
- When the writer stops (closed or cancelled), every write it did not commit fails with
  :class:`StoreError`; no caller is left waiting.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable

import attrs
import trio

from .._errors import StoreError

Write = Callable[[sqlite3.Connection], None]


#: Scheduler steps the idle writer waits after the first write of a burst, for the others.
GATHER_STEPS = 3


@attrs.frozen(kw_only=True)
class WriterStatistics:
    """What the writer has done so far (trio's ``statistics()`` convention)."""

    batches: int
    writes: int
    failed_commits: int
    pending: int


@attrs.define(eq=False)
class _Pending:
    write: Write
    done: trio.Event = attrs.field(factory=trio.Event)
    taken: bool = False
    committed: bool = False
    error: Exception | None = None


class GroupCommitWriter:
    """The single writer of one SQLite connection; see the module rules."""

    def __init__(self, conn: sqlite3.Connection, *, name: str, threaded: bool = True) -> None:
        self._conn = conn
        self._name = name
        self._threaded = threaded
        self._pending: list[_Pending] = []
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

    async def submit(self, write: Write) -> None:
        """Run ``write`` in the next batch and return once that batch has committed.

        Args:
          write: runs inside the batch's transaction, in its own savepoint.

        Raises:
          StoreError: the store is closed, the commit failed, or ``write`` raised a
            ``sqlite3.Error``; any other exception ``write`` raised is re-raised as is.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closing or not self._running:
            raise StoreError(f"{self._name} is not open; use it inside 'async with store:'")
        pending = _Pending(write)
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
        batch: list[_Pending] = []
        try:
            while self._pending or not self._closing:
                if not self._pending:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                    # Woken by the first write of a burst: let the tasks that are runnable
                    # now (other sessions mid-post) add theirs, so they share the commit.
                    for _ in range(GATHER_STEPS):
                        await trio.lowlevel.checkpoint()
                    continue
                batch, self._pending = self._pending, []
                for pending in batch:
                    pending.taken = True
                if self._threaded:
                    await trio.to_thread.run_sync(self._commit, batch)
                else:
                    self._commit(batch)
                for pending in batch:
                    pending.done.set()
                batch = []
        finally:
            self._running = False
            for pending in [*batch, *self._pending]:
                if not pending.committed and pending.error is None:
                    pending.error = StoreError(f"{self._name} closed before this write committed")
                pending.taken = True
                pending.done.set()
            self._pending = []

    def _commit(self, batch: list[_Pending]) -> None:
        """One transaction for the whole batch; runs in a worker thread or inline."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for pending in batch:
                conn.execute("SAVEPOINT write")
                try:
                    pending.write(conn)
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO write")
                    pending.error = _caused(StoreError(f"{self._name}: {exc}"), exc)
                except Exception as exc:  # the caller's own failure, handed back to it
                    conn.execute("ROLLBACK TO write")
                    pending.error = exc
                conn.execute("RELEASE write")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                # SQLite may have rolled back already; the batch failed either way.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._failed_commits += 1
            for pending in batch:
                if pending.error is None:
                    failed = StoreError(f"{self._name}: commit failed, nothing written: {exc}")
                    pending.error = _caused(failed, exc)
            return
        self._batches += 1
        for pending in batch:
            if pending.error is None:
                pending.committed = True
                self._writes += 1


def _caused(error: StoreError, cause: Exception) -> StoreError:
    # ``raise ... from`` happens later, in the caller's task; record the cause now.
    error.__cause__ = cause
    return error
