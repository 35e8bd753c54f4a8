"""Backpressure: a post waits for room in a recipient's inbox (``overflow="block"``).

The session actor never waits (one slow recipient must not stall a session): the poster's
own task waits, in the hub handle, before its post is handed to the session actor, until
every recipient whose inbox is at ``max_pending`` acknowledged enough to take one more (at
most the recipient's ``block_timeout``, then ``InboxFull``; a cancelled wait posts nothing).

Deadlocks: an agent's inbox drains as its turns end, and a turn that posts may wait. Two
agents answering each other with both inboxes full would each wait for the other's turn to
end. So a post never waits on an agent that is itself waiting to post: of the posts that
wait on each other, the last to come goes through (over ``max_pending``), its turn ends, and
the others follow. That is what lets a reply through to the agent whose turn it answers when
that agent is blocked in a post of its own.

A post that finds room takes it (``InboxRoom.take``, held as a ``TakenRoom``) until its
session actor has dispatched it (the inbox ledger counts it from then on) or refused it,
across a crash and its retry, also when its poster is cancelled (``TakenRoom`` says how). So
posts checked at the same moment, or woken together by one ack, do not all pass a cap that
had room for one (six posts into an inbox capped at 2 once made 6 pending). A post holds no
room while it waits: one to several capped inboxes looks at all of them again after each
wait, and has each recipient's ``block_timeout`` for the time it waited on that recipient.

Over a connection, a post that waits gives its in-flight slot back while it waits (see
``_room.ConnectionSlots``): the hub keeps reading that connection, and with it the receipts
of a recipient bound to the same one. At most ``MAX_WAITING_POSTS`` posts of one connection
wait at once; one more that would wait is refused with ``InboxFull`` at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import trio

from .._errors import InboxFull
from ..model import Envelope, InboxBlock, SessionMetadata
from ._core import HubCore
from ._room import REQUEST_SLOT


def _room_for(
    core: HubCore, metadata: SessionMetadata, envelope: Envelope
) -> tuple[list[str], tuple[str, InboxBlock] | None]:
    """The recipients of ``envelope`` whose inbox is capped (``overflow="block"``, a
    ``max_pending``), and the first of them without room now with its inbox's rule (None:
    every one has room).

    Room is what ``max_pending`` leaves besides the envelopes pending and the posts on their
    way (:meth:`InboxRoom.coming`). A recipient that waits to post itself has room (see the
    module doc). The post path's cheap check: a rule lookup per recipient.
    """
    registry, pending, room = core.registry, core.ledger.pending, core.room
    sender_id = envelope.sender_id
    audience = envelope.audience
    if audience is None:
        ids: Iterable[str] = (p.agent_id for p in metadata.participants)
    else:
        ids = audience
    capped: list[str] = []
    for recipient_id in ids:
        if recipient_id == sender_id:
            continue
        rule = registry.rule(recipient_id)
        if rule is None:
            continue
        inbox = rule.limits.inbox
        limit = inbox.max_pending
        if inbox.overflow != "block" or limit <= 0:
            continue
        if pending(recipient_id) + room.coming(recipient_id) >= limit and not room.waits(
            recipient_id
        ):
            return capped, (recipient_id, inbox)
        capped.append(recipient_id)
    return capped, None


def take_room(core: HubCore, metadata: SessionMetadata, envelope: Envelope) -> list[str] | None:
    """Take room for ``envelope`` in every capped recipient's inbox, if each has some now.

    Returns:
      The recipients whose room it took (a ``TakenRoom`` gives it back once the post is
      dispatched or refused), or None: one has no room (nothing was taken).
    """
    capped, full = _room_for(core, metadata, envelope)
    if full is not None:
        return None
    if capped:
        core.room.take(capped)
    return capped


async def wait_for_room(core: HubCore, metadata: SessionMetadata, envelope: Envelope) -> list[str]:
    """Wait until every capped recipient of ``envelope`` has room, then take it (see the
    module doc and :func:`take_room`).

    Raises:
      InboxFull: a recipient had no room for its ``block_timeout`` (nothing was taken).
    """
    room = core.room
    sender_id = envelope.sender_id
    #: Seconds waited so far on each recipient: each has its own ``block_timeout``.
    waited: dict[str, float] = {}
    traded = False
    while True:
        capped, blocked = _room_for(core, metadata, envelope)
        if blocked is None:
            room.take(capped)  # (no checkpoint since the check: nobody took it meanwhile)
            return capped
        full, inbox = blocked
        if not traded:
            traded = True
            slot = REQUEST_SLOT.get()
            if slot is not None and not slot.wait():
                # A connection's reader never waits for a slot to wait in: it would stop
                # reading the receipts that make the room (see ``ConnectionSlots``).
                raise _inbox_full(
                    core,
                    full,
                    inbox.max_pending,
                    f"this connection already has {slot.max_waiting} posts waiting for room",
                )
        timeout = math.inf if inbox.block_timeout is None else inbox.block_timeout
        left = timeout - waited.get(full, 0.0)
        # (Not above zero: woken before its timeout, it ran after it, and found no room.)
        if left > 0:
            began = trio.current_time()
            with trio.move_on_after(left) as scope:
                room.enter(sender_id, full)
                try:
                    await room.freed_event(full).wait()
                finally:
                    room.leave(sender_id, full)
            waited[full] = waited.get(full, 0.0) + trio.current_time() - began
            if not scope.cancelled_caught:
                continue
        raise _inbox_full(
            core,
            full,
            inbox.max_pending,
            f"no room within its block_timeout of {inbox.block_timeout} s",
        )


def _inbox_full(core: HubCore, recipient_id: str, limit: int, why: str) -> InboxFull:
    passport = core.registry.passport(recipient_id)
    name = passport.name if passport is not None else recipient_id
    coming = core.room.coming(recipient_id)
    on_the_way = f" and {coming} on the way" if coming else ""
    return InboxFull(
        f"inbox of agent {name!r} ({recipient_id}) is full: "
        f"{core.ledger.pending(recipient_id)} pending{on_the_way}, max_pending {limit}; {why}"
    )
