"""What an agent's ``respond`` may return in a workflow to hand the floor on.

``respond(turn)`` in a workflow session may return:

- ``None``: a silent round (nothing is posted);
- a ``str``: a packet with that body, routed by the graph (an empty string is silence);
- a ``Handoff(target, reason="", tool=None)``: a packet with no body that gives the floor to
  ``target`` (a participant's agent id; it wins over the graph), or, with only ``tool``,
  lets the graph's ``ToolCalled(tool)`` transitions decide;
- a ``Reply(text, handoff=None, context={}, delete_context=())``: the body, an optional
  handoff and context-variable updates, in one packet.

The workflow session type turns these into the ``EV_PACKET`` envelope its ``build_reply``
returns to the default turn handler.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..model._convert import to_tuple
from ._packet import ContextUpdate, Packet, Routing


def _needs_a_way(instance: Handoff, _attr: attrs.Attribute[str | None], _value: object) -> None:
    if instance.target is None and instance.tool is None:
        raise ValueError("a Handoff needs a target (an agent id) or a tool name")


@attrs.frozen
class Handoff:
    """Give the floor to ``target`` (an agent id), or route through ``tool``; say why."""

    target: str | None = attrs.field(default=None, validator=_needs_a_way)
    reason: str = ""
    tool: str | None = None


@attrs.frozen
class Reply:
    """A workflow answer: text, an optional handoff, and context variables to set/delete."""

    text: str = ""
    handoff: Handoff | None = None
    context: dict[str, Any] = attrs.field(factory=dict)
    delete_context: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)


def _routing(handoff: Handoff) -> Routing:
    return Routing(kind="handoff", target=handoff.target, tool=handoff.tool, reason=handoff.reason)


def reply_packet(reply: object) -> Packet | None:
    """The packet for what ``respond`` returned in a workflow.

    Args:
        reply: ``None``, a ``str``, a ``Handoff`` or a ``Reply``.

    Returns:
        The packet, or ``None`` for silence (``None``, ``""``, an empty ``Reply``).

    Raises:
        TypeError: For any other kind of reply.
    """
    match reply:
        case None:
            return None
        case str():
            packet = Packet(body=reply)
        case Handoff():
            packet = Packet(routing=_routing(reply))
        case Reply():
            update = ContextUpdate(values=dict(reply.context), delete=reply.delete_context)
            routing = _routing(reply.handoff) if reply.handoff is not None else Routing()
            packet = Packet(body=reply.text, routing=routing, update=update)
        case _:
            raise TypeError(
                f"respond() returned {type(reply).__name__}; a workflow session expects str,"
                " Handoff, Reply or None"
            )
    return None if packet == Packet() else packet
