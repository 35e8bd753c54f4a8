"""A session actor restarted after a crash goes on from the metadata the store holds."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from troupe import Passport, ProtocolError, Turn
from troupe.hub._session_parts import SendInvites
from troupe.hub._sessions import SessionSupervisor
from troupe.model import EV_SESSION_CLOSED, SessionState
from troupe.testing import CrashPoints

from ..harness import open_hub_pair


class Silent:
    async def respond(self, turn: Turn) -> str | None:
        await trio.lowlevel.checkpoint()
        return None


@pytest.mark.parametrize("point", ["after_append", "after_fold"])
async def test_an_ack_appended_before_a_crash_still_opens_the_session(
    autojump_clock: trio.testing.MockClock, point: str
) -> None:
    # Post 1 is the invite, post 2 the ack: the crash comes after the ack (and the metadata
    # without its pending ack) was written, before the new metadata was published.
    faults = CrashPoints()
    faults.crash_at(point, after=1)
    async with open_hub_pair(faults=faults, invite_ack_timeout=30) as h:
        hub, hc = h.hub, h.hc
        ann = await hc.register(Silent(), Passport(name="ann"))
        await hc.register(Silent(), Passport(name="bob"))
        with trio.fail_after(5):  # well before the invite timeout
            channel = await ann.open(type="conversation", target="bob")
        assert channel.metadata.state is SessionState.ACTIVE
        assert hub.statistics().session_restarts == 1
        wal = await hub.read_wal(channel.session_id)
        assert [e.seq for e in wal] == [1, 2, 3]


async def test_an_open_whose_invites_failed_closes_the_session_even_if_acked(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash storm's race, made deterministic: the invites went out (the second crash
    came after the invite's dispatch), bob acked meanwhile so the session went ACTIVE, and
    only then did ``open`` hear that SendInvites crashed twice. ``open`` raises, and must
    close the session: it closed it only while pending, so it stayed open with its creator
    told it was not, and nobody closed it."""
    states: list[SessionState] = []
    ask = SessionSupervisor.ask

    async def crashed_twice_after_the_ack(
        self: SessionSupervisor, session_id: str, msg: Any
    ) -> Any:
        answer = await ask(self, session_id, msg)
        if isinstance(msg, SendInvites):
            entry = self.directory.get(session_id)
            md = await entry.wait_for(lambda md: md.state is not SessionState.PENDING)
            states.append(md.state)
            raise ProtocolError(f"session {session_id} crashed twice handling SendInvites")
        return answer

    monkeypatch.setattr(SessionSupervisor, "ask", crashed_twice_after_the_ack)
    async with open_hub_pair(invite_ack_timeout=30) as h:
        hub, hc = h.hub, h.hc
        ann = await hc.register(Silent(), Passport(name="ann"))
        await hc.register(Silent(), Passport(name="bob"))
        with trio.fail_after(5), pytest.raises(ProtocolError, match="crashed twice"):
            await ann.open(type="conversation", target="bob")
        await h.settle()
        assert states == [SessionState.ACTIVE]  # acked before open() heard of the failure
        assert hub.statistics().open_sessions == 0
        (md,) = await hc.list_sessions(include_terminal=True)
        assert (md.state, md.close_reason) == (SessionState.CLOSED, "invite_failed")
        wal = await hub.read_wal(md.session_id)
        assert wal[-1].event_type == EV_SESSION_CLOSED
