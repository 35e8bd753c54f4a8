"""The invite/ack handshake seen from both sides: agent → human and human → agent."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from troupe import (
    EV_CHANNEL_INVITE,
    EV_SESSION_CLOSED,
    EV_SESSION_OPENED,
    EV_TEXT,
    Envelope,
    ProtocolError,
    SessionState,
)

from ..harness import WAIT, from_, of_type, open_hub_pair


async def test_an_agent_consults_a_human(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")

        async def answer(e: Envelope) -> None:
            if e.event_type == EV_TEXT:
                await al.send(e.session_id, "Tuesday", causation_id=e.envelope_id)

        al.on_envelope(answer)
        bot, asking = await p.scripted("bot")
        ch = await bot.open(type="consulting", target="al")
        assert ch.metadata.state is SessionState.ACTIVE
        assert ch.metadata.pending_acks == ()
        question = await ch.send("When?")
        reply = await bot.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(al), timeout=WAIT
        )
        assert (reply.text, reply.causation_id) == ("Tuesday", question)
        await bot.wait_for_channel_event(
            channel_id=ch.session_id, predicate=of_type(EV_SESSION_CLOSED), timeout=WAIT
        )
        assert asking.turns == []
        wal = await p.wal(ch.session_id)
        # The human acked the invite (WAL-logged, never dispatched), then the session opened.
        assert [(e.event_type, p.hub.name_for(e.sender_id)) for e in wal[:3]] == [
            (EV_CHANNEL_INVITE, "bot"),
            ("troupe.session.invite.ack", "al"),
            (EV_SESSION_OPENED, "bot"),
        ]
        assert wal[1].causation_id == wal[0].envelope_id


async def test_a_human_consults_an_agent(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bot, answering = await p.scripted("bot", lambda turn: "Tuesday")
        al = await p.human("al")
        ch = await al.open(type="consulting", target="bot")
        assert ch.metadata.state is SessionState.ACTIVE
        question = await al.send(ch.session_id, "When?")
        reply = await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(bot), timeout=WAIT
        )
        assert (reply.text, reply.causation_id) == ("Tuesday", question)
        closed = await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=of_type(EV_SESSION_CLOSED), timeout=WAIT
        )
        assert closed.event_data["reason"] == "consulting_complete"
        assert [t.text for t in answering.turns] == ["When?"]
        wal = await p.wal(ch.session_id)
        assert [(e.event_type, p.hub.name_for(e.sender_id)) for e in wal[:3]] == [
            (EV_CHANNEL_INVITE, "al"),
            ("troupe.session.invite.ack", "bot"),
            (EV_SESSION_OPENED, "al"),
        ]


async def test_a_human_rejects_a_human(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        bea = await p.human("bea", auto_ack_invites=False)

        async def refuse(e: Envelope) -> None:
            if e.event_type == EV_CHANNEL_INVITE:
                await bea.reject_invite(e, reason="not now")

        bea.on_envelope(refuse)
        with pytest.raises(ProtocolError, match="invite rejected by"):
            await al.open(type="conversation", target="bea")
        (md,) = await p.hc.list_sessions(agent_id=al.agent_id, include_terminal=True)
        assert (md.state, md.close_reason, md.rejected_by) == (
            SessionState.CLOSED,
            "invite_rejected",
            (bea.agent_id,),
        )
        closed = await al.wait_for_channel_event(
            channel_id=md.session_id, predicate=of_type(EV_SESSION_CLOSED), timeout=WAIT
        )
        assert closed.event_data["reason"] == "invite_rejected"


async def test_an_unanswered_invite_times_out(autojump_clock: MockClock) -> None:
    async with open_hub_pair(invite_ack_timeout=30) as p:
        bot, _ = await p.scripted("bot")
        al = await p.human("al", auto_ack_invites=False)
        start = trio.current_time()
        with pytest.raises(ProtocolError, match=rf"no ack within 30s from 'al' \({al.agent_id}\)"):
            await bot.open(type="consulting", target="al")
        assert trio.current_time() - start == pytest.approx(30, abs=0.01)
        (md,) = await p.hc.list_sessions(agent_id=al.agent_id, include_terminal=True)
        assert (md.state, md.close_reason) == (SessionState.CLOSED, "invite_timeout")
        invite = await al.next_envelope(predicate=of_type(EV_CHANNEL_INVITE), timeout=0.1)
        with pytest.raises(ProtocolError):
            await al.accept_invite(invite)  # too late


async def test_an_offline_agent_cannot_ack(autojump_clock: MockClock) -> None:
    async with open_hub_pair(invite_ack_timeout=5) as p:
        other = p.client()
        await p.scripted("bot", hc=other)
        await other.close()
        al = await p.human("al")
        with pytest.raises(
            ProtocolError,
            match=r"no ack within 5s from 'bot' \(\S+, not connected\) \(invites are acked by "
            r"the invitee's client: is it connected\?\)",
        ):
            await al.open(type="consulting", target="bot")


async def test_a_quorum_of_acks_opens_a_session(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        ada, _ = await p.scripted("ada")
        bob, _ = await p.scripted("bob")
        slow = await p.human("slow", auto_ack_invites=False)
        md = await p.hc.create_session(
            creator_id=ada.agent_id,
            manifest_type="discussion",
            participants=[bob.agent_id, slow.agent_id],
            required_acks=1,
            knobs={"ordering": "round_robin"},
        )
        assert md.state is SessionState.ACTIVE
        assert md.pending_acks == (slow.agent_id,)
        assert md.knobs == {"ordering": "round_robin"}
        invite = await slow.next_envelope(predicate=of_type(EV_CHANNEL_INVITE), timeout=WAIT)
        await slow.accept_invite(invite)  # a late ack is still taken
        assert (await p.hc.get_session(md.session_id)).pending_acks == ()
