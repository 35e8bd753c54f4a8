"""The session actor's messages and the pure admission checks of a post.

These checks are shared by the session actor and by ``_session.refuse_ended`` (which the
session supervisor runs for a post into a terminal session, which has no actor: the same
errors in the same order).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import trio

from .._errors import NotFoundError, ProtocolError
from ..actors import Message
from ..api import Accepted
from ..model import (
    EV_CHANNEL_INVITE_ACK,
    EV_CHANNEL_INVITE_REJECT,
    Envelope,
    Passport,
    Rule,
    SessionMetadata,
    SessionState,
)
from ..store import Store
from ._core import HubCore
from ._room import TakenRoom
from ._rules import check_depth, check_outbound


@attrs.frozen
class Post(Message[Accepted]):
    """Post ``envelope`` under ``envelope_id`` (chosen by the hub, kept across a retry).

    ``attempt`` 2 is the retry after a crash; ``floor`` is a seq the session had reached
    before the first attempt was sent, so an envelope that attempt appended is after it.
    """

    envelope: Envelope
    envelope_id: str
    attempt: int = 1
    floor: int = 0
    #: The room the post took in capped inboxes: the actor gives it back once it has
    #: dispatched or refused the post (see ``TakenRoom``).
    room: TakenRoom | None = None


@attrs.frozen
class HubPost(Message[Accepted]):
    """A post by the hub itself (expectation notices): allowed event types only it may post."""

    envelope: Envelope


@attrs.frozen
class SendInvites(Message[SessionMetadata]):
    """Invite the participants (those not invited yet); the answer is the metadata after."""


@attrs.frozen
class EndSession(Message[SessionMetadata]):
    """End the session (closed or expired); the answer is its metadata after."""

    reason: str
    state: SessionState = SessionState.CLOSED
    only_if_pending: bool = False


@attrs.frozen
class Passivate(Message[bool]):
    """To a session actor: snapshot and stop, unless there is work (told by the sweeper,
    asked by ``_passivation.passivate``).

    The answer is True when it agreed: it marked its entry's gate ``passivating`` with
    ``stopped`` and stops right after. The session supervisor hears of the stop, lets go
    of the actor and sets ``stopped`` (``SessionSupervisor._exited``), whoever waits.
    """

    stopped: trio.Event = attrs.field(factory=trio.Event)
    #: Shared by the passivations the sweeper tells: how many may save a snapshot at once
    #: (told, they do not wait for each other, and a wave of them would all write at once).
    limiter: trio.CapacityLimiter | None = None
    #: A session never snapshotted is snapshotted only once its WAL holds this many
    #: envelopes (see ``_passivation.SNAPSHOT_FROM``); one snapshotted before always is.
    snapshot_from: int = 1


SessionMsg = Post | HubPost | SendInvites | EndSession | Passivate


def invitees_of(metadata: SessionMetadata) -> list[str]:
    return [p for p in metadata.participant_ids() if p != metadata.creator_id]


def quorum_reached(metadata: SessionMetadata) -> bool:
    invitees = invitees_of(metadata)
    needed = metadata.required_acks if metadata.required_acks is not None else len(invitees)
    return len(invitees) - len(metadata.pending_acks) >= needed


def admit_sender(core: HubCore, md: SessionMetadata, env: Envelope) -> tuple[Passport, Rule]:
    """Step 1 of a post: the sender is registered and a participant; its passport and rule."""
    sender = core.registry.passport(env.sender_id)
    rule = core.registry.rule(env.sender_id)
    if sender is None or rule is None:
        raise NotFoundError(f"sender not registered: {env.sender_id!r}")
    if md.role_of(env.sender_id) is None:
        raise ProtocolError(
            f"agent {sender.name!r} ({env.sender_id}) is not a participant of "
            f"session {md.session_id}"
        )
    return sender, rule


def admit_addressing(
    core: HubCore, md: SessionMetadata, env: Envelope, sender: Passport, rule: Rule
) -> None:
    """Steps 1-2 of a post: the audience names participants and ``outbound_to`` covers it;
    the depth is within the sender's ``delegation_depth``."""
    if env.audience is not None:
        addressed: list[Passport] = []
        for rid in env.audience:
            if md.role_of(rid) is None:
                raise ProtocolError(
                    f"audience member {rid!r} is not a participant of session {md.session_id}"
                )
            passport = core.registry.passport(rid)
            if passport is not None and rid != env.sender_id:
                addressed.append(passport)
        check_outbound(sender, rule, addressed)
    check_depth(sender, rule, env.depth)


def _metadata_after(md: SessionMetadata, env: Envelope) -> SessionMetadata:
    """The metadata change an accepted handshake envelope makes (same object otherwise)."""
    if env.event_type == EV_CHANNEL_INVITE_ACK:
        return attrs.evolve(
            md, pending_acks=tuple(a for a in md.pending_acks if a != env.sender_id)
        )
    if env.event_type == EV_CHANNEL_INVITE_REJECT:
        return attrs.evolve(
            md,
            pending_acks=tuple(a for a in md.pending_acks if a != env.sender_id),
            rejected_by=(*md.rejected_by, env.sender_id),
        )
    return md


async def sender_at(
    store: Store, session_id: str, seq: int, recent: Sequence[Envelope] = ()
) -> str | None:
    """Who posted the envelope at ``seq`` of a session (``recent`` first, then the store);
    None if there is none."""
    for env in reversed(recent):
        if env.seq == seq:
            return env.sender_id
    found = await store.read(session_id, since=seq - 1, until=seq)
    return found[0].sender_id if found else None


def refuse_taken_key(envelope: Envelope, original_sender: str | None) -> None:
    """A post whose idempotency key found another sender's envelope is no repeat of it:
    raise ``ProtocolError`` (answering with that envelope's id would drop this post).

    A key is unique within its session: a repeat is the same sender's post again.
    """
    if original_sender is not None and original_sender != envelope.sender_id:
        raise ProtocolError(
            f"idempotency key {envelope.idempotency_key!r} is taken in session "
            f"{envelope.session_id} by another participant's post; a key is unique within "
            "its session: post with another one"
        )
