"""The expectation sweeper on a running hub: when each evaluator fires, and each handler."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from tests.harness import open_hub_pair
from troupe import Passport, ProtocolError
from troupe.hub import ExpectationViolation
from troupe.model import EV_EXPECTATION_VIOLATED, EV_SESSION_CLOSED, Envelope, SessionState


async def test_turn_within_warns_the_stalled_speaker_once(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as net:
        (a, b, c), sid = await net.people_session("discussion", "a", "b", "c", kickoff="kickoff")
        await trio.sleep(119.9)
        assert await net.hub.check_expectations() == []
        await trio.sleep(0.1)
        assert await net.hub.check_expectations() == [
            ExpectationViolation(
                session_id=sid,
                expectation="turn_within",
                on_violation="warn",
                violators=(b.agent_id,),
                detail={"threshold_seconds": 120.0, "elapsed_seconds": 120.0},
            )
        ]
        await trio.sleep(60)
        assert await net.hub.check_expectations() == []  # same missed turn: no second warning
        [notice] = await net.notices(sid)
        assert notice.sender_id == a.agent_id
        assert notice.audience == (a.agent_id, b.agent_id, c.agent_id)
        assert notice.event_data == {
            "expectation": "turn_within",
            "on_violation": "warn",
            "violators": [b.agent_id],
            "detail": {"threshold_seconds": 120.0, "elapsed_seconds": 120.0},
        }
        assert net.hub.session_state(sid).expected_next_speaker == b.agent_id  # warn only
        delivered = await c.wait_for_channel_event(
            channel_id=sid, predicate=lambda e: e.event_type == EV_EXPECTATION_VIOLATED
        )
        assert delivered.envelope_id == notice.envelope_id
        await b.send(sid, "sorry")  # a new turn (c's) is a new episode
        await trio.sleep(120)
        [fired] = await net.hub.check_expectations()
        assert fired.violators == (c.agent_id,)


async def test_hide_passes_the_floor_and_restarts_the_clock(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as net:
        (a, b, c), sid = await net.people_session("discussion", "a", "b", "c", kickoff="kickoff")
        await trio.sleep(120)
        await net.hub.check_expectations()  # the warning
        await trio.sleep(480)
        [hidden] = await net.hub.check_expectations()
        assert (hidden.on_violation, hidden.violators) == ("hide", (b.agent_id,))
        state = net.hub.session_state(sid)
        assert state.expected_next_speaker == c.agent_id
        assert state.participant_order == (a.agent_id, b.agent_id, c.agent_id)
        # c's clock starts at the hide notice, not at the kickoff.
        await trio.sleep(119)
        assert await net.hub.check_expectations() == []
        await trio.sleep(1)
        [warned] = await net.hub.check_expectations()
        assert (warned.on_violation, warned.violators) == ("warn", (c.agent_id,))
        await c.send(sid, "here")
        assert net.hub.session_state(sid).expected_next_speaker == a.agent_id


async def test_auto_close_on_an_unanswered_consultation(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as net:
        (a, b), sid = await net.people_session("consulting", "a", "b")
        await a.send(sid, "question?")
        await trio.sleep(599)
        assert await net.hub.check_expectations() == []
        await trio.sleep(1)
        [fired] = await net.hub.check_expectations()
        assert (fired.expectation, fired.violators) == ("reply_within", (b.agent_id,))
        md = await net.hub.get_session(sid)
        assert (md.state, md.close_reason) == (
            SessionState.CLOSED,
            "expectation_violated:reply_within",
        )
        wal = await net.hub.read_wal(sid)
        assert wal[-1].event_type == EV_SESSION_CLOSED
        assert await net.notices(sid) == []
        assert await net.hub.check_expectations() == []


async def test_acks_within_closes_a_handshake_that_stalls(autojump_clock: MockClock) -> None:
    async with open_hub_pair(invite_ack_timeout=100) as net:
        a = (await net.people("a"))[0]
        await net.hc.register_human(Passport(name="b"), auto_ack_invites=False)
        failure: list[ProtocolError] = []

        async def open_it() -> None:
            try:
                await a.open(type="consulting", target="b")
            except ProtocolError as exc:
                failure.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_it)
            await trio.sleep(30)
            [fired] = await net.hub.check_expectations()
        assert (fired.expectation, fired.on_violation) == ("acks_within", "auto_close")
        assert "expectation_violated:acks_within" in str(failure[0])


async def test_audit_only_records(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as net:
        (a, b), sid = await net.people_session("conversation", "a", "b")
        await a.send(sid, "hi")
        await trio.sleep(3600)
        [fired] = await net.hub.check_expectations()
        assert (fired.expectation, fired.on_violation, fired.violators) == (
            "max_silence",
            "audit",
            (),
        )
        assert await net.notices(sid) == []
        records = [r for r in await net.hub.read_audit() if r["kind"] == "expectation_violated"]
        assert [(r["session_id"], r["expectation"], r["violators"]) for r in records] == [
            (sid, "max_silence", [])
        ]
        await trio.sleep(3600)
        assert await net.hub.check_expectations() == []  # the same silence
        await b.send(sid, "still there")
        await trio.sleep(3600)
        assert len(await net.hub.check_expectations()) == 1  # a new one


async def test_only_the_hub_posts_notices_or_uses_its_keys(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as net:
        (a, _), sid = await net.people_session("discussion", "a", "b")
        forged = Envelope(
            session_id=sid,
            sender_id=a.agent_id,
            event_type=EV_EXPECTATION_VIOLATED,
            event_data={"expectation": "turn_within", "on_violation": "remove", "violators": []},
        )
        with pytest.raises(
            ProtocolError, match=r"'troupe\.expectation\.violated' is posted by the hub"
        ):
            await a.post_envelope(forged)
        assert await net.notices(sid) == []
        squatter = Envelope(
            session_id=sid,
            sender_id=a.agent_id,
            event_type="user.note",
            idempotency_key="troupe:expectation:whatever",
        )
        with pytest.raises(ProtocolError, match="idempotency keys starting 'troupe:' are the hub"):
            await a.post_envelope(squatter)


async def test_the_sweeper_runs_on_its_own_interval(autojump_clock: MockClock) -> None:
    async with open_hub_pair(expectation_sweep_interval=10) as net:
        _, sid = await net.people_session("discussion", "a", "b", kickoff="kickoff")
        await trio.sleep(115)
        assert await net.notices(sid) == []
        await trio.sleep(15)
        assert [n.event_data["on_violation"] for n in await net.notices(sid)] == ["warn"]


async def test_an_interval_of_zero_runs_no_sweeper(autojump_clock: MockClock) -> None:
    async with open_hub_pair(expectation_sweep_interval=0) as net:
        _, sid = await net.people_session("discussion", "a", "b", kickoff="kickoff")
        await trio.sleep(700)
        assert await net.notices(sid) == []
        assert len(await net.hub.check_expectations()) == 2  # both were due all along


async def test_a_session_that_cannot_be_loaded_does_not_stop_the_sweep(
    autojump_clock: MockClock,
) -> None:
    from troupe.store import MemoryStore
    from troupe.testing import FaultyStore

    store = FaultyStore(MemoryStore())
    async with open_hub_pair(store, passivate_after=None) as net:
        (a, _), bad = await net.people_session("conversation", "a", "b")
        (c, _), good = await net.people_session("conversation", "c", "d")
        await a.send(bad, "hi")
        await c.send(good, "hi")
    # After a restart the first session cannot be recovered (its snapshot cannot be read):
    # the hub leaves it unloaded, and each sweep used to crash on it.
    store.fail_next("load_snapshot", None, session_id=bad)
    async with open_hub_pair(store, passivate_after=None) as net:
        await trio.sleep(3600)
        fired = await net.hub.check_expectations()
        assert [(v.session_id, v.expectation) for v in fired] == [(good, "max_silence")]
        assert await net.hub.check_expectations() == []  # and the next tick runs too
