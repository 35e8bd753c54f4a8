"""One writer per store file: an OS lock on a sidecar ``<store>.lock`` file.

Rules:

- A store opened for writing holds an exclusive ``flock`` on ``<store>.lock`` until it is
  closed; the OS releases it when the process dies, however it dies (no stale locks).
- The holder writes who it is (pid, host, since when) into the lock file, so a second
  opener's error names it. The file is left in place when the lock is released: deleting
  it would let a third opener lock a new file while the second still locks the old one.
- ``flock`` locks belong to an open file, so a second open in the same process is refused
  just as one in another process is.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

from .._errors import StoreError, StoreLocked


def lock_path(path: Path) -> Path:
    """The sidecar lock file of the store at ``path``."""
    return path.with_name(path.name + ".lock")


def describe_holder(text: str) -> str:
    """``pid 12 on host h since 2026-…`` from what a holder wrote, or what is known."""
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on host {holder['host']} since {holder['since']}"
    except (ValueError, TypeError, KeyError):
        return "a holder that has not said who it is yet"


class StoreLock:
    """The write lock of one store file; :meth:`acquire` once, :meth:`release` once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = lock_path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock at once or fail.

        Raises:
          StoreLocked: another open store (any process) holds it; names the holder.
          StoreError: the lock file cannot be created (no permission, no directory).
        """
        try:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open store {str(self.path)!r}: lock file: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise StoreLocked(
                f"store {str(self.path)!r} is already open for writing by {holder} "
                f"(lock {str(self.file)!r}); a store has one hub"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock store {str(self.path)!r}: {exc}") from exc
        since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)  # still ours until the close: nobody reads a stale holder
            os.close(fd)

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False when another store holds it."""
        try:
            self.acquire()
        except StoreLocked:
            return False
        return True
