"""An invitee's consent in process (issue 13): until it acks its invite, an invitee
receives nothing of a session but the invite (and the notice that ends it), may not post
into it, and is never someone's turn; ``required_acks`` cannot skip the consent."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe import ProtocolError
from troupe.hub import Hub
from troupe.model import (
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_SESSION_CLOSED,
    EV_SESSION_OPENED,
    EV_TEXT,
    Envelope,
    SessionState,
)

from ..harness import HubPair, client_of


async def test_required_acks_is_between_one_and_the_invitees(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice")
    bob = await h.agent("bob", invites="ignore")
    carol = await h.agent("carol")
    for bad in (0, -1, 3):
        with pytest.raises(
            ProtocolError,
            match=rf"required_acks must be between 1 and 2 \(the invitees\), got {bad}",
        ):
            await hub.create_session(
                creator_id=alice.id,
                manifest_type="discussion",
                participants=[bob.id, carol.id],
                required_acks=bad,
            )
    assert await hub.list_sessions() == []
    assert client_of(bob).notified() == []


async def test_an_invitee_receives_only_its_invite_until_it_acks(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    """carol's ack reaches the quorum; dave, who has not acked, gets no text, no notice,
    and may not post. When he acks he gets what he missed, in order, then what comes."""
    alice, carol = await h.agent("alice"), await h.agent("carol")
    dave = await h.agent("dave", invites="ignore")
    md = await h.session("discussion", alice, carol, dave, required_acks=1)
    sid = md.session_id
    assert md.pending_acks == (dave.id,)
    await h.say(md, alice, "secret 1")
    await h.say(md, carol, "secret 2", audience=(dave.id,))
    await h.settle()
    seen = client_of(dave).notified(dave.id, sid)
    assert [e.event_type for e in seen] == [EV_CHANNEL_INVITE]
    assert not hub.can_send(sid, dave.id)
    with pytest.raises(ProtocolError, match="has not acked its invite"):
        await h.say(md, dave, "me too")
    # dave acks: the history arrives, in WAL order, and so does what is posted next.
    await hub.post_envelope(
        Envelope(
            session_id=sid,
            sender_id=dave.id,
            event_type=EV_CHANNEL_INVITE_ACK,
            causation_id=seen[0].envelope_id,
        )
    )
    await h.settle()
    assert hub.can_send(sid, dave.id)  # the rotation reached him
    await h.say(md, dave, "hello all")
    await h.say(md, alice, "welcome")
    await h.settle()
    got = client_of(dave).notified(dave.id, sid)
    texts = [e.event_data.get("text") for e in got if e.event_type == EV_TEXT]
    assert texts == ["secret 1", "secret 2", "welcome"]
    assert [e.seq for e in got] == sorted({e.seq for e in got})
    assert EV_SESSION_OPENED in [e.event_type for e in got]


async def test_a_replay_before_the_ack_brings_only_the_invite(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, carol = await h.agent("alice"), await h.agent("carol")
    dave = await h.agent("dave", invites="ignore", receipts=False)
    md = await h.session("discussion", alice, carol, dave, required_acks=1)
    await h.say(md, alice, "secret")
    client_of(dave).disconnect()  # one live connection per identity (issue 13 item 8)
    again = await h.connection("ep-dave-2", invites="ignore")
    await again.bind(dave.id, since={})
    await h.settle()
    assert [e.event_type for e in again.notified(dave.id)] == [EV_CHANNEL_INVITE]
    assert (await hub.get_session(md.session_id)).state is SessionState.ACTIVE


async def test_a_session_without_invitees_takes_no_required_acks(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice")
    with pytest.raises(ProtocolError, match=r"required_acks: .*no invitees"):
        await hub.create_session(
            creator_id=alice.id,
            manifest_type="discussion",
            participants=[alice.id],
            required_acks=1,
        )


async def test_an_invitee_that_never_acked_is_told_when_the_session_ends(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    """The closing notice withdraws the invite: the one thing besides it dave receives."""
    alice, carol = await h.agent("alice"), await h.agent("carol")
    dave = await h.agent("dave", invites="ignore")
    md = await h.session("discussion", alice, carol, dave, required_acks=1)
    await h.say(md, alice, "secret")
    await hub.close_session(md.session_id, reason="done")
    await h.settle()
    seen = client_of(dave).notified(dave.id, md.session_id)
    assert [e.event_type for e in seen] == [EV_CHANNEL_INVITE, EV_SESSION_CLOSED]
