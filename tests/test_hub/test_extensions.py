"""Listeners on the event stream, and what a hub lets its user register: evaluators,
violation handlers, auction arbiters and sweepers."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from troupe import ProtocolError
from troupe.hub import (
    ExpectationViolated,
    ExpectationViolation,
    Hub,
    HubEvent,
    HubListener,
    Late,
    Mark,
    Seen,
)
from troupe.hub._listeners import DRAIN_S
from troupe.model import (
    EV_SESSION_OPENED,
    EV_TEXT,
    Envelope,
    Expectation,
    SessionState,
    TaskMetadata,
    TaskSpec,
    TaskState,
)
from troupe.session_types import EV_AUCTION_SELECT, AuctionPhase, ConversationType

from ..harness import Agent, HubPair, open_hub_pair, text_envelope

# -- listeners -------------------------------------------------------------------------------


class Recorder(HubListener):
    """Writes down every hook call it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def on_agent_event(self, agent_id: str, kind: str, payload: dict[str, Any]) -> None:
        self.calls.append(("agent", kind, payload.get("name")))

    async def on_session_event(self, session_id: str, kind: str, payload: dict[str, Any]) -> None:
        self.calls.append(("session", kind, payload.get("reason")))

    async def on_envelope_posted(self, envelope: Envelope) -> None:
        self.calls.append(("posted", envelope.seq, envelope.event_type))

    async def on_task_event(self, task_id: str, kind: str, payload: dict[str, Any]) -> None:
        self.calls.append(("task", task_id, kind))

    async def on_turn_failed(
        self, session_id: str, agent_id: str, envelope_id: str, exc_type: str, exc_message: str
    ) -> None:
        self.calls.append(("turn_failed", envelope_id, exc_type))

    async def on_expectation_fired(self, session_id: str, violation: ExpectationViolation) -> None:
        self.calls.append(("expectation", violation.expectation, violation.on_violation))

    async def on_missed(self, count: int) -> None:
        self.calls.append(("missed", count))

    async def on_envelope_rejected(
        self, session_id: str, sender_id: str, event_type: str, code: str, message: str
    ) -> None:
        self.calls.append(("rejected", sender_id, event_type, code))

    async def on_dispatch_failed(
        self, session_id: str, seq: int, recipient_id: str, reason: str
    ) -> None:
        self.calls.append(("dispatch_failed", seq, recipient_id))


class SyncPosts:
    """A listener that is no HubListener, with one plain (not async) hook."""

    def __init__(self) -> None:
        self.texts: list[str | None] = []

    def on_envelope_posted(self, envelope: Envelope) -> None:
        if envelope.event_type == EV_TEXT:
            self.texts.append(envelope.text)


class Broken(HubListener):
    def __init__(self) -> None:
        self.tries = 0

    async def on_event(self, event: HubEvent) -> None:
        self.tries += 1
        raise RuntimeError("listener bug")


async def test_listeners_get_the_reference_s_hooks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder, posts = Recorder(), SyncPosts()
    async with open_hub_pair(listeners=[recorder]) as h:
        h.hub.add_listener(posts)
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        await h.say(md, alice, "hello")
        await h.hub.observe_task(
            TaskMetadata(task_id="t", owner_id=alice.id, spec=TaskSpec(title="t"))
        )
        await h.hub.update_task("t", state=TaskState.FAILED)
        await h.hub.report_turn_failure(
            session_id=md.session_id, agent_id=bob.id, envelope_id="e9", exc=ValueError("x")
        )
        await h.hub.close_session(md.session_id, reason="done")
        await h.settle()
        assert recorder.calls == [
            ("agent", "registered", "alice"),
            ("agent", "registered", "bob"),
            ("session", "created", None),
            ("posted", 1, "troupe.session.invite"),
            ("posted", 2, "troupe.session.invite.ack"),
            ("posted", 3, "troupe.session.opened"),
            ("session", "opened", None),
            ("posted", 4, EV_TEXT),
            ("task", "t", "observed"),
            ("task", "t", "failed"),  # once: its move to failed is its termination
            ("turn_failed", "e9", "ValueError"),
            ("posted", 5, "troupe.session.closed"),
            ("session", "closed", "done"),
        ]
        assert posts.texts == ["hello"]


async def test_a_refused_post_reaches_on_envelope_rejected_with_its_code(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    recorder = Recorder()
    h.hub.add_listener(recorder)
    refused = attrs.evolve(text_envelope(md, alice), event_type=EV_SESSION_OPENED)
    with pytest.raises(ProtocolError):
        await h.hub.post_envelope(refused)
    await h.settle()
    assert recorder.calls == [("rejected", alice.id, EV_SESSION_OPENED, "protocol_error")]


async def test_a_failing_listener_is_logged_and_the_hub_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, h: HubPair
) -> None:
    broken, recorder = Broken(), Recorder()
    h.hub.add_listener(broken)
    h.hub.add_listener(recorder)
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    await h.say(md, alice, "still fine")
    await h.settle()
    assert broken.tries == 9  # every event reached it, each failure was its own
    assert ("posted", 4, EV_TEXT) in recorder.calls
    failures = [r for r in caplog.records if r.name == "troupe.hub.listeners"]
    assert len(failures) == 9
    assert "listener bug" in (failures[0].exc_text or "")
    assert not [r for r in await h.hub.read_audit() if "listener" in r["kind"]]


async def test_a_removed_listener_hears_nothing_more(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    recorder = Recorder()
    h.hub.add_listener(recorder)
    with pytest.raises(ValueError, match="already added"):
        h.hub.add_listener(recorder)
    await h.agent("alice")
    await h.settle()
    h.hub.remove_listener(recorder)
    h.hub.remove_listener(recorder)  # no-op
    await h.agent("bob")
    await h.settle()
    assert recorder.calls == [("agent", "registered", "alice")]
    assert h.hub.core.events.subscribers == ()


async def test_a_slow_listener_misses_events_and_is_told(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    release = trio.Event()

    class Slow(Recorder):
        async def on_agent_event(self, agent_id: str, kind: str, payload: dict[str, Any]) -> None:
            await release.wait()
            await super().on_agent_event(agent_id, kind, payload)

    slow = Slow()
    h.hub.add_listener(slow, capacity=2)
    for n in range(6):
        await h.agent(f"a{n}")  # the hub does not wait for the listener
    await h.settle()
    release.set()
    await h.settle()
    assert slow.calls == [
        ("agent", "registered", "a0"),  # being handled while the others came
        ("agent", "registered", "a1"),
        ("agent", "registered", "a2"),
        ("missed", 3),
    ]


async def test_a_closing_hub_lets_its_listeners_finish_what_they_hold(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with open_hub_pair(listeners=[recorder]) as h:
        for n in range(3):
            await h.agent(f"a{n}")
        # no settle: the block ends with the events still buffered
    assert recorder.calls == [("agent", "registered", f"a{n}") for n in range(3)]


# -- evaluators and handlers -----------------------------------------------------------------


def chatty(expectation: Expectation, seen: Seen) -> list[Late]:
    """Late: the whole session, once it holds more than ``max`` envelopes."""
    if seen.activity.last_seq > expectation.params["max"]:
        return [Late("", Mark(seen.now, seen.activity.last_seq))]
    return []


async def never_called(hub: Hub, violation: ExpectationViolation) -> None:
    raise AssertionError("the handler of a violation that never fired")


class Watched(ConversationType):
    name = "watched"
    declared_expectations = (Expectation(name="chatty", on_violation="page", params={"max": 4}),)


async def test_a_registered_evaluator_and_handler_fire_a_violation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    paged: list[tuple[Hub, ExpectationViolation]] = []

    async def page(hub: Hub, violation: ExpectationViolation) -> None:
        paged.append((hub, violation))

    async with open_hub_pair(session_types=[Watched()], expectation_sweep_interval=0) as h:
        hub = h.hub
        hub.register_expectation_evaluator("chatty", chatty)
        hub.register_violation_handler("page", page)
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("watched", alice, bob)
        await h.say(md, alice, "one")  # seq 4: not yet
        assert await hub.check_expectations() == []
        async with hub.open_events(ExpectationViolated) as events:
            await h.say(md, bob, "two")  # seq 5
            fired = await hub.check_expectations()
            assert await hub.check_expectations() == []  # once per episode
            event = events.receive_nowait()
    assert [(v.expectation, v.on_violation, v.violators) for v in fired] == [("chatty", "page", ())]
    assert paged == [(hub, fired[0])]
    assert isinstance(event, ExpectationViolated)
    assert event.violation == fired[0]
    assert fired[0].detail == {"elapsed_seconds": 0.0}


async def test_names_are_refused_when_taken_unless_replaced(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    hub = h.hub

    async def nothing(hub: Hub, violation: ExpectationViolation) -> None:
        pass

    with pytest.raises(ValueError, match="evaluator 'max_silence' is already registered"):
        hub.register_expectation_evaluator("max_silence", chatty)
    with pytest.raises(ValueError, match="violation handler 'warn' is already registered"):
        hub.register_violation_handler("warn", nothing)
    with pytest.raises(ValueError, match="arbiter 'first_bid' is already registered"):
        hub.register_auction_arbiter("first_bid", lambda bids: None)
    with pytest.raises(ValueError, match="must be a non-empty str"):
        hub.register_auction_arbiter("", lambda bids: None)
    with pytest.raises(ValueError, match="must be callable"):
        hub.register_violation_handler("x", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="state must be PENDING or ACTIVE"):
        hub.register_expectation_evaluator("x", chatty, state=SessionState.CLOSED)
    hub.register_violation_handler("mine", nothing)
    with pytest.raises(ValueError, match="'mine' is already registered"):
        hub.register_violation_handler("mine", nothing)
    hub.register_violation_handler("mine", nothing, replace=True)


async def test_a_built_in_evaluator_may_be_replaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A conversation audits max_silence after an hour; this hub's after 3 envelopes.
    async with open_hub_pair(expectation_sweep_interval=0) as h:
        h.hub.register_expectation_evaluator(
            "max_silence",
            lambda e, seen: chatty(Expectation(name="x", params={"max": 3}), seen),
            replace=True,
        )
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        await h.say(md, alice)
        fired = await h.hub.check_expectations()
    assert [(v.expectation, v.on_violation) for v in fired] == [("max_silence", "audit")]


async def test_an_evaluator_that_raises_is_reported_and_the_sweep_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def broken(expectation: Expectation, seen: Seen) -> list[Late]:
        raise RuntimeError("evaluator bug")

    async with open_hub_pair(session_types=[Watched()], expectation_sweep_interval=0) as h:
        h.hub.register_expectation_evaluator("chatty", broken)
        h.hub.register_violation_handler("page", never_called)
        alice, bob = await h.agent("alice"), await h.agent("bob")
        await h.session("watched", alice, bob)
        assert await h.hub.check_expectations() == []
        assert await h.hub.check_expectations() == []
        records = [r for r in await h.hub.read_audit() if r["kind"] == "expectation_unsupported"]
    assert [(r["expectation"], r["reason"]) for r in records] == [
        ("chatty", "the evaluator raised RuntimeError('evaluator bug')")
    ]


async def test_a_handler_that_raises_is_retried_at_the_next_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0

    async def flaky(hub: Hub, violation: ExpectationViolation) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("pager down")

    async with open_hub_pair(session_types=[Watched()], expectation_sweep_interval=0) as h:
        h.hub.register_expectation_evaluator("chatty", chatty)
        h.hub.register_violation_handler("page", flaky)
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("watched", alice, bob)
        await h.say(md, alice)
        await h.say(md, bob)
        assert await h.hub.check_expectations() == []
        assert len(await h.hub.check_expectations()) == 1
        assert await h.hub.check_expectations() == []
    assert calls == 2


# -- arbiters --------------------------------------------------------------------------------


def cheapest(bids: Sequence[Envelope]) -> str | None:
    return min(bids, key=lambda b: int((b.text or "0").split()[0])).sender_id


async def auction(h: HubPair, **knobs: object) -> tuple[Agent, list[Agent], str]:
    owner = await h.agent("owner")
    bidders = [await h.agent(name) for name in ("ann", "bo", "cat")]
    md = await h.session("auction", owner, *bidders, knobs=knobs)
    await h.say(md, owner, "Who paints my fence?")
    return owner, bidders, md.session_id


async def test_a_registered_arbiter_picks_the_winner(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    h.hub.register_auction_arbiter("cheapest", cheapest)
    owner, (ann, bo, cat), sid = await auction(h, arbiter="cheapest")
    await h.say(sid, ann, "900 EUR")
    await h.say(sid, bo, "700 EUR")
    assert h.hub.session_state(sid).phase is AuctionPhase.BIDDING
    await h.say(sid, cat, "850 EUR")  # the last bid: the hub selects for the owner
    state = h.hub.session_state(sid)
    assert (state.phase, state.winner_id) == (AuctionPhase.AWARDED, bo.id)
    select = (await h.hub.read_wal(sid))[-1]
    assert (select.event_type, select.sender_id, select.event_data) == (
        EV_AUCTION_SELECT,
        owner.id,
        {"winner_id": bo.id},
    )
    await h.say(sid, bo, "I start Monday")  # the winner speaks now, as after any select


async def test_the_built_in_arbiter_takes_the_first_bid(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    _, (ann, bo, cat), sid = await auction(h, arbiter="first_bid")
    for bidder, price in ((cat, 1), (ann, 2), (bo, 3)):
        await h.say(sid, bidder, f"{price} EUR")
    assert h.hub.session_state(sid).winner_id == cat.id


async def test_an_auction_naming_an_unknown_arbiter_is_refused(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    owner, bob = await h.agent("owner"), await h.agent("bob")
    with pytest.raises(ProtocolError, match="no arbiter registered as 'nobody'"):
        await h.session("auction", owner, bob, knobs={"arbiter": "nobody"})
    with pytest.raises(ProtocolError, match="knob arbiter must be an arbiter's name"):
        await h.session("auction", owner, bob, knobs={"arbiter": 3})


@pytest.mark.parametrize(
    ("arbiter", "reason"),
    [
        (lambda bids: 1 / 0, "raised ZeroDivisionError"),
        (lambda bids: "nobody", "winner_id must name a bidder who bid"),
        (lambda bids: 42, "returned 42"),
    ],
)
async def test_an_arbiter_that_fails_leaves_the_choice_to_the_initiator(
    autojump_clock: trio.testing.MockClock, h: HubPair, arbiter: Any, reason: str
) -> None:
    h.hub.register_auction_arbiter("bad", arbiter)
    owner, bidders, sid = await auction(h, arbiter="bad")
    for bidder in bidders:
        await h.say(sid, bidder, "1 EUR")
    assert h.hub.session_state(sid).phase is AuctionPhase.BIDDING
    failures = [r for r in await h.hub.read_audit() if r["kind"] == "arbiter_failed"]
    assert len(failures) == 1
    assert reason in failures[0]["reason"]
    from troupe.session_types import select_winner

    await h.hub.post_envelope(select_winner(sid, owner.id, bidders[1].id))
    assert h.hub.session_state(sid).winner_id == bidders[1].id


async def test_an_award_interrupted_by_a_crash_is_made_on_recovery(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    h.hub.register_auction_arbiter("cheapest", cheapest)
    _, (ann, bo, cat), sid = await auction(h, arbiter="cheapest")
    await h.say(sid, ann, "900 EUR")
    await h.say(sid, bo, "700 EUR")
    h.faults.crash_at(
        "after_dispatch", session_id=sid
    )  # crashes after the last bid, before the award
    await h.say(sid, cat, "850 EUR")
    await h.settle()
    assert h.hub.session_state(sid).winner_id == bo.id
    selects = [e for e in await h.hub.read_wal(sid) if e.event_type == EV_AUCTION_SELECT]
    assert len(selects) == 1


# -- sweepers --------------------------------------------------------------------------------


async def test_a_registered_sweeper_runs_on_the_hub_s_clock(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    ticks: list[float] = []

    async def tick(hub: Hub) -> None:
        ticks.append(hub.core.now())

    start = h.hub.core.now()
    h.hub.register_sweeper("tick", 5, tick, h.hub)
    await trio.sleep(16)
    assert [round(t - start, 6) for t in ticks] == [5, 10, 15]
    h.hub.unregister_sweeper("tick")
    h.hub.unregister_sweeper("tick")  # no-op
    await trio.sleep(20)
    assert len(ticks) == 3


async def test_a_sweeper_that_raises_is_audited_and_runs_again(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, h: HubPair
) -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("sweep bug")

    h.hub.register_sweeper("flaky", 1, flaky)
    with caplog.at_level(logging.ERROR, logger="troupe.hub"):
        await trio.sleep(3.5)
    assert calls == 3
    failures = [r for r in await h.hub.read_audit() if r["kind"] == "sweeper_failed"]
    assert [(r["sweeper"], r["exc_message"]) for r in failures] == [("flaky", "sweep bug")]


async def test_sweeper_names_and_intervals_are_checked(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    ran: list[str] = []

    async def mark(label: str) -> None:
        ran.append(label)

    h.hub.register_sweeper("s", 1, mark, "old")
    with pytest.raises(ValueError, match="sweeper 's' is already registered"):
        h.hub.register_sweeper("s", 1, mark, "new")
    for bad in (0, -1, float("inf"), True, "1"):
        with pytest.raises(ValueError, match="interval must be a positive number"):
            h.hub.register_sweeper("t", bad, mark, "x")  # type: ignore[arg-type]
    h.hub.register_sweeper("s", 1, mark, "new", replace=True)
    await trio.sleep(2.5)
    assert ran == ["new", "new"]


class Slow(Recorder):
    """Takes ``delay`` seconds over each registration."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def on_agent_event(self, agent_id: str, kind: str, payload: dict[str, Any]) -> None:
        await trio.sleep(self.delay)
        await super().on_agent_event(agent_id, kind, payload)


async def test_a_slow_listener_finishes_what_it_holds_when_the_hub_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slow = Slow(0.3)
    async with open_hub_pair(listeners=[slow]) as h:
        for n in range(3):
            await h.agent(f"a{n}")
    assert slow.calls == [("agent", "registered", f"a{n}") for n in range(3)]


async def test_a_stuck_listener_holds_the_close_up_for_drain_s_at_most(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stuck = Slow(math.inf)
    async with open_hub_pair(listeners=[stuck]) as h:
        await h.agent("a")
        await h.settle()
        closing = trio.current_time()
    assert trio.current_time() - closing == pytest.approx(DRAIN_S)
    assert stuck.calls == []
