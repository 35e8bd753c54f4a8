"""Moves the lifecycle table lacks, asked of a running hub: refused, and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from troupe import IllegalTransition
from troupe.hub import Hub
from troupe.model import (
    EV_CHANNEL_INVITE_ACK,
    EV_CHANNEL_INVITE_REJECT,
    Envelope,
    SessionMetadata,
    SessionState,
)
from troupe.session_types import ConversationType, Transition

from ..harness import HubPair, open_hub_pair, text_envelope


async def unchanged_after(hub: Hub, md: SessionMetadata, env: Envelope, match: str) -> None:
    """Post ``env``: it is refused with IllegalTransition; the WAL and metadata stay."""
    sid = md.session_id
    before = (await hub.get_session(sid), await hub.read_wal(sid))
    with pytest.raises(IllegalTransition, match=match):
        await hub.post_envelope(env)
    assert (await hub.get_session(sid), await hub.read_wal(sid)) == before
    stored = await hub.core.store.get_session(sid)
    assert stored is not None
    assert stored.state is before[0].state


def answer(md: SessionMetadata, sender_id: str, kind: str, invite: Envelope) -> Envelope:
    return Envelope(
        session_id=md.session_id,
        sender_id=sender_id,
        event_type=kind,
        causation_id=invite.envelope_id,
    )


async def test_a_late_ack_to_a_closed_session_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(invite_ack_timeout=5) as h:
        alice = await h.agent("alice")
        bob = await h.agent("bob", invites="ignore")
        with pytest.raises(Exception, match="no ack within"):
            await h.session("conversation", alice, bob)
        (md,) = await h.hub.list_sessions(include_terminal=True)
        assert md.state is SessionState.CLOSED
        invite = (await h.hub.read_wal(md.session_id))[0]
        await unchanged_after(
            h.hub,
            md,
            answer(md, bob.id, EV_CHANNEL_INVITE_ACK, invite),
            r"is closed \(invite_timeout\): the lifecycle has no ack in state closed$",
        )


async def test_a_turn_before_the_quorum_and_a_reject_after_it_are_refused(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob", invites="ignore")
    with trio.move_on_after(1):
        await h.session("conversation", alice, bob)
    (pending,) = await hub.list_sessions()
    await unchanged_after(
        hub,
        pending,
        text_envelope(pending, alice),
        "is not active \\(it is pending\\): the lifecycle has no turn in state pending$",
    )
    carol, dave = await h.agent("carol"), await h.agent("dave", invites="ignore")
    md = await h.session("discussion", carol, alice, dave, required_acks=1)
    invite = next(e for e in await hub.read_wal(md.session_id) if e.audience == (dave.id,))
    await unchanged_after(
        hub,
        md,
        answer(md, dave.id, EV_CHANNEL_INVITE_REJECT, invite),
        "already active; close it instead: the lifecycle has no reject in state active$",
    )


async def test_closing_an_expired_session_returns_it_unchanged(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob, ttl=10)
    await trio.sleep(11)
    await hub.expire_due()
    expired = await hub.get_session(md.session_id)
    wal = await hub.read_wal(md.session_id)
    assert (expired.state, expired.close_reason) == (SessionState.EXPIRED, "ttl_expired")
    assert await hub.close_session(md.session_id, reason="late") == expired
    assert await hub.read_wal(md.session_id) == wal
    await unchanged_after(hub, expired, text_envelope(md, alice), r"is expired \(ttl_expired\)")


class Reopening(ConversationType):
    """A (buggy) session type that asks to go back to PENDING after every turn."""

    name = "reopening"

    def on_accepted(self, metadata: SessionMetadata, envelope: Envelope, state: Any) -> Transition:
        return Transition(state=SessionState.PENDING, reason="again")


async def test_a_session_type_asking_for_an_illegal_move_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(session_types=[Reopening()]) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("reopening", alice, bob)
        await h.say(md, alice)  # accepted: the post is fine, the move it asks for is not
        after = await h.hub.get_session(md.session_id)
        assert after == md
        stored = await h.hub.core.store.get_session(md.session_id)
        assert stored is not None
        assert stored.state is SessionState.ACTIVE
        await h.say(md, bob)  # the session goes on
        audit = [r for r in await h.hub.read_audit() if r["kind"] == "illegal_transition"]
        assert [(r["session_id"], r["state"], r["reason"]) for r in audit] == [
            (md.session_id, "pending", "again")
        ] * 2
