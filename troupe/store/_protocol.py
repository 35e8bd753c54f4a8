"""The ``Store`` protocol: everything troupe keeps, behind one async interface.

Only actors touch a store (the hub actor, session actors, client actors). Two engines
implement it: ``MemoryStore`` (tests, simulations) and ``SQLiteStore`` (the embedded default).

Contract every engine keeps:

- A store is an async context manager and must be entered before use; it may be entered
  again after it was left (a hub restart on the same store).
- A write returns only once it is durable for that engine (SQLite: committed). Anything a
  write returned for is visible to every later read.
- ``append`` is all-or-nothing: the envelopes, their idempotency keys and the optional
  metadata are written together or not at all. Their ``seq`` must continue the session's WAL
  with no gap and no repeat (``last_seq + 1, last_seq + 2, …``), else :class:`StoreError` and
  nothing is written.
- Reads return records equal to what was written (``structure(unstructure(x)) == x``).
- Failures raise :class:`troupe.StoreError` (or a subclass) naming the session/agent/file.
- Agent names are unique by the store's own constraint: ``save_agent`` of a name another
  agent holds raises :class:`troupe.NameTaken`, however many hubs write to the store.
- The change feed (for a cluster's nodes, issue 16): every write of an agent or a task gets
  the next value of one store-wide counter, and an agent's removal leaves a tombstone with
  one. Values become visible in order (a write that took ``n`` is visible no later than one
  that took ``n + 1``), so :meth:`Store.changes` with the counter a reader last saw misses
  nothing. A terminal task never changes again (:meth:`Store.save_open_task`): of two
  conditional terminal updates, the first to commit wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import attrs

from ..model import Envelope, Passport, Resume, Rule, SessionMetadata, TaskMetadata


def answer_prefix(sender_id: str, causation_id: str) -> str:
    """The start of every :func:`dedup_keys` key of ``sender_id``'s answers to a trigger."""
    return f"c:{sender_id}|{causation_id}|"


#: How a :func:`dedup_keys` key of an idempotency key starts.
KEY_PREFIX = "k:"


def dedup_keys(envelope: Envelope) -> list[str]:
    """The keys under which a session remembers an accepted envelope, to refuse repeats.

    ``"k:<idempotency_key>"`` when the sender gave one, and ``"c:<sender>|<causation>|<type>"``
    when it answers a trigger (:func:`answer_key`): the same sender answering the same
    envelope with the same kind of event again is a retry, not a new message.
    """
    keys = []
    if envelope.idempotency_key:
        keys.append(KEY_PREFIX + envelope.idempotency_key)
    answer = answer_key(envelope)
    if answer is not None:
        keys.append(answer)
    return keys


def answer_key(envelope: Envelope) -> str | None:
    """The :func:`dedup_keys` key of an answer to a trigger (None: it answers none).

    What a store keeps in its table of dedup keys: an idempotency key is kept once, in the
    WAL's own index of them, which refuses a second envelope under it (a second copy of every
    key in the dedup table, and its index by seq, made a post with a key write two more
    pages per session per commit: about 35% of a commit's CPU through ``troupe serve``, where
    every post has a key).
    """
    if not envelope.causation_id:
        return None
    return answer_prefix(envelope.sender_id, envelope.causation_id) + envelope.event_type


@attrs.frozen(kw_only=True)
class AgentRecord:
    """One registered agent as the store keeps it."""

    passport: Passport
    resume: Resume
    rule: Rule
    skill_md: str | None = None


@attrs.frozen(kw_only=True)
class Snapshot:
    """A session-type state saved after envelope ``seq`` (JSON data, opaque to the store)."""

    seq: int
    state: Any


@attrs.frozen(kw_only=True)
class Changes:
    """What :meth:`Store.changes` found: the records written after change ``since``.

    ``version`` is the store's change counter when the read began: pass it as the next
    ``since``. A record written after that may be here too (and comes again next time).
    """

    version: int
    #: Agents saved (registered or changed) since, oldest change first.
    agents: tuple[AgentRecord, ...] = ()
    #: Ids of agents deleted since (and not saved again).
    removed: tuple[str, ...] = ()
    #: Tasks saved since, oldest change first.
    tasks: tuple[TaskMetadata, ...] = ()


class Store(Protocol):
    """Durable state of a hub: registry, sessions and their WALs, tasks, cursors, audit."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    # -- registry ----------------------------------------------------------------------------

    async def save_agent(self, record: AgentRecord) -> None:
        """Insert or replace an agent (passport, resume, rule, skill) in one write.

        Also replaces the agent's rows in the capability index (claimed and observed).

        Raises:
          NameTaken: another agent holds the name (nothing written).
        """
        ...

    async def save_resume(self, agent_id: str, resume: Resume) -> None:
        """Replace an agent's resume and its capability-index rows. StoreError if unknown."""
        ...

    async def save_rule(self, agent_id: str, rule: Rule) -> None: ...

    async def save_skill(self, agent_id: str, skill_md: str | None) -> None:
        """Set (or with ``None`` remove) an agent's SKILL.md."""
        ...

    async def delete_agent(self, agent_id: str) -> None:
        """Forget an agent: passport, resume, rule, skill, capability rows and cursors.

        Its sessions, WAL entries and tasks are kept (they are history).
        """
        ...

    async def load_agents(self) -> list[AgentRecord]:
        """Every registered agent, in registration order."""
        ...

    async def agents_with_capability(self, capability: str) -> list[str]:
        """Sorted ids of agents whose resume claims or has observed ``capability``."""
        ...

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        """One agent by id, or None."""
        ...

    async def get_agent_named(self, name: str) -> AgentRecord | None:
        """The agent holding ``name``, or None."""
        ...

    # -- the change feed (module rules) ------------------------------------------------------

    async def last_change(self) -> int:
        """The change counter now (0 for a store nothing was written to since it had one)."""
        ...

    async def changes(self, since: int) -> Changes:
        """The agents and tasks saved, and the agents deleted, after change ``since``."""
        ...

    # -- sessions and the WAL --------------------------------------------------------------

    async def save_session(self, metadata: SessionMetadata) -> None:
        """Insert or replace a session's metadata."""
        ...

    async def load_sessions(self) -> list[SessionMetadata]:
        """Every session's metadata, in creation order."""
        ...

    async def get_session(self, session_id: str) -> SessionMetadata | None: ...

    async def append(
        self,
        session_id: str,
        envelopes: Sequence[Envelope],
        *,
        metadata: SessionMetadata | None = None,
    ) -> None:
        """Durably append stamped envelopes to a session's WAL (see the module rules).

        Records each envelope's ``idempotency_key`` (when set) for :meth:`find_idempotent`.
        With ``metadata``, saves it in the same transaction (a close envelope and the CLOSED
        metadata land together or not at all).
        """
        ...

    async def read(
        self, session_id: str, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        """The envelopes with ``since < seq <= until`` (no upper bound for ``None``), in order.

        An unknown session reads as empty.
        """
        ...

    async def last_seq(self, session_id: str) -> int:
        """The highest ``seq`` in the session's WAL, 0 when empty or unknown."""
        ...

    async def find_idempotent(self, session_id: str, key: str) -> Envelope | None:
        """The envelope this session accepted with ``idempotency_key == key``, if any."""
        ...

    async def load_dedup(self, session_id: str) -> dict[str, tuple[str, int]]:
        """``{key: (envelope_id, seq)}`` for every :func:`dedup_keys` key of the session's WAL
        (idempotency keys included).

        Every key the session has, so O(its history): the hub itself uses
        :meth:`recent_dedup` (a bounded window) and :meth:`find_dedup` (one key) instead.
        """
        ...

    async def find_dedup(self, session_id: str, keys: Sequence[str]) -> tuple[str, int] | None:
        """``(envelope_id, seq)`` of the first of ``keys`` (:func:`dedup_keys`) the session
        has, or None: one indexed lookup, however long the session's history is.

        The first envelope accepted under a key is the one it names.
        """
        ...

    async def find_answer(
        self, session_id: str, sender_id: str, causation_id: str
    ) -> tuple[str, int] | None:
        """``(envelope_id, seq)`` of the first envelope ``sender_id`` posted in answer to
        ``causation_id`` (any event type), or None: from the same index as :meth:`find_dedup`.
        """
        ...

    async def recent_dedup(self, session_id: str, limit: int) -> list[tuple[str, str, int]]:
        """``(key, envelope_id, seq)`` of the session's ``limit`` latest answer keys
        (:func:`answer_key`, by seq), oldest first: what a (re)started session keeps in
        memory, without loading the rest.

        Not its idempotency keys (:meth:`idempotency_keys`). (A store written by an earlier
        troupe may return some: it kept them in its dedup table too.)
        """
        ...

    async def idempotency_keys(
        self, session_id: str, since: int
    ) -> tuple[list[tuple[str, str, int]], bool]:
        """``(key, envelope_id, seq)`` (``key`` as :func:`dedup_keys` makes it) of every
        envelope after seq ``since`` that has an idempotency key, oldest first; and whether
        one at or before ``since`` has one: what a (re)started session keeps in memory of
        them, besides :meth:`recent_dedup`'s answers.

        The store keeps an idempotency key once, with its envelope (:meth:`find_dedup`
        finds one; :meth:`append` refuses one taken with :class:`DuplicateKey`). Both
        answers cost at most the envelopes after ``since``, however long the session.
        """
        ...

    async def save_snapshot(self, session_id: str, seq: int, state: Any) -> None:
        """Keep ``state`` (JSON data) as the session-type state after envelope ``seq``.

        Only the latest snapshot per session is kept.
        """
        ...

    async def load_snapshot(self, session_id: str) -> Snapshot | None: ...

    # -- tasks -----------------------------------------------------------------------------

    async def save_task(self, task: TaskMetadata) -> None:
        """Insert or replace a task, whatever the stored one's state."""
        ...

    async def save_open_task(self, task: TaskMetadata) -> TaskMetadata | None:
        """Insert or replace a task unless the stored one is terminal: conditional in the
        store, so of two nodes ending one task the first to commit wins.

        Returns:
          None when ``task`` was written; else the stored terminal task (nothing written).
        """
        ...

    async def get_task(self, task_id: str) -> TaskMetadata | None:
        """One task by id, or None."""
        ...

    async def load_tasks(self) -> list[TaskMetadata]:
        """Every task, in the order they were first saved."""
        ...

    async def save_checkpoint(self, task_id: str, data: dict[str, Any]) -> None:
        """Last write wins."""
        ...

    async def load_checkpoint(self, task_id: str) -> dict[str, Any] | None: ...

    # -- delivery cursors ------------------------------------------------------------------

    async def save_cursors(self, cursors: Sequence[tuple[str, str, int]]) -> None:
        """Record, for each ``(agent_id, session_id, seq)``, that the agent acked the session
        up to ``seq``, all in one write (a connection saves what was acked since its last
        save at once); a cursor never moves back."""
        ...

    async def load_cursors(self, agent_id: str) -> dict[str, int]:
        """``{session_id: last acked seq}`` for one agent."""
        ...

    # -- small keyed records (expectation and observation dedup, hub bookkeeping) ----------

    async def put_kv(self, namespace: str, key: str, value: Any) -> None:
        """Insert or replace a JSON value under ``(namespace, key)``."""
        ...

    async def load_kv(self, namespace: str) -> dict[str, Any]: ...

    async def delete_kv(self, namespace: str, key: str | None = None) -> None:
        """Delete one key, or with ``None`` the whole namespace."""
        ...

    # -- audit -----------------------------------------------------------------------------

    async def append_audit(self, records: Sequence[dict[str, Any]]) -> None:
        """Append audit records (JSON objects with at least ``at`` and ``kind``)."""
        ...

    async def read_audit(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit records after the first ``since`` ones, oldest first."""
        ...
