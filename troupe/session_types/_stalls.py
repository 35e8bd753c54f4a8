"""What the ``hide`` and ``remove`` expectation handlers do to a session with a rotation.

The hub's expectation sweeper reports a stalled participant by posting an
``EV_EXPECTATION_VIOLATED`` envelope (only the hub may post that event type) with data
``{"expectation", "on_violation", "violators", "detail"}``. Folding that notice is what makes
``hide`` and ``remove`` act, so a session refolded from its WAL stays exact.

Rules (for types with a rotation: discussion, workflow):

- ``hide``: if the floor holder is among the violators, the floor passes to the next speaker
  in the rotation; the stalled one keeps their place for the next round.
- ``remove``: the violators leave the rotation for good (they may take no more turns); if one
  of them held the floor it passes on. Nobody left: no speaker, and the session closes with
  ``no_participants``.
- A ``hide`` whose violators no longer hold the floor (they spoke meanwhile) changes nothing.
- A notice that moved the floor triggers the new holder's turn: types render it for views.
- Any other ``on_violation`` (``warn``, ``audit``, …) is information only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

import attrs

from ..model import EV_EXPECTATION_VIOLATED, Envelope

#: The handlers whose notices move the floor.
STALL_ACTIONS: Final = ("hide", "remove")


@attrs.frozen
class Stall:
    """A ``hide`` or ``remove`` notice, read from its envelope."""

    action: Literal["hide", "remove"]
    violators: tuple[str, ...]
    expectation: str


def read_stall(envelope: Envelope) -> Stall | None:
    """The stall an envelope reports, or ``None`` for any other envelope.

    Args:
        envelope: Any accepted envelope.

    Returns:
        The stall, when ``envelope`` is a well-formed ``hide`` / ``remove`` notice.
    """
    if envelope.event_type != EV_EXPECTATION_VIOLATED:
        return None
    data = envelope.event_data
    action = data.get("on_violation")
    violators = data.get("violators")
    if action not in STALL_ACTIONS or not isinstance(violators, list | tuple):
        return None
    if not all(isinstance(v, str) for v in violators):
        return None
    name = data.get("expectation")
    return Stall(action, tuple(violators), name if isinstance(name, str) else "")


def render_stall(envelope: Envelope) -> str | None:
    """The line a view shows for a stall notice (``None`` for anything else).

    Args:
        envelope: Any envelope.

    Returns:
        E.g. ``"[turn_within] b missed their turn; the floor passes on."``.
    """
    stall = read_stall(envelope)
    if stall is None:
        return None
    who = ", ".join(stall.violators) or "nobody"
    if stall.action == "hide":
        return f"[{stall.expectation}] {who} missed their turn; the floor passes on."
    return f"[{stall.expectation}] {who} left the rotation; the floor passes on."


def pass_floor(order: Sequence[str], holder: str | None, removed: Sequence[str] = ()) -> str | None:
    """The speaker after ``holder`` in ``order``, wrapping round and skipping ``removed``.

    Args:
        order: The rotation.
        holder: Who had the floor (``None`` or someone outside ``order``: start at the top).
        removed: Ids that may no longer speak.

    Returns:
        The next speaker (``holder`` again when nobody else is left), or ``None``.
    """
    start = order.index(holder) + 1 if holder in order else 0
    for i in range(len(order)):
        candidate = order[(start + i) % len(order)]
        if candidate not in removed:
            return candidate
    return None
