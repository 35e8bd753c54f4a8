"""The session-type contract: the rules of one kind of session, as a pure state machine.

Rules every session type keeps (the hub relies on them):

- Pure and deterministic: ``fold`` and the decisions depend only on their arguments (no
  clock, no randomness, no I/O), so a session refolded from its WAL equals the one that ran.
- ``fold`` tolerates anything: unknown senders and event types leave the state unchanged.
- Protocol events (``is_protocol_event``: handshake, lifecycle, task notices) never reach
  ``validate_send`` and never change state; other non-turn event types are accepted as
  informational data unless the type says otherwise.
- ``validate_send`` raises :class:`ProtocolError` naming the rule and the ids involved, and is
  O(1): it runs for every post, inside the session actor.
- States are immutable (frozen attrs records); ``dump_state`` / ``load_state`` turn them into
  JSON data and back (for snapshots), with ``load_state(dump_state(s)) == s``.

This package never imports trio.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, TypeVar

import attrs

from ..model import Envelope, Expectation, SessionMetadata, SessionState

S = TypeVar("S")


@attrs.frozen(kw_only=True)
class Transition:
    """What ``on_accepted`` asks of the hub: move the session to ``state`` with ``reason``."""

    state: SessionState
    reason: str = ""


@attrs.frozen(kw_only=True)
class ExpectedTurn:
    """Who should act next in a session, and the envelope that gave them the floor."""

    agent_id: str
    triggering_envelope_id: str | None = None


@attrs.frozen(kw_only=True)
class HistoryItem:
    """One line of a participant's view of a session (what an LLM would be shown).

    ``role`` is ``"assistant"`` for the participant's own envelopes, ``"user"`` for others',
    ``"system"`` for summaries the view adds.
    """

    role: Literal["user", "assistant", "system"]
    content: str
    sender_id: str = ""
    envelope_id: str = ""


#: Turns an envelope into the text a view shows, or ``None`` to leave it out.
Render = Callable[[Envelope], str | None]
#: Turns an agent id into a display name.
NameFor = Callable[[str], str]


class ViewPolicy(Protocol):
    """Projects a session's WAL into one participant's history (reference §2.10)."""

    @property
    def name(self) -> str: ...

    def project(
        self,
        wal: Sequence[Envelope],
        *,
        participant_id: str,
        render: Render,
        name_for: NameFor,
    ) -> list[HistoryItem]: ...


class SessionType(Protocol[S]):
    """The rules of one kind of session; see the module docstring for the contract."""

    @property
    def name(self) -> str:
        """The ``manifest_type`` this type answers to, e.g. ``"consulting"``."""
        ...

    @property
    def version(self) -> int: ...

    @property
    def expectations(self) -> tuple[Expectation, ...]:
        """Timed expectations every session of this type carries (snapshotted at creation)."""
        ...

    def validate_create(self, metadata: SessionMetadata) -> None:
        """Raise ProtocolError if the participants or knobs do not fit this type."""
        ...

    def initial_state(self, metadata: SessionMetadata) -> S: ...

    def validate_send(self, metadata: SessionMetadata, envelope: Envelope, state: S) -> None:
        """Raise ProtocolError if ``envelope`` may not be posted now (not called for protocol
        events)."""
        ...

    def fold(self, envelope: Envelope, state: S) -> S:
        """The state after ``envelope`` was accepted."""
        ...

    def on_accepted(
        self, metadata: SessionMetadata, envelope: Envelope, state: S
    ) -> Transition | None:
        """A lifecycle move the accepted ``envelope`` causes (e.g. close when complete)."""
        ...

    def expected_next(self, metadata: SessionMetadata, state: S) -> ExpectedTurn | None:
        """Whose turn it is, or ``None`` when anyone (or no one) may speak."""
        ...

    def default_view_policy(self, metadata: SessionMetadata, participant_id: str) -> ViewPolicy: ...

    def render(self, envelope: Envelope) -> str | None:
        """The text of ``envelope`` for views and turn input, or ``None`` to skip it."""
        ...

    def dump_state(self, state: S) -> Any:
        """JSON data for a snapshot."""
        ...

    def load_state(self, data: Any) -> S: ...


AnySessionType = SessionType[Any]
