"""The rules every built-in session type shares, as a base class to build new types on.

Rules (reference §4.1, "common rule in all built-in adapters"):

- An event type *takes a turn* when it is in ``turn_events`` (``EV_TEXT`` unless a type says
  otherwise) and is not a protocol event. Only turn-taking envelopes reach the type's own
  hooks (``check_turn``, ``fold_turn``, ``turn_accepted``).
- Protocol events (handshake, lifecycle, task notices) are never validated and never change
  state, even when the hub hands them over by mistake.
- Every other substantive event type (``EV_EXPECTATION_VIOLATED``, user types, …) is accepted
  as informational data: no validation, no state change, no transition — unless the type
  lists the ones it takes in ``other_events`` (then any other is refused).
- A terminal session has no next turn.
- Views show ``EV_TEXT`` text and nothing else.
- States are frozen attrs records. ``dump_state`` writes records as dicts (keyed by their
  ``__init__`` names), tuples as lists and enums as their values; ``load_state`` passes the
  data back to the constructor, so a field whose JSON form differs from its value (a tuple, an
  enum, a nested record) carries an attrs ``converter`` that rebuilds it (``converter=tuple``,
  ``converter=MyEnum``). No codec is involved: snapshots stay independent of the wire format.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Collection
from typing import Any, ClassVar, Generic, TypeVar

import attrs

from .._errors import DecodeError, ProtocolError
from ..model import EV_TEXT, Envelope, Expectation, ParticipantRole, SessionMetadata
from ..model import is_protocol_event as _is_protocol_event
from ._base import ExpectedTurn, Transition, ViewPolicy
from ._views import FullTranscript

#: A state: a frozen attrs record.
S = TypeVar("S", bound=attrs.AttrsInstance)


class BaseSessionType(abc.ABC, Generic[S]):
    """A session type with the common rules built in; subclasses supply the turn rules.

    Set ``name``, ``state_type`` and (when they differ from the defaults) ``version``,
    ``min_participants``, ``max_participants``, ``other_role``, ``known_knobs``,
    ``turn_events``, ``other_events`` and ``declared_expectations``; implement ``initial_state`` and
    ``fold_turn``; override ``check_turn``, ``turn_accepted``, ``next_turn`` and
    ``default_view_policy`` as needed.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    #: The frozen attrs class of this type's state (used by ``load_state``).
    state_type: ClassVar[type[Any]]
    min_participants: ClassVar[int] = 2
    #: ``None`` = no upper bound.
    max_participants: ClassVar[int | None] = None
    #: The role every participant but the initiator must hold (``None`` = any role).
    other_role: ClassVar[ParticipantRole | None] = None
    #: Knob names this type reads; any other knob is refused at creation (catches typos).
    known_knobs: ClassVar[frozenset[str]] = frozenset()
    #: Event types that take a turn; all other substantive types are informational.
    turn_events: ClassVar[frozenset[str]] = frozenset({EV_TEXT})
    #: The informational event types this type accepts besides its turns (``None``: any).
    other_events: ClassVar[frozenset[str] | None] = None
    #: The timed expectations of every session of this type (see ``expectations``).
    declared_expectations: ClassVar[tuple[Expectation, ...]] = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}@v{self.version}>"

    @property
    def expectations(self) -> tuple[Expectation, ...]:
        """Copies of ``declared_expectations``, for one session to snapshot.

        Returns:
            Fresh records: ``params`` dicts are never shared between sessions.
        """
        return tuple(attrs.evolve(e, params=dict(e.params)) for e in self.declared_expectations)

    def takes_turn(self, event_type: str) -> bool:
        """Whether ``event_type`` is one this type validates and folds.

        Args:
            event_type: The envelope's event type.

        Returns:
            True for turn events that are not protocol events.
        """
        return event_type in self.turn_events and not _is_protocol_event(event_type)

    def validate_create(self, metadata: SessionMetadata) -> None:
        """Check the participant count, the roles and the knobs against the class settings.

        Args:
            metadata: The session about to be created.

        Raises:
            ProtocolError: Naming the rule broken and the ids involved.
        """
        check_participants(
            metadata,
            type_name=self.name,
            minimum=self.min_participants,
            maximum=self.max_participants,
            other_role=self.other_role,
        )
        check_knobs(metadata, type_name=self.name, known=self.known_knobs)

    @abc.abstractmethod
    def initial_state(self, metadata: SessionMetadata) -> S:
        """The state of a session before its first envelope.

        Args:
            metadata: The session's metadata.

        Returns:
            A fresh state.
        """

    def validate_send(self, metadata: SessionMetadata, envelope: Envelope, state: S) -> None:
        """Refuse a turn the rules do not allow; let everything else through.

        Args:
            metadata: The session's metadata.
            envelope: The envelope being posted.
            state: The state before ``envelope``.

        Raises:
            ProtocolError: From ``check_turn``, for a turn out of order; for an event type
                outside ``turn_events`` and ``other_events`` when the latter is set.
        """
        kind = envelope.event_type
        if self.takes_turn(kind):
            self.check_turn(metadata, envelope, state)
        elif (
            self.other_events is not None
            and kind not in self.other_events
            and not _is_protocol_event(kind)
        ):
            raise ProtocolError(
                f"{self.name} {metadata.session_id} does not take {kind} envelopes"
                f" (from {envelope.sender_id})"
            )

    def fold(self, envelope: Envelope, state: S) -> S:
        """The state after ``envelope``: turns go to ``fold_turn``, the rest change nothing.

        Args:
            envelope: An accepted envelope.
            state: The state before it.

        Returns:
            The state after it.
        """
        if self.takes_turn(envelope.event_type):
            return self.fold_turn(envelope, state)
        return state

    def on_accepted(
        self, metadata: SessionMetadata, envelope: Envelope, state: S
    ) -> Transition | None:
        """The lifecycle move an accepted turn causes, from ``turn_accepted``.

        Args:
            metadata: The session's metadata.
            envelope: The accepted envelope.
            state: The state after it.

        Returns:
            A transition, or ``None`` to stay.
        """
        if self.takes_turn(envelope.event_type):
            return self.turn_accepted(metadata, envelope, state)
        return None

    def expected_next(self, metadata: SessionMetadata, state: S) -> ExpectedTurn | None:
        """Whose turn it is, from ``next_turn``; nobody's once the session is over.

        Args:
            metadata: The session's metadata.
            state: The current state.

        Returns:
            The expected turn, or ``None``.
        """
        if metadata.is_terminal():
            return None
        return self.next_turn(metadata, state)

    def check_turn(self, metadata: SessionMetadata, envelope: Envelope, state: S) -> None:
        """Raise ProtocolError if this turn may not be taken now (every turn is allowed here).

        Args:
            metadata: The session's metadata.
            envelope: A turn-taking envelope.
            state: The state before it.
        """

    @abc.abstractmethod
    def fold_turn(self, envelope: Envelope, state: S) -> S:
        """The state after a turn; must leave it unchanged for senders it does not know.

        Args:
            envelope: An accepted turn-taking envelope.
            state: The state before it.

        Returns:
            The state after it.
        """

    def turn_accepted(
        self, metadata: SessionMetadata, envelope: Envelope, state: S
    ) -> Transition | None:
        """The lifecycle move an accepted turn causes (none here).

        Args:
            metadata: The session's metadata.
            envelope: The accepted turn.
            state: The state after it.

        Returns:
            ``None``.
        """
        return None

    def next_turn(self, metadata: SessionMetadata, state: S) -> ExpectedTurn | None:
        """Whose turn it is in a live session (anyone's, i.e. ``None``, here).

        Args:
            metadata: The session's metadata.
            state: The current state.

        Returns:
            ``None``.
        """
        return None

    def default_view_policy(self, metadata: SessionMetadata, participant_id: str) -> ViewPolicy:
        """The view a participant's turn handler uses by default: the full transcript.

        Args:
            metadata: The session's metadata.
            participant_id: Whose view.

        Returns:
            A view policy.
        """
        return FullTranscript()

    def render(self, envelope: Envelope) -> str | None:
        """The text of an ``EV_TEXT`` envelope; ``None`` for every other kind.

        Args:
            envelope: Any envelope of the session.

        Returns:
            The text, or ``None`` to leave the envelope out of views.
        """
        return envelope.text if envelope.event_type == EV_TEXT else None

    def dump_state(self, state: S) -> Any:
        """JSON data for a snapshot of ``state`` (see the module docstring).

        Args:
            state: A state of this type.

        Returns:
            A dict of JSON values.
        """
        return _to_json(state)

    def load_state(self, data: Any) -> S:
        """Rebuild a state from ``dump_state`` data.

        Args:
            data: What ``dump_state`` returned (possibly after a JSON round trip).

        Returns:
            An equal state.

        Raises:
            DecodeError: When ``data`` does not fit ``state_type``.
        """
        record = self.state_type.__name__
        if not isinstance(data, dict):
            raise DecodeError(
                f"{record} must be a JSON object, got {type(data).__name__}", record=record
            )
        try:
            state: S = self.state_type(**data)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"{record} does not fit {data!r}: {exc}", record=record) from exc
        return state


def _to_json(value: Any) -> Any:
    """The JSON form of a state value: records as dicts, tuples as lists, enums as values.

    Args:
        value: A state, or any value inside one.

    Returns:
        Plain JSON data (dicts, lists, strings, numbers, booleans, ``None``).
    """
    if attrs.has(type(value)):
        return {f.alias: _to_json(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, tuple | list):
        return [_to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    if isinstance(value, enum.Enum):
        return value.value
    return value


def check_participants(
    metadata: SessionMetadata,
    *,
    type_name: str,
    minimum: int,
    maximum: int | None,
    other_role: ParticipantRole | None,
) -> None:
    """Check a session's participant list: count, unique ids, the creator as sole initiator.

    Args:
        metadata: The session about to be created.
        type_name: The session type's name, for messages.
        minimum: The fewest participants allowed.
        maximum: The most allowed (``None`` = no bound).
        other_role: The role every non-initiator must hold (``None`` = any).

    Raises:
        ProtocolError: Naming the rule broken and the ids involved.
    """
    where = f"{type_name} {metadata.session_id}"
    ids = metadata.participant_ids()
    count = len(ids)
    if maximum == minimum and count != minimum:
        raise ProtocolError(f"{where} needs exactly {minimum} participants, got {count}")
    if count < minimum:
        raise ProtocolError(f"{where} needs at least {minimum} participants, got {count}")
    if maximum is not None and count > maximum:
        raise ProtocolError(f"{where} allows at most {maximum} participants, got {count}")
    seen: set[str] = set()
    for agent_id in ids:
        if agent_id in seen:
            raise ProtocolError(f"{where} lists participant {agent_id} twice")
        seen.add(agent_id)
    initiators = [p.agent_id for p in metadata.participants if p.role is ParticipantRole.INITIATOR]
    if initiators != [metadata.creator_id]:
        raise ProtocolError(
            f"{where} needs its creator {metadata.creator_id} as the one initiator,"
            f" got initiators {initiators}"
        )
    if other_role is None:
        return
    for p in metadata.participants:
        if p.role is not other_role and p.role is not ParticipantRole.INITIATOR:
            raise ProtocolError(
                f"{where} needs a {other_role.value}, but {p.agent_id} has role {p.role.value}"
            )


def check_knobs(metadata: SessionMetadata, *, type_name: str, known: Collection[str]) -> None:
    """Refuse knobs a session type does not read.

    Args:
        metadata: The session about to be created.
        type_name: The session type's name, for messages.
        known: The knob names the type reads.

    Raises:
        ProtocolError: Naming the unknown knobs.
    """
    unknown = sorted(set(metadata.knobs) - set(known))
    if unknown:
        raise ProtocolError(
            f"{type_name} {metadata.session_id} does not take knob(s) {', '.join(unknown)}"
        )
