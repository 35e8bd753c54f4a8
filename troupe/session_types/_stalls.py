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

``rotation_turn``, ``rotation_view`` and ``render_rotation`` are what such types share: the
expected speaker's turn (triggered by the envelope that gave them the floor), a view of two
rounds, and stall notices in views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal

import attrs

from ..model import EV_EXPECTATION_VIOLATED, EV_TEXT, Envelope, SessionMetadata
from ._base import ExpectedTurn, ViewPolicy
from ._views import NamedWindowedSummary

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


def rotation_turn(state: Any) -> ExpectedTurn | None:
    """The expected speaker's turn, triggered by what gave them the floor.

    For session types whose state has ``expected_next_speaker`` (``None``: nobody) and
    ``last_envelope_id`` (what gave that speaker the floor).

    Args:
        state: The current state.

    Returns:
        The expected turn, or ``None`` when nobody is to speak.
    """
    if state.expected_next_speaker is None:
        return None
    return ExpectedTurn(
        agent_id=state.expected_next_speaker, triggering_envelope_id=state.last_envelope_id
    )


def rotation_view(metadata: SessionMetadata) -> ViewPolicy:
    """A named windowed summary sized to two rounds (at least four messages).

    Args:
        metadata: The session's metadata.

    Returns:
        ``NamedWindowedSummary(recent_n=max(2 * participants, 4))``.
    """
    return NamedWindowedSummary(recent_n=max(2 * len(metadata.participants), 4))


def render_rotation(envelope: Envelope) -> str | None:
    """Texts and stall notices (a notice that passed the floor is the next turn's input).

    Args:
        envelope: Any envelope of the session.

    Returns:
        The text, or ``None`` to leave the envelope out.
    """
    if envelope.event_type == EV_TEXT:
        return envelope.text
    return render_stall(envelope)
