"""The session directory: every session's last published metadata and state, and its actor.

An ETS-style table. The hub actor adds entries (``open_hub`` loads the stored ones before
any actor runs); each entry's published fields are written only by that session's actor
(or, for a session whose actor was given up on, by the session supervisor when it closes
it). Readers (``get_session``, ``can_send``, ``list_sessions``) read the last published,
immutable values synchronously, through a :class:`DirectoryView` (``HubCore.directory``),
which has no write methods and whose tables are read-only mappings.

An entry's live fields (``ref``, ``gate``, ``passivated``) and the sessions in use, least
recently used first (``touch``, ``release``), are the session supervisor's
(``_sessions.py``): the passivation sweeper reads only the front of ``in_use``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import trio

from .. import _tracing
from .._errors import NotFoundError
from ..actors import ActorRef
from ..model import SessionMetadata, SessionState, SessionStatus
from ..session_types import AnySessionType
from ..store import answer_prefix
from . import _gc
from ._activity import Activity


class DedupWindow(OrderedDict[str, tuple[str, int]]):
    """A session's latest dedup keys (``{key: (envelope_id, seq)}``), at most ``size``.

    A live session checks a post's keys here first; only when the window is not
    ``complete`` (it has let older keys go, or was loaded without them) may a miss be in
    the store, which answers it from its index (``Store.find_dedup``). So memory stays
    bounded however long the session runs, and a retry is exactly-once however old it is.

    A (re)started session loads its latest answer keys (``Store.recent_dedup``) and the
    idempotency keys of its last ``size`` envelopes (``Store.idempotency_keys``: a store
    keeps those with the WAL only). Should one be missed all the same, the store's index of
    them refuses the repeat at the append (``DuplicateKey``), and the session answers with
    the original.
    """

    def __init__(self, size: int, *, complete: bool = True) -> None:
        super().__init__()
        self.size = size
        #: True while this holds every key the session has ever had.
        self.complete = complete
        #: ``(sender, causation) -> hit`` of the latest answers, at most ``size``: who
        #: answered what, in O(1) (a turn handler asks it of a replayed trigger).
        self.answers: OrderedDict[tuple[str, str], tuple[str, int]] = OrderedDict()
        #: A key loaded from the store could not be split into sender and causation (an id
        #: with a ``|`` in it): :meth:`answer` also scans the keys.
        self.ambiguous = False

    def remember(self, key: str, hit: tuple[str, int]) -> None:
        self[key] = hit
        if len(self) > self.size:
            self.popitem(last=False)
            self.complete = False

    def answered(self, sender_id: str, causation_id: str, hit: tuple[str, int]) -> None:
        """Index an accepted answer (its ``c:`` key is remembered with :meth:`remember`).

        The index keeps at most ``size`` answers: one it let go was let go by the window
        too (every answer has a key there), which is then not ``complete``.
        """
        answers = self.answers
        answers[sender_id, causation_id] = hit
        if len(answers) > self.size:
            answers.popitem(last=False)

    def load(self, key: str, hit: tuple[str, int]) -> None:
        """Remember a key read back from the store (an answer's is indexed too)."""
        self.remember(key, hit)
        if key.startswith("c:"):
            parts = key[2:].split("|")
            if len(parts) == 3:
                self.answered(parts[0], parts[1], hit)
            else:
                self.ambiguous = True

    def answer(self, sender_id: str, causation_id: str) -> tuple[str, int] | None:
        """Where ``sender_id``'s answer to ``causation_id`` is, if this window holds it."""
        hit = self.answers.get((sender_id, causation_id))
        if hit is None and self.ambiguous:
            prefix = answer_prefix(sender_id, causation_id)
            hit = next((h for key, h in self.items() if key.startswith(prefix)), None)
        return hit


@attrs.define(eq=False)
class SessionEntry:
    """One session as the rest of the hub sees it."""

    metadata: SessionMetadata
    stype: AnySessionType | None
    #: The session type's state after ``last_seq`` (None until the session was loaded once).
    state: Any = None
    last_seq: int = 0
    ref: ActorRef[Any, Any] | None = None
    #: The running actor's window of recent dedup keys (its own; read-only for everyone else).
    dedup: DedupWindow | None = None
    #: trio time of the last use through the session supervisor (``Directory.touch``).
    used_at: float = 0.0
    #: Set while callers must queue to reach the actor (it is starting or passivating).
    gate: Gate | None = None
    #: True from a passivation until the session is started again.
    passivated: bool = False
    #: The running actor's activity summary, for the expectation sweeper (read-only here).
    activity: Activity | None = None
    #: What deliveries carry to clients: the last published metadata, state and seq.
    status: SessionStatus | None = None
    #: Set by the hub actor on a session it has just created, until its first actor
    #: starts: the store holds nothing of it yet (its first append saves this metadata
    #: too), so that start skips the recovery reads (issue 15, item 6).
    fresh: bool = False
    #: What a ``wait_for`` waits on; made by the first waiter, so that a publish nobody
    #: waits for (every post's) allocates nothing.
    _changed: trio.Event | None = None

    @property
    def session_id(self) -> str:
        return self.metadata.session_id

    @property
    def running(self) -> bool:
        return self.ref is not None and self.ref.alive

    @property
    def passivating(self) -> trio.Event | None:
        """Set once the passivation its actor agreed to is over (its gate's mark); None
        while no passivation is under way."""
        return self.gate.passivating if self.gate is not None else None

    @property
    def given_up(self) -> bool:
        """The session supervisor gave up on this live session's actor (it crashed too often)
        and the hub has not published its close yet: it must not be started again."""
        return self.ref is not None and not self.ref.alive and not self.metadata.state.terminal

    def retire(self) -> None:
        """Let go of what only a running actor needs, once the session is terminal.

        That is its ref, its dedup index (a repeat into an ended session is looked up in the
        store, see ``FindAccepted``) and its activity summary (the expectation sweeper skips
        ended sessions). The metadata, the last published state and ``last_seq`` stay: they
        are what ``get_session``, ``session_state`` and ``list_sessions`` read. Else every
        session ever closed would hold them for the life of the hub.
        """
        self.ref = None
        self.dedup = None
        self.activity = None

    def publish(self, metadata: SessionMetadata, state: Any, last_seq: int) -> None:
        self.metadata = metadata
        self.state = state
        self.last_seq = last_seq
        self.status = SessionStatus(metadata=metadata, state=state, last_seq=last_seq)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_for(self, predicate: Callable[[SessionMetadata], bool]) -> SessionMetadata:
        """Wait until the published metadata satisfies ``predicate``; return it."""
        while not predicate(self.metadata):
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()
        return self.metadata


class Gate:
    """Where callers queue, in arrival order, while a session's actor starts or passivates.

    ``lock`` is a :class:`trio.StrictFIFOLock`: whoever holds it gets the actor's ref and
    puts its message into the mailbox before the next caller is let through, so callers
    that arrive while the actor is away keep their order. ``passivating`` is set while the
    actor is being stopped; the holder waits for it.
    """

    __slots__ = ("lock", "passivating", "users")

    def __init__(self) -> None:
        self.lock = trio.StrictFIFOLock()
        self.passivating: trio.Event | None = None
        self.users = 0


class Directory:
    """All sessions of a hub, in creation order, with per-agent and per-creator indexes."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionEntry] = {}
        self._by_agent: dict[str, list[str]] = {}
        self._live_by_creator: dict[str, int] = {}
        self._open = 0
        #: Sessions in use (their actor running), least recently used first.
        self.in_use: OrderedDict[str, SessionEntry] = OrderedDict()
        #: Set when a session is first used after ``in_use`` was empty (the sweeper waits).
        self.used = trio.Event()
        #: This table's read-only face (``HubCore.directory``).
        self.view = DirectoryView(self)

    @property
    def open_count(self) -> int:
        """How many sessions are not terminal."""
        return self._open

    def touch(self, entry: SessionEntry, now: float) -> None:
        """Record a use of ``entry`` (its actor is running) at trio time ``now``."""
        entry.used_at = now
        in_use = self.in_use
        sid = entry.session_id
        if sid in in_use:
            in_use.move_to_end(sid)
        else:
            in_use[sid] = entry
            self.used.set()

    def release(self, entry: SessionEntry) -> None:
        """Forget that ``entry`` is in use (passivated, or ended).

        ``used`` is renewed only once it was set: the sweeper may be waiting on it already
        (an entry that was not in use, released while none is, must not take its wake-up).
        """
        self.in_use.pop(entry.session_id, None)
        if not self.in_use and self.used.is_set():
            self.used = trio.Event()

    def __len__(self) -> int:
        return len(self.sessions)

    def add(self, entry: SessionEntry) -> None:
        md = entry.metadata
        if md.session_id not in self.sessions:
            _gc.grew()
        self.sessions[md.session_id] = entry
        for agent_id in md.participant_ids():
            self._by_agent.setdefault(agent_id, []).append(md.session_id)
        if not md.state.terminal:
            self._live_by_creator[md.creator_id] = self._live_by_creator.get(md.creator_id, 0) + 1
            self._open += 1

    def get(self, session_id: str) -> SessionEntry:
        entry = self.sessions.get(session_id)
        if entry is None:
            raise NotFoundError(f"session not found: {session_id!r}")
        return entry

    def ended(self, metadata: SessionMetadata) -> None:
        """Account for a session that just reached a terminal state."""
        if _tracing.ACTIVE is not None:
            _tracing.ACTIVE.session_ended(metadata)
        self._open -= 1
        entry = self.sessions.get(metadata.session_id)
        if entry is not None:
            self.release(entry)
        count = self._live_by_creator.get(metadata.creator_id, 0)
        if count <= 1:
            self._live_by_creator.pop(metadata.creator_id, None)
        else:
            self._live_by_creator[metadata.creator_id] = count - 1

    def live_created_by(self, agent_id: str) -> int:
        return self._live_by_creator.get(agent_id, 0)

    def of_agent(self, agent_id: str) -> list[SessionEntry]:
        return [self.sessions[sid] for sid in self._by_agent.get(agent_id, ())]

    def select(
        self,
        *,
        agent_id: str | None = None,
        state: SessionState | None = None,
        include_terminal: bool = True,
        limit: int = 50,
    ) -> list[SessionMetadata]:
        entries = self.of_agent(agent_id) if agent_id is not None else self.sessions.values()
        out: list[SessionMetadata] = []
        for entry in entries:
            if len(out) >= limit:
                break
            md = entry.metadata
            if state is not None and md.state is not state:
                continue
            if not include_terminal and state is None and md.state.terminal:
                continue
            out.append(md)
        return out


class DirectoryView:
    """A :class:`Directory` as those who do not own it see it: reads only.

    ``sessions`` and ``in_use`` are read-only mappings of the table's own (a write raises
    ``TypeError``), and there is no ``add``, ``ended``, ``touch`` nor ``release``: entries
    are added by the hub actor, their use recorded by the session supervisor, a close
    accounted for by the session's actor (or its supervisor), each through the
    :class:`Directory` it was given.
    """

    __slots__ = ("_table", "in_use", "sessions")

    def __init__(self, table: Directory) -> None:
        self._table = table
        self.sessions: Mapping[str, SessionEntry] = MappingProxyType(table.sessions)
        #: Sessions in use (their actor running), least recently used first.
        self.in_use: Mapping[str, SessionEntry] = MappingProxyType(table.in_use)

    @property
    def used(self) -> trio.Event:
        """Set when a session is first used after ``in_use`` was empty (the sweeper waits)."""
        return self._table.used

    @property
    def open_count(self) -> int:
        """How many sessions are not terminal."""
        return self._table.open_count

    def __len__(self) -> int:
        return len(self._table.sessions)

    def get(self, session_id: str) -> SessionEntry:
        """The entry of ``session_id``; raise ``NotFoundError`` if there is none."""
        return self._table.get(session_id)

    def live_created_by(self, agent_id: str) -> int:
        return self._table.live_created_by(agent_id)

    def of_agent(self, agent_id: str) -> list[SessionEntry]:
        return self._table.of_agent(agent_id)

    def select(
        self,
        *,
        agent_id: str | None = None,
        state: SessionState | None = None,
        include_terminal: bool = True,
        limit: int = 50,
    ) -> list[SessionMetadata]:
        return self._table.select(
            agent_id=agent_id, state=state, include_terminal=include_terminal, limit=limit
        )
