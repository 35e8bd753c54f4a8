"""The moves the state machine makes: sessions to open, and posts, as lists of candidates.

A rule draws a session, one of its type's moves and whether the post should be one the hub
must accept; :func:`choose` sorts every move's candidates with the oracle (``_oracle.py``)
and takes one the hub must accept (of any move), or one of the drawn move's it must
refuse, a near miss when there is one: a post only the type's turn rules refuse. Every
candidate carries the post's ``nonce`` where its event type allows: in ``event_data`` for
texts, selects and oddities; as a context variable for packets and context sets, whose
data refuses unknown keys. :func:`nonce_of` finds it in all of them.
"""

from __future__ import annotations

import copy
from typing import Any, Final

import attrs

from troupe import (
    EV_CONTEXT_SET,
    EV_EXPECTATION_VIOLATED,
    EV_PACKET,
    EV_SESSION_OPENED,
    EV_TEXT,
    Envelope,
)
from troupe.session_types import select_winner
from troupe.workflow import round_robin, sequence

from ._oracle import Graph, Plan, generic_refusal, verdict

#: The moves of each built-in type: "oddity" is what no session should take, and "again"
#: the session's last accepted post once more (a second bid, a second notification, ...).
MOVES: Final = {
    "consulting": ("text", "oddity", "again"),
    "conversation": ("text", "oddity", "again"),
    "discussion": ("text", "oddity", "again"),
    "workflow": ("text", "packet", "handoff", "context", "oddity", "again"),
    "broadcast": ("text", "oddity", "again"),
    "auction": ("text", "select", "oddity", "again"),
    "notification": ("text", "oddity", "again"),
}
#: An agent id nobody has.
NOBODY: Final = "nobody"
#: What makes a create wrong (the hub must refuse it with a ProtocolError).
FLAWS: Final = ("unknown knob", "no graph", "a stranger in the graph", "too many")

Candidate = tuple[str, Envelope]


def knobs(kind: str, ids: list[str], graph: Graph | None) -> dict[str, object]:
    """Valid knobs for a session of ``kind`` among ``ids`` (the creator first)."""
    if kind != "workflow":
        return {}
    return {"graph": (round_robin if graph == "round_robin" else sequence)(ids).to_dict()}


def flawed_knobs(kind: str, ids: list[str], flaw: str) -> dict[str, object]:
    """The knobs of a create with ``flaw`` (one of ``FLAWS``; "too many" is in ``ids``)."""
    if flaw == "unknown knob":
        return {**knobs(kind, ids, "round_robin"), "colour": "red"}
    if flaw == "a stranger in the graph":
        return {"graph": sequence([*ids, NOBODY]).to_dict()}
    return {} if flaw == "no graph" else knobs(kind, ids, "round_robin")


def choose(
    plan: Plan,
    wal: list[Envelope],
    move: str,
    valid: bool,
    pick: int,
    *,
    outsiders: list[str],
    nonce: int,
    last: Envelope | None,
) -> Candidate:
    """The post to make (see the module docstring).

    Args:
        plan: The session.
        wal: Its WAL now.
        move: The move drawn (for a post the hub must refuse).
        valid: Whether the hub must accept the post.
        pick: Which of the candidates of the side drawn (modulo their number).
        outsiders: Registered agents that are not participants.
        nonce: The post's nonce.
        last: The machine's last post that the session accepted.

    Returns:
        The move the post belongs to, and the post.
    """
    accepted: list[Candidate] = []
    near: list[Candidate] = []
    refused: list[Candidate] = []
    for kind in MOVES[plan.metadata.manifest_type]:
        for envelope in candidates(kind, plan, outsiders, nonce, last):
            if verdict(plan, wal, envelope) is None:
                accepted.append((kind, envelope))
            elif generic_refusal(plan, wal, envelope) is None:
                near.append((kind, envelope))
            else:
                refused.append((kind, envelope))
    mine = [c for c in near if c[0] == move] or [c for c in refused if c[0] == move]
    tiers = [accepted, mine, near, refused] if valid else [mine, near, refused, accepted]
    side = next(tier for tier in tiers if tier)
    return side[pick % len(side)]


def candidates(
    move: str, plan: Plan, outsiders: list[str], nonce: int, last: Envelope | None = None
) -> list[Envelope]:
    """Every post ``move`` may be in ``plan``'s session, valid or not.

    Args:
        move: One of ``MOVES[type]``.
        plan: The session.
        outsiders: Registered agents that are not participants.
        nonce: The post's nonce.
        last: The last post the session accepted from the machine (for "again").

    Returns:
        The candidates, in a fixed order.
    """
    sid, members = plan.metadata.session_id, plan.members
    if move == "again":
        return [] if last is None else [again(last, nonce)]

    def post(sender: str, kind: str, data: dict[str, Any], **more: Any) -> Envelope:
        return Envelope(session_id=sid, sender_id=sender, event_type=kind, event_data=data, **more)

    text = {"text": f"#{nonce}", "nonce": nonce}
    mark = {"set": {"nonce": nonce}}
    if move == "text":  # to everyone, or to one other (a bid, a partial broadcast)
        return [post(s, EV_TEXT, text) for s in members] + [
            post(s, EV_TEXT, text, audience=(members[1] if s == members[0] else members[0],))
            for s in members
        ]
    if move == "select":
        # The initiator names anyone; a bidder names another (or the initiator).
        pairs = [(members[0], w) for w in [*members[1:], NOBODY]]
        pairs.append((members[1], members[2] if len(members) > 2 else members[0]))
        return [
            attrs.evolve(select_winner(sid, s, w), event_data={"winner_id": w, "nonce": nonce})
            for s, w in pairs
        ]
    if move == "packet":  # a packet, and one with a key packets do not have
        good = {"body": f"#{nonce}", "context_updates": mark}
        return [
            post(s, EV_PACKET, data) for data in (good, {**good, "nonce": nonce}) for s in members
        ]
    if move == "handoff":
        routes = [
            {"routing": {"kind": "handoff", "target": t}, "context_updates": mark}
            for t in [*members, *outsiders, NOBODY]
        ]
        return [post(s, EV_PACKET, route) for s in members for route in routes]
    if move == "context":
        return [post(s, EV_CONTEXT_SET, mark) for s in [*members, *outsiders]] + [
            post(s, EV_CONTEXT_SET, {**mark, "unset": ["nonce"]}) for s in members
        ]
    assert move == "oddity", move
    return (
        [post(s, EV_TEXT, text) for s in outsiders]
        + [post(s, EV_SESSION_OPENED, text) for s in members]
        + [post(s, EV_EXPECTATION_VIOLATED, text) for s in members]
        + [post(s, EV_TEXT, text, audience=(NOBODY,)) for s in members]
        + [post(s, "app.note", text) for s in members]  # information, where a type takes it
    )


def again(envelope: Envelope, nonce: int) -> Envelope:
    """``envelope`` as a new post: the same move, with ``nonce`` and no idempotency key."""
    data = copy.deepcopy(envelope.event_data)
    for where in (data, data.get("set"), _get(data.get("context_updates"), "set")):
        if isinstance(where, dict) and "nonce" in where:
            where["nonce"] = nonce
    for key in ("text", "body"):
        if key in data:
            data[key] = f"#{nonce}"
    return attrs.evolve(envelope, event_data=data, idempotency_key=None)


def nonce_of(envelope: Envelope) -> int | None:
    """The nonce of a post the machine made (``None`` for anyone else's envelope).

    Args:
        envelope: Any envelope of a WAL.

    Returns:
        The nonce, from the data, a context set or a packet's context updates.
    """
    data = envelope.event_data
    for where in (data, data.get("set"), _get(data.get("context_updates"), "set")):
        nonce = _get(where, "nonce")
        if isinstance(nonce, int):
            return nonce
    return None


def _get(data: object, key: str) -> object:
    return data.get(key) if isinstance(data, dict) else None
