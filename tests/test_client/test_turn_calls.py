"""A turn is decided from what the client already has: no hub call before ``respond``.

Deliveries carry the session's published status (metadata, the session type's state,
``last_seq``); the turn handler reads ``can_send`` and whose turn it is from the latest one,
skips the "answered already?" question for deliveries the hub sent fresh with their post,
and folds its own replies as the hub accepts them instead of reading them back from the WAL.
A stale status may start a turn; the hub still refuses what it must.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from troupe import EV_SESSION_CLOSED, Envelope, SessionState, Turn
from troupe.api import Request
from troupe.hub import Hub

from ..harness import WAIT, HubPair, from_, open_hub_pair


class _Spy:
    """Counts the requests a HubClient sends to the hub, by record type."""

    def __init__(self, hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: Counter[str] = Counter()
        self.on = True
        call = hub.call

        async def counted(request: Request[Any], **kw: Any) -> Any:
            if self.on:
                self.asked[type(request).__name__] += 1
            return await call(request, **kw)

        monkeypatch.setattr(hub, "call", counted)


async def _chat(p: HubPair, turns: int) -> tuple[Any, Any, str]:
    sage, echo = await p.scripted("sage")
    al = await p.human("al")
    ch = await al.open(type="conversation", target="sage", knobs={"max_turns": None})
    for i in range(turns):
        await al.send(ch.session_id, f"m{i}")
        await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(sage), timeout=WAIT
        )
    return sage, echo, ch.session_id


async def test_a_turn_asks_the_hub_nothing_but_to_post_its_answer(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_hub_pair() as p:
        sage, echo = await p.scripted("sage")
        al = await p.human("al")
        spy = _Spy(p.hub, monkeypatch)
        ch = await al.open(type="conversation", target="sage", knobs={"max_turns": None})
        await p.settle()
        assert spy.asked == {"GetAgent": 1, "CreateSession": 1, "PostEnvelope": 1}  # the ack
        spy.asked.clear()
        for i in range(50):
            await al.send(ch.session_id, f"m{i}")
            await al.wait_for_channel_event(
                channel_id=ch.session_id, predicate=from_(sage), timeout=WAIT
            )
        assert len(echo.turns) == 50
        # The person's 50 posts and the agent's 50 answers, nothing else: no get_session,
        # can_send, pending turn, causation lookup or WAL read, not even on the first turn.
        assert spy.asked == {"PostEnvelope": 100}
        assert p.hc.fresh_deliveries == set()
        status = p.hc.session_status(ch.session_id)
        assert status is not None
        assert status.metadata is not None
        assert status.metadata.state is SessionState.ACTIVE
        # The last answer was delivered to al (on this client too), with its status.
        assert status.last_seq == (await p.wal(ch.session_id))[-1].seq


async def test_a_replayed_trigger_asks_whether_it_was_answered(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_hub_pair() as p:
        sage, echo, sid = await _chat(p, 3)
        spy = _Spy(p.hub, monkeypatch)
        last_question = [e for e in await p.wal(sid) if e.sender_id != sage.agent_id][-1]
        await sage.receive(last_question)  # delivered again, not by its post's dispatch
        # Answered already: the hub says so (one O(1) lookup), and no turn runs.
        assert spy.asked["FindEnvelopeByCausation"] == 1
        assert len(echo.turns) == 3


async def test_a_session_closed_meanwhile_reaches_the_client_before_the_next_turn(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = trio.Event()

    async with open_hub_pair() as p:
        _, scripted = await p.scripted("sage")
        al = await p.human("al")
        ch = await al.open(type="conversation", target="sage", knobs={"max_turns": None})
        asked: list[str] = []
        real = scripted.respond

        async def respond(turn: Turn) -> Any:
            asked.append(turn.text)
            if turn.text == "first":
                await release.wait()
                return None  # a silent round
            return await real(turn)

        monkeypatch.setattr(scripted, "respond", respond)
        await al.send(ch.session_id, "first")
        await p.settle()  # sage's turn on "first" is running
        await al.send(ch.session_id, "second")
        await al.close_channel(ch.session_id)
        await p.settle()  # "second" and the close notice wait behind the running turn
        spy = _Spy(p.hub, monkeypatch)
        release.set()
        await p.settle()
        # The close notice brought the session's new status when it arrived, before the
        # turn on "second" was considered: no turn, and nothing asked of the hub.
        assert asked == ["first"]
        assert spy.asked == Counter()


async def test_a_stale_status_never_gets_a_post_past_the_hub(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    speak = False
    async with open_hub_pair() as p:
        sage, scripted = await p.scripted("sage", lambda turn: "late" if speak else None)
        al = await p.human("al")
        ch = await al.open(type="conversation", target="sage", knobs={"max_turns": None})
        sid = ch.session_id
        await al.send(sid, "quiet")
        await p.settle()
        (turn,) = scripted.turns  # a silent round: nothing answers "quiet"
        stale = p.hc.session_status(sid)
        assert stale is not None
        await p.hc.close_session(sid)
        await p.settle()
        before = await p.wal(sid)
        # As if the close had not reached this client: its status still says ACTIVE, and
        # the delivery counts as fresh (so the client asks nothing before the turn).
        p.hc._statuses[sid] = stale
        p.hc._router.fresh.add((sage.agent_id, sid, turn.envelope.seq))
        speak = True
        spy = _Spy(p.hub, monkeypatch)
        await sage.handle(turn.envelope)
        assert len(scripted.turns) == 2  # the turn ran on the stale status...
        # (Its history is read from the WAL: the view had folded past this old trigger.)
        assert spy.asked - Counter({"ReadWal": 1}) == {"PostEnvelope": 1, "ReportTurnFailure": 1}
        assert await p.wal(sid) == before  # ...and the hub refused its answer
        assert [r["agent_id"] for r in await p.audit("turn_failed")] == [sage.agent_id]


async def test_a_client_without_a_status_asks_the_hub_as_before(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_hub_pair() as p:
        sage, echo, sid = await _chat(p, 1)
        p.hc._forget_status(sid)
        question = [e for e in await p.wal(sid) if e.sender_id != sage.agent_id][-1]
        spy = _Spy(p.hub, monkeypatch)
        await sage.handle(question)
        assert len(echo.turns) == 1  # answered already: found by the hub
        assert spy.asked["GetSession"] == 1
        assert spy.asked["CanSend"] == 1
        assert spy.asked["FindEnvelopeByCausation"] == 1


async def test_statuses_are_let_go_when_the_session_ends(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        _, _, sid = await _chat(p, 2)
        assert p.hc.session_status(sid) is not None
        await p.hc.close_session(sid)
        await p.settle()
        assert p.hc.session_status(sid) is None
        assert p.hc._probes == {}


async def test_a_status_stays_while_another_identity_of_the_client_still_needs_it(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two agents on one HubClient, in one session. The session ends: one of them handles
    # the end while the other still has a delivery of that session queued behind a running
    # turn. The status must stay until the other is done with the session too, or its next
    # delivery asks the hub for what the client had.
    ann_may_end, ben_may_go_on = trio.Event(), trio.Event()
    async with open_hub_pair() as p:
        ann, _ = await p.scripted("ann")
        _, scripted = await p.scripted("ben")
        asked: list[str] = []

        async def respond(turn: Turn) -> None:
            asked.append(turn.text)
            if turn.text == "first":
                await ben_may_go_on.wait()

        async def held(envelope: Envelope) -> None:
            if envelope.event_type == EV_SESSION_CLOSED:
                await ann_may_end.wait()

        monkeypatch.setattr(scripted, "respond", respond)
        ann.on_envelope(held)
        ch = await ann.open(type="conversation", target="ben", knobs={"max_turns": None})
        await ann.send(ch.session_id, "first")
        await p.settle()  # ben's turn on "first" is running
        await ann.send(ch.session_id, "second")
        await ch.close()
        await p.settle()  # every delivery of the session reached the client
        ann_may_end.set()
        await p.settle()  # ann handled the end; ben's "second" and end wait behind his turn
        kept = p.hc.session_status(ch.session_id)
        spy = _Spy(p.hub, monkeypatch)
        ben_may_go_on.set()
        await p.settle()
        # ben's "second" was decided from the status the end brought: no turn on a closed
        # session, and nothing asked of the hub.
        assert asked == ["first"]
        assert spy.asked == Counter()
        assert kept is not None
        # Both are done with the session: its status is let go.
        assert p.hc.session_status(ch.session_id) is None
        assert p.hc._probes == {}
