"""The workflow graph: who speaks after each turn, as serialisable data (reference §4.5).

Rules:

- After each turn the graph decides the next speaker: its transitions in ascending
  ``priority`` (ties keep their order); the first whose condition holds resolves its target;
  when none holds, ``default_target`` does.
- Conditions and targets: ``_graph_parts``.
- Serialised form: ``{"initial_speaker", "transitions": [{"when": {"name", "args"},
  "then": {"name", "args"}, "priority"}], "default_target": {"name", "args"},
  "max_turns"}``; ``from_dict(to_dict(g)) == g``. The names are the keys of ``CONDITIONS``
  and ``TARGETS``; a graph naming any other raises ``WorkflowGraphError`` naming every
  unknown one, as does any other shape error.
- Pure: nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from .._errors import WorkflowGraphError
from ._graph_parts import (
    CONDITIONS,
    TARGETS,
    AgentTarget,
    Always,
    Condition,
    Decision,
    FromSpeaker,
    GraphView,
    RoundRobinTarget,
    Target,
    TerminateTarget,
)
from ._packet import read_object

_is_str = attrs.validators.instance_of(str)


def _part_json(part: Condition | Target) -> dict[str, Any]:
    return {"name": part.name, "args": attrs.asdict(part)}


@attrs.frozen
class Transition:
    """When ``when`` holds after a turn, ``then`` picks the next speaker; low ``priority`` first."""

    when: Condition
    then: Target
    priority: int = attrs.field(default=0, validator=attrs.validators.instance_of(int))

    def to_dict(self) -> dict[str, Any]:
        """The serialised form of this transition.

        Returns:
            JSON data.
        """
        return {
            "when": _part_json(self.when),
            "then": _part_json(self.then),
            "priority": self.priority,
        }


def _transitions(items: Iterable[Transition]) -> tuple[Transition, ...]:
    return tuple(items)


def _check_max_turns(_inst: object, _attr: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise WorkflowGraphError(f"workflow graph max_turns must be a positive int, got {value!r}")


@attrs.frozen
class TransitionGraph:
    """A workflow's rules of succession; see the module docstring."""

    initial_speaker: str = attrs.field(validator=_is_str)
    transitions: tuple[Transition, ...] = attrs.field(default=(), converter=_transitions)
    default_target: Target = attrs.field(factory=TerminateTarget)
    max_turns: int | None = attrs.field(default=None, validator=_check_max_turns)

    def decide(self, view: GraphView, sender_id: str, tool: str | None) -> Decision:
        """Who speaks after ``sender_id``'s turn.

        Args:
            view: The workflow's state after the turn.
            sender_id: Who took the turn.
            tool: The packet's ``routing.tool`` (``None`` for a text).

        Returns:
            The decision of the first transition that holds, else of ``default_target``.
        """
        for transition in sorted(self.transitions, key=lambda t: t.priority):
            if transition.when.holds(view, sender_id, tool):
                return transition.then.resolve(view)
        return self.default_target.resolve(view)

    def agent_ids(self) -> set[str]:
        """Every agent id the graph names (initial speaker, ``FromSpeaker``, ``AgentTarget``).

        Returns:
            A new set.
        """
        ids = {self.initial_speaker}
        parts: list[Condition | Target] = [self.default_target]
        for t in self.transitions:
            parts += [t.when, t.then]
        ids.update(p.agent_id for p in parts if isinstance(p, FromSpeaker | AgentTarget))
        return ids

    def to_dict(self) -> dict[str, Any]:
        """The serialised form (see the module docstring).

        Returns:
            JSON data that ``from_dict`` reads back equal.
        """
        return {
            "initial_speaker": self.initial_speaker,
            "transitions": [t.to_dict() for t in self.transitions],
            "default_target": _part_json(self.default_target),
            "max_turns": self.max_turns,
        }

    def dumps(self) -> str:
        """The serialised form as a JSON string (keys sorted).

        Returns:
            JSON text.
        """
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransitionGraph:
        """Read a graph from its serialised form.

        Args:
            data: What ``to_dict`` wrote (or an equal JSON object).

        Returns:
            The graph.

        Raises:
            WorkflowGraphError: Naming every unknown condition and target, or the part of
                the data that does not fit.
        """
        return _read_graph(data)

    @classmethod
    def loads(cls, data: str | Mapping[str, Any]) -> TransitionGraph:
        """Read a graph from JSON text or from its serialised dict.

        Args:
            data: What ``dumps`` or ``to_dict`` wrote.

        Returns:
            The graph.

        Raises:
            WorkflowGraphError: As ``from_dict``; also for text that is not JSON.
        """
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise WorkflowGraphError(f"workflow graph is not JSON: {exc}") from exc
        return _read_graph(data)


# -- reading the serialised form -------------------------------------------------------------

_GRAPH_KEYS: Final = frozenset({"initial_speaker", "transitions", "default_target", "max_turns"})
_TRANSITION_KEYS: Final = frozenset({"when", "then", "priority"})


def _mapping(data: object, what: str, keys: Collection[str]) -> Mapping[str, Any]:
    return read_object(data, what, keys, error=WorkflowGraphError)


def _names(parts: Iterable[object], table: Mapping[str, object]) -> list[str]:
    """The names in ``parts`` (serialised conditions or targets) that ``table`` lacks."""
    unknown: list[str] = []
    for part in parts:
        name = part.get("name") if isinstance(part, Mapping) else None
        if name not in table and repr(name) not in unknown:
            unknown.append(repr(name))
    return unknown


def _build(data: object, table: Mapping[str, type[Any]], what: str) -> Any:
    obj = _mapping(data, what, ("name", "args"))
    args = obj.get("args", {})
    if not isinstance(args, Mapping):
        raise WorkflowGraphError(f"{what} {obj['name']!r} args must be an object")
    try:
        return table[obj["name"]](**args)
    except (TypeError, ValueError) as exc:
        raise WorkflowGraphError(
            f"{what} {obj['name']!r} does not take {dict(args)!r}: {exc}"
        ) from exc


def _read_graph(data: object) -> TransitionGraph:
    obj = _mapping(data, "workflow graph", _GRAPH_KEYS)
    if "initial_speaker" not in obj:
        raise WorkflowGraphError("workflow graph needs an initial_speaker")
    raw = obj.get("transitions", [])
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise WorkflowGraphError("workflow graph transitions must be a list")
    transitions = [_mapping(t, "workflow transition", _TRANSITION_KEYS) for t in raw]
    if any("when" not in t or "then" not in t for t in transitions):
        raise WorkflowGraphError("workflow transition needs when and then")
    default = obj.get("default_target", _part_json(TerminateTarget()))
    bad_conditions = _names((t.get("when") for t in transitions), CONDITIONS)
    bad_targets = _names([*(t.get("then") for t in transitions), default], TARGETS)
    if bad_conditions or bad_targets:
        found = []
        if bad_conditions:
            found.append(f"unknown condition(s) {', '.join(bad_conditions)}")
        if bad_targets:
            found.append(f"unknown target(s) {', '.join(bad_targets)}")
        known = f"conditions: {', '.join(CONDITIONS)}; targets: {', '.join(TARGETS)}"
        raise WorkflowGraphError(f"workflow graph names {' and '.join(found)} ({known})")
    try:
        return TransitionGraph(
            obj["initial_speaker"],
            [
                Transition(
                    _build(t["when"], CONDITIONS, "condition"),
                    _build(t["then"], TARGETS, "target"),
                    t.get("priority", 0),
                )
                for t in transitions
            ],
            _build(default, TARGETS, "target"),
            obj.get("max_turns"),
        )
    except TypeError as exc:
        raise WorkflowGraphError(f"workflow graph does not fit: {exc}") from exc


# -- factories -------------------------------------------------------------------------------


def round_robin(ids: Sequence[str], max_turns: int | None = None) -> TransitionGraph:
    """A graph where ``ids`` speak in turn, wrapping round, from the first.

    Args:
        ids: The speakers, in order (at least one).
        max_turns: Close the session (``max_turns``) after this many turns.

    Returns:
        The graph: one ``Always -> RoundRobinTarget`` transition.

    Raises:
        ValueError: For an empty ``ids``.
    """
    if not ids:
        raise ValueError("round_robin needs at least one speaker")
    return TransitionGraph(ids[0], [Transition(Always(), RoundRobinTarget())], max_turns=max_turns)


def sequence(ids: Sequence[str]) -> TransitionGraph:
    """A pipeline: each of ``ids`` speaks once, in order; then the session closes.

    Args:
        ids: The steps, in order (at least one).

    Returns:
        The graph: ``FromSpeaker(a) -> AgentTarget(b)`` for each neighbouring pair, at most
        ``len(ids)`` turns, and ``TerminateTarget("sequence_complete")`` by default.

    Raises:
        ValueError: For an empty ``ids``.
    """
    if not ids:
        raise ValueError("sequence needs at least one step")
    steps = [Transition(FromSpeaker(a), AgentTarget(b)) for a, b in itertools.pairwise(ids)]
    return TransitionGraph(ids[0], steps, TerminateTarget("sequence_complete"), len(ids))
