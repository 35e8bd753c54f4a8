"""An invitee's consent over the wire (issue 13): ``required_acks`` cannot skip it, and an
invitee's connection gets nothing of a session but its invite until it acks."""

from __future__ import annotations

import pytest
import trio

from troupe import (
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_SESSION_OPENED,
    EV_TEXT,
    Envelope,
    HubClient,
    NoAuth,
    Passport,
    ProtocolError,
)
from troupe.model import AcceptFrame, NotifyFrame, SendFrame

from ._wire import raw, serving, text


async def test_required_acks_zero_is_refused() -> None:
    with trio.fail_after(5):
        async with (
            serving(auth=[NoAuth()]) as served,
            HubClient(served.link()) as hc,
        ):
            alice = await hc.register_human(Passport(name="alice"))
            bob = await hc.register_human(Passport(name="bob"), auto_ack_invites=False)
            with pytest.raises(ProtocolError, match="required_acks must be between 1 and 1"):
                await hc.create_session(
                    creator_id=alice.agent_id,
                    manifest_type="conversation",
                    participants=[bob.agent_id],
                    required_acks=0,
                )
            assert await served.hub.list_sessions() == []


async def test_an_invitee_that_has_not_acked_receives_only_its_invite() -> None:
    """dave is invited with carol; carol's ack opens the session. Until dave acks, his
    connection gets his invite and nothing else; then what he missed, in order."""
    with trio.fail_after(5):
        async with (
            serving(auth=[NoAuth()]) as served,
            HubClient(served.link()) as hc,
        ):
            alice = await hc.register_human(Passport(name="alice"))
            carol = await hc.register_human(Passport(name="carol"))
            async with HubClient(served.link()) as first:
                dave = await first.register_human(Passport(name="dave"))
            async with raw(served.url) as ws:
                await ws.hello("dave")
                md = await hc.create_session(
                    creator_id=alice.agent_id,
                    manifest_type="discussion",
                    participants=[carol.agent_id, dave.agent_id],
                    required_acks=1,
                )
                sid = md.session_id
                await alice.send(sid, "not for dave yet")
                # A second invite to dave, enqueued after the text: what comes before it on
                # his connection is everything the first session sent him.
                other = await hc.create_session(
                    creator_id=alice.agent_id,
                    manifest_type="discussion",
                    participants=[carol.agent_id, dave.agent_id],
                    required_acks=1,
                )
                seen: list[Envelope] = []
                while not any(e.session_id == other.session_id for e in seen):
                    seen.append((await ws.receive_kind(NotifyFrame)).envelope)
                assert [e.event_type for e in seen if e.session_id == sid] == [EV_CHANNEL_INVITE]
                invite = seen[0]
                with pytest.raises(ProtocolError, match="has not acked its invite"):
                    await served.hub.post(text(sid, dave.agent_id, "me too"))
                # dave acks: what he missed arrives, in WAL order.
                ack = Envelope(
                    session_id=sid,
                    sender_id=dave.agent_id,
                    event_type=EV_CHANNEL_INVITE_ACK,
                    causation_id=invite.envelope_id,
                )
                await ws.send(SendFrame(envelope=ack, request_id="ack"))
                caught_up: list[Envelope] = []
                while not any(e.event_type == EV_TEXT for e in caught_up):
                    frame = await ws.receive()
                    if isinstance(frame, NotifyFrame) and frame.envelope.session_id == sid:
                        caught_up.append(frame.envelope)
                    elif isinstance(frame, AcceptFrame):
                        assert frame.request_id == "ack"
                assert [e.event_type for e in caught_up] == [EV_SESSION_OPENED, EV_TEXT]
                assert caught_up[-1].event_data == {"text": "not for dave yet"}
