"""Checks of what a hub promises, for tests: its WALs, its published state, its tasks.

``check_invariants(hub)`` reads every session's WAL straight from the store (past any
:class:`FaultyStore`) and checks it against the hub's published view; ``no_task_leaks()``
checks that a block left no task behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import trio
from trio.lowlevel import Task

from ..hub import Hub
from ..model import EV_SESSION_CLOSED, EV_SESSION_EXPIRED, Envelope, is_substantive
from ..session_types import AnySessionType
from ..store import Store, dedup_keys
from ._faulty_store import FaultyStore

ENDINGS = (EV_SESSION_CLOSED, EV_SESSION_EXPIRED)


class InvariantViolation(AssertionError):
    """Raised when :func:`check_invariants` finds a violation; the message lists them all."""


class TaskLeak(AssertionError):
    """Raised when tasks started in a :func:`no_task_leaks` block outlive it."""


@attrs.frozen(kw_only=True)
class InvariantReport:
    """What :func:`check_invariants` looked at."""

    sessions: int
    envelopes: int
    folded: int
    #: Sessions given up on (crashed too often) whose close the hub is still retrying.
    closing: int = 0


def seeded_ids(seed: int = 0) -> Callable[[], str]:
    """An id maker for ``open_hub(new_id=...)``: UUID-like hex, reproducible from ``seed``."""
    import random

    rng = random.Random(seed)
    return lambda: f"{rng.getrandbits(128):032x}"


def _store_of(hub: Hub) -> Store:
    store = hub.core.store
    while isinstance(store, FaultyStore):
        store = store.inner
    return store


def fold_wal(stype: AnySessionType, metadata: Any, wal: list[Envelope]) -> Any:
    """The session type's state after ``wal``, folded from its initial state (as recovery
    would without a snapshot)."""
    state = stype.initial_state(metadata)
    for envelope in wal:
        if is_substantive(envelope.event_type):
            state = stype.fold(envelope, state)
    return state


def _check_wal(sid: str, wal: list[Envelope], problems: list[str]) -> None:
    seqs = [e.seq for e in wal]
    if seqs != list(range(1, len(wal) + 1)):
        problems.append(f"session {sid}: WAL seqs are {seqs}, not 1..{len(wal)}")
    ids = [e.envelope_id for e in wal]
    if len(set(ids)) != len(ids):
        problems.append(f"session {sid}: an envelope id appears twice in the WAL")
    keys: dict[str, int] = {}
    for e in wal:
        if e.session_id != sid:
            problems.append(f"session {sid}: seq {e.seq} belongs to session {e.session_id}")
        for key in dedup_keys(e):
            if key in keys:
                problems.append(
                    f"session {sid}: seq {keys[key]} and seq {e.seq} share the dedup key "
                    f"{key!r} (a repeat was appended twice)"
                )
            keys.setdefault(key, e.seq)
    ends = [e.seq for e in wal if e.event_type in ENDINGS]
    if ends and ends != [len(wal)]:
        problems.append(f"session {sid}: end notices at seqs {ends} (one, last, expected)")


async def check_invariants(hub: Hub) -> InvariantReport:
    """Check every session of a running hub against its WAL; call it when the hub is quiet.

    For every session: the WAL is ``1..n`` with no gap or repeat; no envelope id and no
    dedup key (idempotency key, or sender + causation + event type) appears twice; a
    terminal session's WAL ends with exactly one close/expire notice and an open one has
    none; the stored metadata equals the published one; and for a loaded session the
    published ``last_seq`` is ``n`` and the published state equals a fold of the whole WAL
    from the initial state (and survives ``dump_state``/``load_state``). Envelope ids are
    unique across sessions. A session the hub gave up on (it crashed too often) and is
    still closing is skipped and counted in ``closing``.

    Returns:
      How many sessions and envelopes were checked, and how many states were folded.

    Raises:
      InvariantViolation: listing every violation.
    """
    store = _store_of(hub)
    problems: list[str] = []
    seen_ids: dict[str, str] = {}
    envelopes = folded = closing = 0
    sessions = list(hub.core.directory.sessions.values())
    for entry in sessions:
        sid = entry.session_id
        md = entry.metadata
        if entry.given_up:
            # Its actor crashed too often and the hub is closing it, retrying while the
            # store refuses: in flux until then (the WAL stays the truth).
            closing += 1
            continue
        wal = await store.read(sid)
        envelopes += len(wal)
        _check_wal(sid, wal, problems)
        for e in wal:
            other = seen_ids.setdefault(e.envelope_id, sid)
            if other != sid:
                problems.append(f"envelope id {e.envelope_id} is in sessions {other} and {sid}")
        terminal_notice = bool(wal) and wal[-1].event_type in ENDINGS
        if md.state.terminal != terminal_notice:
            problems.append(
                f"session {sid} is {md.state.value} but its WAL "
                + ("ends with a close notice" if terminal_notice else "has no close notice")
            )
        stored = await store.get_session(sid)
        if stored != md:
            problems.append(f"session {sid}: stored metadata differs from the published one")
        loaded = entry.state is not None or entry.running
        if loaded and entry.last_seq != len(wal):
            problems.append(
                f"session {sid}: published last_seq {entry.last_seq}, WAL has {len(wal)}"
            )
        stype = entry.stype
        if stype is None or entry.state is None:
            continue
        folded += 1
        expected = fold_wal(stype, md, wal)
        if entry.state != expected:
            problems.append(
                f"session {sid}: published state {entry.state!r} is not the fold of its WAL "
                f"{expected!r}"
            )
        if stype.load_state(stype.dump_state(entry.state)) != entry.state:
            problems.append(f"session {sid}: its state does not survive dump_state/load_state")
    if problems:
        raise InvariantViolation(f"{len(problems)} violation(s):\n" + "\n".join(problems))
    return InvariantReport(
        sessions=len(sessions), envelopes=envelopes, folded=folded, closing=closing
    )


def _tree(task: Task) -> Iterator[Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _tree(child)


def _root() -> Task:
    root = trio.lowlevel.current_root_task()
    assert root is not None, "not inside a trio run"
    return root


def live_tasks() -> set[Task]:
    """Every task of this trio run, system tasks included."""
    return set(_tree(_root()))


def _started_here(task: Task, here: Task, root: Task) -> bool:
    """Whether ``task`` descends from ``here`` or is a system task (a child of the root)."""
    parent = task.parent_nursery.parent_task if task.parent_nursery is not None else None
    if parent is root:
        return True
    while parent is not None:
        if parent is here:
            return True
        nursery = parent.parent_nursery
        parent = nursery.parent_task if nursery is not None else None
    return False


@contextmanager
def no_task_leaks() -> Iterator[None]:
    """Check that the block leaves no task behind: none it started, no new system task.

    Use it around ``async with open_hub(...)``: when the hub is closed, everything it ran
    (actors, supervisors, in-process clients' loops, store writers) must be gone.

    Raises:
      TaskLeak: naming the tasks still alive (only when the block itself succeeded).
    """
    here = trio.lowlevel.current_task()
    root = _root()
    before = live_tasks()
    yield
    leaked = sorted(t.name for t in live_tasks() - before if _started_here(t, here, root))
    if leaked:
        raise TaskLeak(f"{len(leaked)} task(s) outlived the block: {', '.join(leaked)}")
