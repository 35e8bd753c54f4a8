"""The payloads of a workflow session's ``EV_PACKET`` and ``EV_CONTEXT_SET`` (reference §2.6).

Rules:

- A packet is one agent round: ``{"body": str, "routing": {...}, "context_updates": {...}}``.
  Every part may be left out: no body, text routing, no updates.
- ``routing`` is ``{"kind": "text"}`` or ``{"kind": "handoff", "target"?, "tool"?,
  "reason"?}``; a handoff names a ``target`` (an agent id: it wins over the graph), a
  ``tool`` (for ``ToolCalled`` transitions), or both.
- Context updates (``context_updates`` of a packet, or the whole ``EV_CONTEXT_SET`` data) are
  ``{"set": {...}, "delete": [...]}``; deletes apply first, then sets.
- ``read_packet`` and ``read_context`` check the shape and raise ``ValueError`` naming the
  part that is wrong (session types turn it into ``ProtocolError``); unknown keys are wrong.
- Records here are frozen; ``to_json`` writes the canonical data, which reads back equal.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final, Literal

import attrs

from ..model._convert import to_tuple

_ROUTING_KEYS: Final = frozenset({"kind", "target", "tool", "reason"})
_PACKET_KEYS: Final = frozenset({"body", "routing", "context_updates"})
_CONTEXT_KEYS: Final = frozenset({"set", "delete"})


@attrs.frozen(kw_only=True)
class ContextUpdate:
    """Context variables to delete, then to set."""

    values: dict[str, Any] = attrs.field(factory=dict)
    delete: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)

    def apply(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The context after this update (``context`` itself is not changed).

        Args:
            context: The variables before.

        Returns:
            A new dict.
        """
        after = {k: v for k, v in context.items() if k not in self.delete}
        after.update(self.values)
        return after

    def to_json(self) -> dict[str, Any]:
        """The ``{"set", "delete"}`` data of this update.

        Returns:
            JSON data.
        """
        return {"set": dict(self.values), "delete": list(self.delete)}


@attrs.frozen(kw_only=True)
class Routing:
    """Where a packet sends the floor: by the graph (``text``) or by a handoff."""

    kind: Literal["text", "handoff"] = "text"
    target: str | None = None
    tool: str | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """The routing data, without the parts left unset.

        Returns:
            JSON data.
        """
        data: dict[str, Any] = {"kind": self.kind}
        if self.target is not None:
            data["target"] = self.target
        if self.tool is not None:
            data["tool"] = self.tool
        if self.reason:
            data["reason"] = self.reason
        return data


@attrs.frozen(kw_only=True)
class Packet:
    """One agent round of a workflow: what it said, where the floor goes, what it noted."""

    body: str = ""
    routing: Routing = Routing()
    update: ContextUpdate = ContextUpdate()

    def to_json(self) -> dict[str, Any]:
        """The ``EV_PACKET`` event data of this packet.

        Returns:
            JSON data that ``read_packet`` reads back equal.
        """
        return {
            "body": self.body,
            "routing": self.routing.to_json(),
            "context_updates": self.update.to_json(),
        }


def read_object(
    data: object, what: str, keys: Collection[str], *, error: type[Exception] = ValueError
) -> Mapping[str, Any]:
    """Check that ``data`` is a JSON object with no keys but ``keys``.

    Args:
        data: The JSON data.
        what: How messages name it.
        keys: The keys it may have.
        error: What to raise.

    Returns:
        ``data``.

    Raises:
        ValueError: (or ``error``) Naming what is wrong.
    """
    if not isinstance(data, Mapping):
        raise error(f"{what} must be an object, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in keys)
    if unknown:
        raise error(f"{what} has unknown key(s) {', '.join(unknown)}")
    return data


def _optional_str(data: Mapping[str, Any], key: str, what: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{what}.{key} must be a string, got {type(value).__name__}")
    return value


def read_context(data: object, what: str = "context update") -> ContextUpdate:
    """Check and read ``{"set": {...}, "delete": [...]}`` data.

    Args:
        data: The JSON data.
        what: How messages name it.

    Returns:
        The update.

    Raises:
        ValueError: Naming what is wrong.
    """
    obj = read_object(data, what, _CONTEXT_KEYS)
    values = obj.get("set", {})
    if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
        raise ValueError(f"{what}.set must be an object with string keys")
    delete = obj.get("delete", [])
    if not isinstance(delete, list | tuple) or not all(isinstance(k, str) for k in delete):
        raise ValueError(f"{what}.delete must be a list of strings")
    return ContextUpdate(values=dict(values), delete=delete)


def read_routing(data: object) -> Routing:
    """Check and read a packet's ``routing`` data.

    Args:
        data: The JSON data.

    Returns:
        The routing.

    Raises:
        ValueError: Naming what is wrong.
    """
    obj = read_object(data, "packet routing", _ROUTING_KEYS)
    kind = obj.get("kind", "text")
    if kind not in ("text", "handoff"):
        raise ValueError(f"packet routing.kind must be 'text' or 'handoff', got {kind!r}")
    target = _optional_str(obj, "target", "packet routing")
    tool = _optional_str(obj, "tool", "packet routing")
    reason = _optional_str(obj, "reason", "packet routing") or ""
    if kind == "handoff" and target is None and tool is None:
        raise ValueError("a handoff packet needs routing.target or routing.tool")
    return Routing(kind=kind, target=target, tool=tool, reason=reason)


def read_packet(data: object) -> Packet:
    """Check and read ``EV_PACKET`` event data.

    Args:
        data: The envelope's ``event_data``.

    Returns:
        The packet.

    Raises:
        ValueError: Naming what is wrong.
    """
    obj = read_object(data, "packet", _PACKET_KEYS)
    body = obj.get("body", "")
    if not isinstance(body, str):
        raise ValueError(f"packet body must be a string, got {type(body).__name__}")
    return Packet(
        body=body,
        routing=read_routing(obj.get("routing", {})),
        update=read_context(obj.get("context_updates", {}), "packet context_updates"),
    )
