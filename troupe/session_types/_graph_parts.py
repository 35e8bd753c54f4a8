"""The vocabulary of workflow graphs: conditions, targets and what they decide (§4.5).

Rules:

- Conditions see the turn and the state after it: ``Always()``, ``FromSpeaker(agent_id)``,
  ``ToolCalled(tool_name)`` (a packet whose ``routing.tool`` is that name; never a text),
  ``ContextEquals(key, value)`` (a context variable, after the turn's updates).
- Targets resolve to a ``Decision``: ``AgentTarget(agent_id)``; ``RoundRobinTarget()`` (the
  participant after the last speaker, wrapping, skipping removed ones; nobody left: no
  speaker, reason ``no_participants``); ``StayTarget()`` (the last speaker again);
  ``RevertToInitiatorTarget()`` (the creator); ``TerminateTarget(reason)`` (no speaker: the
  session closes with ``reason``, or ``workflow_terminated`` when it is empty).
- Each class's ``name`` is its serialised name (the keys of ``CONDITIONS`` and ``TARGETS``)
  and its attrs fields are its ``args``.
- Pure: nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol

import attrs

from ._stalls import pass_floor

_is_str = attrs.validators.instance_of(str)


class GraphView(Protocol):
    """What conditions and targets read of a workflow's state (after the turn)."""

    @property
    def participant_order(self) -> tuple[str, ...]: ...

    @property
    def creator_id(self) -> str: ...

    @property
    def last_speaker_id(self) -> str | None: ...

    @property
    def context_vars(self) -> Mapping[str, Any]: ...

    @property
    def removed(self) -> tuple[str, ...]: ...


@attrs.frozen
class Decision:
    """Who speaks next (``None``: nobody, the session closes with ``close_reason``)."""

    next_speaker: str | None
    close_reason: str = ""


# -- conditions ------------------------------------------------------------------------------


@attrs.frozen
class Always:
    """Holds for every turn."""

    name: ClassVar[str] = "always"

    def holds(self, view: GraphView, sender_id: str, tool: str | None) -> bool:
        return True


@attrs.frozen
class FromSpeaker:
    """Holds when ``agent_id`` took the turn."""

    name: ClassVar[str] = "from_speaker"
    agent_id: str = attrs.field(validator=_is_str)

    def holds(self, view: GraphView, sender_id: str, tool: str | None) -> bool:
        return sender_id == self.agent_id


@attrs.frozen
class ToolCalled:
    """Holds when the turn was a packet routed through the tool ``tool_name``."""

    name: ClassVar[str] = "tool_called"
    tool_name: str = attrs.field(validator=_is_str)

    def holds(self, view: GraphView, sender_id: str, tool: str | None) -> bool:
        return tool == self.tool_name


@attrs.frozen
class ContextEquals:
    """Holds when context variable ``key`` equals ``value`` (after the turn's updates)."""

    name: ClassVar[str] = "context_equals"
    key: str = attrs.field(validator=_is_str)
    value: Any = None

    def holds(self, view: GraphView, sender_id: str, tool: str | None) -> bool:
        return self.key in view.context_vars and view.context_vars[self.key] == self.value


Condition = Always | FromSpeaker | ToolCalled | ContextEquals

# -- targets ---------------------------------------------------------------------------------


@attrs.frozen
class AgentTarget:
    """The floor goes to ``agent_id``."""

    name: ClassVar[str] = "agent"
    agent_id: str = attrs.field(validator=_is_str)

    def resolve(self, view: GraphView) -> Decision:
        return Decision(self.agent_id)


@attrs.frozen
class RoundRobinTarget:
    """The floor goes to the participant after the last speaker, wrapping round."""

    name: ClassVar[str] = "round_robin"

    def resolve(self, view: GraphView) -> Decision:
        after = pass_floor(view.participant_order, view.last_speaker_id, view.removed)
        return Decision(after, "" if after is not None else "no_participants")


@attrs.frozen
class StayTarget:
    """The last speaker keeps the floor."""

    name: ClassVar[str] = "stay"

    def resolve(self, view: GraphView) -> Decision:
        return Decision(view.last_speaker_id)


@attrs.frozen
class RevertToInitiatorTarget:
    """The floor goes back to the session's creator."""

    name: ClassVar[str] = "revert_to_initiator"

    def resolve(self, view: GraphView) -> Decision:
        return Decision(view.creator_id)


@attrs.frozen
class TerminateTarget:
    """Nobody speaks next: the session closes with ``reason`` (``workflow_terminated``)."""

    name: ClassVar[str] = "terminate"
    reason: str = attrs.field(default="", validator=_is_str)

    def resolve(self, view: GraphView) -> Decision:
        return Decision(None, self.reason)


Target = AgentTarget | RoundRobinTarget | StayTarget | RevertToInitiatorTarget | TerminateTarget

#: Serialised name -> condition class.
CONDITIONS: Final[dict[str, type[Condition]]] = {
    c.name: c for c in (Always, FromSpeaker, ToolCalled, ContextEquals)
}
#: Serialised name -> target class.
TARGETS: Final[dict[str, type[Target]]] = {
    t.name: t
    for t in (AgentTarget, RoundRobinTarget, StayTarget, RevertToInitiatorTarget, TerminateTarget)
}
