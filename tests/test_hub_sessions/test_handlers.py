"""Handlers on a running hub: remove, applies_to, failures that retry, unsupported ones."""

from __future__ import annotations

from typing import Any, ClassVar

import trio
from trio.testing import MockClock

from tests.harness import open_hub_pair
from troupe import EV_EXPECTATION_VIOLATED, AccessBlock, Rule, StoreError
from troupe.hub._expectations import EXPECT_NS
from troupe.model import Expectation, SessionState
from troupe.session_types import DiscussionType
from troupe.store import MemoryStore


class Relay(DiscussionType):
    """A discussion whose stalled speakers leave after a minute."""

    name = "relay"
    declared_expectations: ClassVar[tuple[Expectation, ...]] = (
        Expectation(name="turn_within", on_violation="remove", params={"seconds": 60}),
    )


class Picky(DiscussionType):
    """A discussion that warns only when its respondent stalls."""

    name = "picky"
    declared_expectations: ClassVar[tuple[Expectation, ...]] = (
        Expectation(
            name="turn_within",
            on_violation="warn",
            params={"seconds": 60},
            applies_to=("respondent",),
        ),
    )


class Warner(DiscussionType):
    """A discussion that warns a speaker who stalls for a minute."""

    name = "warner"
    declared_expectations: ClassVar[tuple[Expectation, ...]] = (
        Expectation(name="turn_within", on_violation="warn", params={"seconds": 60}),
    )


class Notifier(DiscussionType):
    """The same discussion, with ``notify_session`` (the reference's ``notify_channel``)."""

    name = "notifier"
    declared_expectations: ClassVar[tuple[Expectation, ...]] = (
        Expectation(name="turn_within", on_violation="notify_session", params={"seconds": 60}),
    )


class Odd(DiscussionType):
    """A discussion declaring expectations the hub cannot run."""

    name = "odd"
    declared_expectations: ClassVar[tuple[Expectation, ...]] = (
        Expectation(name="eventually", on_violation="warn"),
        Expectation(name="turn_within", on_violation="shout"),
        Expectation(name="turn_within", on_violation="warn", params={"seconds": "soon"}),
    )


async def test_remove_drops_stalled_speakers_until_nobody_is_left(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair(session_types=[Relay()]) as net:
        (a, b, c), sid = await net.people_session("relay", "a", "b", "c", kickoff="kickoff")
        await trio.sleep(60)
        [gone] = await net.hub.check_expectations()
        assert (gone.on_violation, gone.violators) == ("remove", (b.agent_id,))
        state = net.hub.session_state(sid)
        assert state.participant_order == (a.agent_id, c.agent_id)
        assert state.expected_next_speaker == c.agent_id
        await c.send(sid, "on it")
        await a.send(sid, "thanks")  # b's place is gone: the floor goes straight to c
        assert net.hub.session_state(sid).expected_next_speaker == c.agent_id
        for _ in range(2):  # c stalls, then a
            await trio.sleep(60)
            assert len(await net.hub.check_expectations()) == 1
        md = await net.hub.get_session(sid)
        assert (md.state, md.close_reason) == (SessionState.CLOSED, "no_participants")


async def test_notify_session_does_what_warn_does_under_its_own_name(
    autojump_clock: MockClock,
) -> None:
    # The reference makes notify_channel an alias of warn: the same notice to everyone,
    # from the creator, and the floor stays with the stalled speaker (unlike hide). Only
    # the handler's name differs, in the notice, the violation and the audit record.
    async with open_hub_pair(session_types=[Warner(), Notifier()]) as net:
        (a, b, c), warned = await net.people_session("warner", "a", "b", "c", kickoff="kickoff")
        (d, e, f), notified = await net.people_session("notifier", "d", "e", "f", kickoff="kickoff")
        await trio.sleep(60)
        fired = await net.hub.check_expectations()
        assert [(v.session_id, v.on_violation, v.violators) for v in fired] == [
            (warned, "warn", (b.agent_id,)),
            (notified, "notify_session", (e.agent_id,)),
        ]
        await trio.sleep(60)
        assert await net.hub.check_expectations() == []  # the same missed turn: once
        notices = {}
        for sid, people in ((warned, (a, b, c)), (notified, (d, e, f))):
            [notice] = await net.notices(sid)
            assert notice.sender_id == people[0].agent_id
            assert notice.audience == tuple(p.agent_id for p in people)
            assert net.hub.session_state(sid).expected_next_speaker == people[1].agent_id
            delivered = await people[2].wait_for_channel_event(
                channel_id=sid, predicate=lambda env: env.event_type == EV_EXPECTATION_VIOLATED
            )
            assert delivered.envelope_id == notice.envelope_id
            notices[sid] = notice.event_data
        assert notices[notified] == {
            **notices[warned],
            "on_violation": "notify_session",
            "violators": [e.agent_id],
        }
        assert notices[warned]["on_violation"] == "warn"
        records = [r for r in await net.hub.read_audit() if r["kind"] == "expectation_violated"]
        assert [(r["session_id"], r["on_violation"]) for r in records] == [
            (warned, "warn"),
            (notified, "notify_session"),
        ]


async def test_applies_to_limits_the_violators(autojump_clock: MockClock) -> None:
    async with open_hub_pair(session_types=[Picky()]) as net:
        (a, b), sid = await net.people_session("picky", "a", "b")
        await trio.sleep(60)  # a (the initiator) stalls: not covered
        assert await net.hub.check_expectations() == []
        await a.send(sid, "go")
        await trio.sleep(60)
        [fired] = await net.hub.check_expectations()
        assert fired.violators == (b.agent_id,)


async def test_a_failing_handler_is_retried_on_the_next_tick(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as net:
        (a, b), sid = await net.people_session("discussion", "a", "b", kickoff="kickoff")
        # The creator may not address anyone: the notice (from the creator) is refused.
        await net.hub.set_rule(a.agent_id, Rule(access=AccessBlock(outbound_to=["nobody"])))
        await trio.sleep(120)
        assert await net.hub.check_expectations() == []
        assert await net.notices(sid) == []
        await net.hub.set_rule(a.agent_id, Rule())
        [fired] = await net.hub.check_expectations()
        assert fired.violators == (b.agent_id,)
        assert len(await net.notices(sid)) == 1


class ForgetfulStore(MemoryStore):
    """Fails the next write of an expectation's dedup key, as a crash there would."""

    fail_next_mark = False

    async def put_kv(self, namespace: str, key: str, value: Any) -> None:
        if namespace == EXPECT_NS and self.fail_next_mark:
            self.fail_next_mark = False
            raise StoreError(f"disk full writing {key}")
        await super().put_kv(namespace, key, value)


async def test_a_notice_posted_but_not_marked_is_not_posted_twice(
    autojump_clock: MockClock,
) -> None:
    store = ForgetfulStore()
    async with open_hub_pair(store) as net:
        _, sid = await net.people_session("discussion", "a", "b", kickoff="kickoff")
        await trio.sleep(120)
        store.fail_next_mark = True
        # The mark could not be saved: the session is skipped this tick (logged), the sweep
        # goes on, and the violation is not reported as fired.
        assert await net.hub.check_expectations() == []
        assert len(await net.notices(sid)) == 1
        assert len(await net.hub.check_expectations()) == 1  # fires (marks) again...
        assert len(await net.notices(sid)) == 1  # ...but the notice is not appended twice
        assert await net.hub.check_expectations() == []


async def test_unsupported_expectations_are_reported_once(autojump_clock: MockClock) -> None:
    async with open_hub_pair(session_types=[Odd()]) as net:
        _, sid = await net.people_session("odd", "a", "b")
        await trio.sleep(7200)
        assert await net.hub.check_expectations() == []
        assert await net.hub.check_expectations() == []
        records = [r for r in await net.hub.read_audit() if r["kind"] == "expectation_unsupported"]
        assert [(r["session_id"], r["expectation"], r["on_violation"]) for r in records] == [
            (sid, "eventually", "warn"),
            (sid, "turn_within", "shout"),
            (sid, "turn_within", "warn"),
        ]
        assert "seconds must be a non-negative number, got 'soon'" in records[2]["reason"]
