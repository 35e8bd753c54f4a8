"""An invitee's consent (issue 13): a human that does not ack its invites sees nothing of a
session but the invite, even once others' acks opened it; accepting brings what it missed."""

from __future__ import annotations

import pytest
from trio.testing import MockClock

from troupe import EV_CHANNEL_INVITE, EV_SESSION_OPENED, EV_TEXT, SessionState

from ..harness import open_hub_pair


async def test_a_human_that_has_not_accepted_sees_only_the_invite(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        bea = await p.human("bea")
        cy = await p.human("cy", auto_ack_invites=False)
        md = await p.hc.create_session(
            creator_id=al.agent_id,
            manifest_type="discussion",
            participants=[bea.agent_id, cy.agent_id],
            required_acks=1,
        )
        assert md.state is SessionState.ACTIVE
        await al.send(md.session_id, "not for cy yet")
        await p.settle()
        invite = await cy.next_envelope(timeout=0.1)
        assert invite.event_type == EV_CHANNEL_INVITE
        with pytest.raises(TimeoutError):
            await cy.next_envelope(timeout=0.1)
        await cy.accept_invite(invite)
        await p.settle()
        caught_up = [await cy.next_envelope(timeout=0.1) for _ in range(2)]
        assert [e.event_type for e in caught_up] == [EV_SESSION_OPENED, EV_TEXT]
        assert caught_up[1].event_data == {"text": "not for cy yet"}
        await bea.send(md.session_id, "and now you are in")
        later = await cy.next_envelope(timeout=1)
        assert later.event_data == {"text": "and now you are in"}
