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
from ..model import Envelope, SessionMetadata
from ._core import HubCore
from ._delivery import recipients_of
from ._room import REQUEST_SLOT


def must_wait(core: HubCore, metadata: SessionMetadata, envelope: Envelope) -> bool:
    """Whether a recipient of ``envelope`` blocks it now (its inbox is at ``max_pending``).

    The post path's cheap check (about 0.5 us for a two-party session): a ledger lookup per
    recipient, and its rule only for one with envelopes pending.
    """
    pending = core.ledger.pending
    sender_id = envelope.sender_id
    audience = envelope.audience
    if audience is None:
        ids: Iterable[str] = (p.agent_id for p in metadata.participants)
    else:
        ids = audience
    for recipient_id in ids:
        count = pending(recipient_id)
        if not count or recipient_id == sender_id:
            continue
        rule = core.registry.rule(recipient_id)
        if rule is None:
            continue
        inbox = rule.limits.inbox
        if inbox.overflow == "block" and 0 < inbox.max_pending <= count:
            return True
    return False


async def wait_for_room(core: HubCore, metadata: SessionMetadata, envelope: Envelope) -> None:
    """Return once every blocking recipient of ``envelope`` has room (see the module doc).

    Raises:
      InboxFull: a recipient had no room for its ``block_timeout``.
    """
    registry, ledger, room = core.registry, core.ledger, core.room
    sender_id = envelope.sender_id
    for recipient_id in recipients_of(metadata, envelope):
        if recipient_id == sender_id:
            continue
        rule = registry.rule(recipient_id)
        if rule is None:
            continue
        inbox = rule.limits.inbox
        limit = inbox.max_pending
        if inbox.overflow != "block" or limit <= 0 or ledger.pending(recipient_id) < limit:
            continue
        if room.waits(recipient_id):
            continue  # it waits to post itself: waiting on it could close a cycle
        slot = REQUEST_SLOT.get()
        if slot is not None and not slot.wait():
            # A connection's reader never waits for a slot to wait in: it would stop
            # reading the receipts that make the room (see ``ConnectionSlots``).
            raise _inbox_full(
                core,
                recipient_id,
                limit,
                f"this connection already has {slot.max_waiting} posts waiting for room",
            )
        timeout = math.inf if inbox.block_timeout is None else inbox.block_timeout
        with trio.move_on_after(timeout):
            room.enter(sender_id, recipient_id)
            try:
                while ledger.pending(recipient_id) >= limit and not room.waits(recipient_id):
                    await room.freed_event(recipient_id).wait()
            finally:
                room.leave(sender_id, recipient_id)
            continue
        raise _inbox_full(
            core,
            recipient_id,
            limit,
            f"no room within its block_timeout of {inbox.block_timeout} s",
        )


def _inbox_full(core: HubCore, recipient_id: str, limit: int, why: str) -> InboxFull:
    passport = core.registry.passport(recipient_id)
    name = passport.name if passport is not None else recipient_id
    return InboxFull(
        f"inbox of agent {name!r} ({recipient_id}) is full: "
        f"{core.ledger.pending(recipient_id)} pending, max_pending {limit}; {why}"
    )
