"""The hub's event stream: what it yields, its bounds, and its end."""

from __future__ import annotations

import gc
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from troupe import DecodeError, NotFoundError, ProtocolError
from troupe.hub import (
    AgentRegistered,
    AgentUnregistered,
    Audited,
    EnvelopeAccepted,
    EnvelopeRejected,
    EventStream,
    HubEvent,
    Missed,
    SessionActorCrashed,
    SessionActorRestarted,
    SessionClosed,
    SessionCreated,
    SessionOpened,
    TaskChanged,
    TurnFailed,
    open_hub,
)
from troupe.model import (
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_SESSION_CLOSED,
    EV_SESSION_OPENED,
    EV_TEXT,
    Passport,
    TaskMetadata,
    TaskSpec,
    TaskState,
)

from ..harness import HubPair, live_would_blocks, open_hub_pair, text_envelope


def drain(stream: EventStream) -> list[HubEvent]:
    events = []
    while True:
        try:
            events.append(stream.receive_nowait())
        except trio.WouldBlock:
            return events


def subscribers(h: HubPair) -> int:
    return len(h.hub.core.events.subscribers)


def brief(event: HubEvent) -> tuple[Any, ...]:
    """An event without its time and ids: what kind of thing happened."""
    match event:
        case EnvelopeAccepted():
            return ("accepted", event.seq, event.event_type)
        case SessionClosed():
            return ("closed", event.state, event.reason)
        case Audited():
            return ("audited", event.kind)
        case _:
            return (type(event).__name__,)


async def test_a_session_s_life_in_events(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    hub = h.hub
    async with hub.open_events() as events:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        sid = md.session_id
        await h.say(md, alice, "hello")
        await hub.close_session(sid, reason="done")
        await hub.unregister(bob.id)
        got = drain(events)
    assert [brief(e) for e in got] == [
        ("AgentRegistered",),
        ("AgentRegistered",),
        ("SessionCreated",),
        ("accepted", 1, EV_CHANNEL_INVITE),
        ("audited", "invite_acked"),
        ("accepted", 2, EV_CHANNEL_INVITE_ACK),
        ("accepted", 3, EV_SESSION_OPENED),
        ("SessionOpened",),
        ("accepted", 4, EV_TEXT),
        ("accepted", 5, EV_SESSION_CLOSED),
        ("closed", "closed", "done"),
        ("AgentUnregistered",),
    ]
    first, last = got[0], got[-1]
    assert isinstance(first, AgentRegistered)
    assert isinstance(last, AgentUnregistered)
    assert first == AgentRegistered(at=first.at, agent_id=alice.id, name="alice")
    assert last == AgentUnregistered(at=last.at, agent_id=bob.id, name="bob")
    created = got[2]
    assert isinstance(created, SessionCreated)
    assert (created.session_id, created.creator_id, created.participants) == (
        sid,
        alice.id,
        (alice.id, bob.id),
    )
    text = got[8]
    assert isinstance(text, EnvelopeAccepted)
    assert (text.session_id, text.sender_id, text.envelope.text) == (sid, alice.id, "hello")
    # The stamped envelope itself, shared with the WAL's, not a copy of the caller's.
    assert text.envelope == (await hub.read_wal(sid, since=3, until=4))[0]
    stamps = [e.at for e in got if not isinstance(e, Missed)]
    assert stamps == sorted(stamps)
    assert stamps[-1] == hub.core.now()


async def test_types_keep_only_those_events(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    async with h.hub.open_events(SessionOpened, SessionClosed) as events:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        await h.hub.close_session(md.session_id, reason="bye")
        assert [brief(e) for e in drain(events)] == [
            ("SessionOpened",),
            ("closed", "closed", "bye"),
        ]
    with pytest.raises(ValueError, match="not event types: int"):
        h.hub.events(int)
    with pytest.raises(ValueError, match="capacity must be a positive int"):
        h.hub.events(capacity=0)


async def test_a_slow_subscriber_misses_events_and_is_told_where(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    async with h.hub.open_events(EnvelopeAccepted, capacity=3) as events:
        for i in range(10):  # the hub never waits for the subscriber
            await h.say(md, alice, str(i))
        stats = events.statistics()
        assert (stats.buffered, stats.capacity, stats.missed) == (3, 3, 7)
        first = drain(events)
        for i in range(10, 12):
            await h.say(md, alice, str(i))
        second = drain(events)
    texts = [e.envelope.text if isinstance(e, EnvelopeAccepted) else e for e in first + second]
    assert texts == ["0", "1", "2", Missed(7), "10", "11"]
    assert events.statistics().missed == 7


async def test_a_stream_ends_when_the_hub_closes(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[HubEvent] = []

    async def watch(stream: EventStream) -> None:
        async for event in stream:
            seen.append(event)

    async with trio.open_nursery() as nursery:
        async with open_hub(ttl_sweep_interval=0) as hub:
            nursery.start_soon(watch, hub.events(AgentRegistered))
            await trio.testing.wait_all_tasks_blocked()
            await hub.register(Passport(name="ada"))
        # The block ended: the watcher got what was published, then its loop ended.
    assert [type(e) for e in seen] == [AgentRegistered]
    with pytest.raises(trio.EndOfChannel):
        hub.events().receive_nowait()


async def test_a_waiting_subscriber_holds_no_exception(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A subscriber parked in ``receive`` found its stream empty without raising: a
    WouldBlock caught there stayed alive, with its traceback, while it waited."""

    before = live_would_blocks()
    seen: list[HubEvent] = []
    async with open_hub(ttl_sweep_interval=0) as hub, trio.open_nursery() as nursery:

        async def watch(stream: EventStream) -> None:
            async for event in stream:
                seen.append(event)

        for _ in range(4):
            nursery.start_soon(watch, hub.events(AgentRegistered))
        await trio.testing.wait_all_tasks_blocked()
        await hub.register(Passport(name="ada"))
        await trio.testing.wait_all_tasks_blocked()
        assert len(seen) == 4  # each took its event, and waits again
        assert live_would_blocks() == before
        nursery.cancel_scope.cancel()


async def test_closing_or_dropping_a_stream_unsubscribes_it(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    async with h.hub.open_events() as events:
        assert subscribers(h) == 1
    assert subscribers(h) == 0
    with pytest.raises(trio.ClosedResourceError):
        await events.receive()
    assert events.statistics().closed

    async def first_event() -> HubEvent:
        async for event in h.hub.events():
            return event  # leaves the loop: nothing holds the stream any more
        raise AssertionError("unreachable")

    async with trio.open_nursery() as nursery:
        got: list[HubEvent] = []

        async def take() -> None:
            got.append(await first_event())

        nursery.start_soon(take)
        await trio.testing.wait_all_tasks_blocked()
        assert subscribers(h) == 1
        await h.agent("ada")
    gc.collect()
    assert isinstance(got[0], AgentRegistered)
    assert subscribers(h) == 0


async def test_a_parked_receiver_is_woken_and_cancellable(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    async with h.hub.open_events() as events:
        with trio.move_on_after(5) as scope:
            await events.receive()
        assert scope.cancelled_caught
        async with trio.open_nursery() as nursery:
            got: list[HubEvent] = []

            async def take() -> None:
                got.append(await events.receive())

            nursery.start_soon(take)
            await trio.testing.wait_all_tasks_blocked()
            await h.agent("ada")
        assert [type(e) for e in got] == [AgentRegistered]


async def test_crashes_and_restarts_of_a_session_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(session_max_restarts=1) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        sid = md.session_id
        async with h.hub.open_events(
            SessionActorCrashed, SessionActorRestarted, SessionClosed, EnvelopeAccepted
        ) as events:
            h.faults.crash_at("before_append", session_id=sid, times=2)
            with pytest.raises(ProtocolError, match="poison"):
                await h.say(md, alice)  # crash 1: restarted; crash 2: given up on
            await h.settle()
            got = drain(events)
    assert [brief(e) for e in got] == [
        ("SessionActorCrashed",),
        ("SessionActorRestarted",),
        ("SessionActorCrashed",),
        ("accepted", 4, EV_SESSION_CLOSED),  # the close notice the hub appends for it
        ("closed", "closed", "crashed"),
    ]
    crash, restart = got[0], got[1]
    assert isinstance(crash, SessionActorCrashed)
    assert isinstance(restart, SessionActorRestarted)
    assert (crash.session_id, crash.exc_type, crash.restarting) == (sid, "InjectedCrash", True)
    assert (restart.session_id, restart.last_seq) == (sid, 3)
    assert isinstance(got[2], SessionActorCrashed)
    assert not got[2].restarting


async def test_tasks_and_turn_failures(autojump_clock: trio.testing.MockClock, h: HubPair) -> None:
    hub = h.hub
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    async with hub.open_events(TaskChanged, TurnFailed) as events:
        await hub.observe_task(
            TaskMetadata(task_id="t", owner_id=alice.id, spec=TaskSpec(title="t", capability="c"))
        )
        await hub.update_task("t", state=TaskState.RUNNING)
        await hub.update_task("t", state=TaskState.COMPLETED)
        await hub.report_turn_failure(
            session_id=md.session_id, agent_id=bob.id, envelope_id="e1", exc=KeyError("x")
        )
        got = drain(events)
    tasks = [(e.change, e.state, e.previous) for e in got if isinstance(e, TaskChanged)]
    assert tasks == [
        ("observed", "created", None),
        ("moved", "running", "created"),
        ("moved", "completed", "running"),
        ("terminated", "completed", None),
    ]
    failed = got[-1]
    assert isinstance(failed, TurnFailed)
    assert (failed.session_id, failed.agent_id, failed.envelope_id, failed.exc_type) == (
        md.session_id,
        bob.id,
        "e1",
        "KeyError",
    )


async def test_an_audit_record_whose_fields_changed_still_comes_through(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    async with h.hub.open_events() as events:
        h.hub.core.audit("session_opened", sid="renamed field")
        h.hub.core.audit("something_new", n=1)
        got = drain(events)
    assert [(e.kind, dict(e.data)) for e in got if isinstance(e, Audited)] == [
        ("session_opened", {"sid": "renamed field"}),
        ("something_new", {"n": 1}),
    ]


async def test_a_refused_post_is_an_event_without_its_data(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    hub = h.hub
    alice, bob, carol = await h.agent("alice"), await h.agent("bob"), await h.agent("carol")
    md = await h.session("conversation", alice, bob)
    sid = md.session_id
    async with hub.open_events(EnvelopeRejected, EnvelopeAccepted) as events:
        # Refused by the hub (an unknown sender), by the session (not a participant), and
        # before either looks (a field of the wrong type).
        with pytest.raises(NotFoundError) as unknown:
            await hub.post_envelope(text_envelope(md, "nobody", "secret"))
        with pytest.raises(ProtocolError) as outsider:
            await hub.post_envelope(text_envelope(md, carol, "secret"))
        bad = attrs.evolve(text_envelope(md, alice, "secret"), session_id=5)  # type: ignore[arg-type]
        with pytest.raises(DecodeError) as malformed:
            await hub.post_envelope(bad)
        await h.say(md, alice, "fine")
        got = drain(events)
    assert [type(e) for e in got] == [EnvelopeRejected] * 3 + [EnvelopeAccepted]
    rejected = [e for e in got if isinstance(e, EnvelopeRejected)]
    assert [(e.session_id, e.sender_id, e.event_type, e.code, e.message) for e in rejected] == [
        (sid, "nobody", EV_TEXT, "not_found", str(unknown.value)),
        (sid, carol.id, EV_TEXT, "protocol_error", str(outsider.value)),
        ("<int>", alice.id, EV_TEXT, "bad_frame", str(malformed.value)),
    ]
    assert all(e.at == hub.core.now() for e in rejected)
    assert "secret" not in repr(rejected)
    assert hub.statistics().envelopes_rejected == 3
