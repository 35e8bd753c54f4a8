"""Supervision: crashes at every step of a post, poison envelopes, sessions that crash for
good, and a hub that leaves no task behind."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from troupe import ProtocolError
from troupe.hub import CRASH_POINTS, Hub
from troupe.model import EV_SESSION_CLOSED, EV_TEXT, Envelope, SessionMetadata, SessionState
from troupe.session_types import ConversationState, ConversationType
from troupe.store import Store
from troupe.testing import CrashPoints

from ..harness import (
    Agent,
    HubPair,
    client_of,
    counter_ids,
    open_hub_pair,
    text_envelope,
)


@attrs.frozen
class Outcome:
    """What a run of a scenario leaves behind, to compare with a crash-free run."""

    wal: list[Envelope]
    state: Any
    metadata: SessionMetadata
    returned: list[str]
    delivered: dict[str, list[Envelope]]
    pending_inbox: int


async def converse(
    store: Store, faults: CrashPoints, kind: str, point: str | None
) -> tuple[Outcome, Hub]:
    """alice and bob exchange texts (two in consulting, else four); the last one crashes
    at ``point``."""
    async with open_hub_pair(store, faults=faults, new_id=counter_ids()) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session(kind, alice, bob)
        sid = md.session_id
        returned: list[str] = []
        speakers = [alice, bob] if kind == "consulting" else [alice, bob, alice, bob]
        for n, speaker in enumerate(speakers):
            if n == len(speakers) - 1 and point is not None:
                faults.crash_at(point, session_id=sid)
            cause = returned[-1] if returned else None
            returned.append(await h.say(md, speaker, f"text {n}", causation_id=cause))
        await h.settle()
        outcome = Outcome(
            wal=await h.hub.read_wal(sid),
            state=h.hub.session_state(sid),
            metadata=await h.hub.get_session(sid),
            returned=returned,
            delivered={a.name: client_of(a).notified(a.id, sid) for a in (alice, bob)},
            pending_inbox=h.hub.statistics().pending_inbox,
        )
        return outcome, h.hub


@pytest.mark.parametrize("kind", ["conversation", "consulting"])
@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_a_crash_at_any_step_of_a_post_loses_nothing_and_repeats_nothing(
    autojump_clock: trio.testing.MockClock,
    point: str,
    kind: str,
    new_store: Callable[[], Store],
) -> None:
    clean, _ = await converse(new_store(), CrashPoints(), kind, None)
    faults = CrashPoints()
    crashed, hub = await converse(new_store(), faults, kind, point)
    assert faults.history == [(point, crashed.metadata.session_id)]
    assert hub.statistics().session_restarts == 1
    # Each accepted envelope is in the WAL exactly once, at the place it had without a crash.
    texts = [e for e in crashed.wal if e.event_type == EV_TEXT]
    assert [e.envelope_id for e in texts] == crashed.returned
    assert [e.seq for e in crashed.wal] == list(range(1, len(crashed.wal) + 1))
    assert crashed.wal == clean.wal
    assert crashed.returned == clean.returned
    # The state and the lifecycle are those of the crash-free run (for consulting: closed once).
    assert crashed.state == clean.state
    assert crashed.metadata == clean.metadata
    if kind == "consulting":
        assert crashed.metadata.close_reason == "consulting_complete"
        assert [e.event_type for e in crashed.wal].count(EV_SESSION_CLOSED) == 1
    # Each participant was notified of each envelope once, in order, and (having acked
    # everything) has nothing pending.
    assert crashed.delivered == clean.delivered
    assert crashed.pending_inbox == clean.pending_inbox == 0


class Fragile(ConversationType):
    """A conversation whose rules crash (a bug, not a refusal) on the text "boom"."""

    name = "fragile"

    def check_turn(
        self, metadata: SessionMetadata, envelope: Envelope, state: ConversationState
    ) -> None:
        if envelope.text == "boom":
            raise RuntimeError("the session type has a bug")
        super().check_turn(metadata, envelope, state)


async def test_a_poison_envelope_is_rejected_and_dead_lettered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(session_types=[Fragile()]) as h:
        hub = h.hub
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("fragile", alice, bob)
        await h.say(md, alice, "fine")
        wal = await hub.read_wal(md.session_id)
        poison = text_envelope(md, alice, "boom")
        with pytest.raises(
            ProtocolError, match=r"crashed session .* twice; rejected as poison"
        ) as info:
            await hub.post_envelope(poison)
        (letter,) = hub.dead_letters.letters
        assert letter.reason == "poison"
        assert letter.mailbox == md.session_id
        assert isinstance(letter.message, Envelope)
        assert letter.message.envelope_id in str(info.value)
        assert f"({EV_TEXT} from {alice.id})" in str(info.value)
        assert attrs.evolve(letter.message, envelope_id="") == attrs.evolve(
            poison, seq=0, created_at=""
        )
        assert isinstance(info.value.__cause__, Exception)
        assert await hub.read_wal(md.session_id) == wal
        stats = hub.statistics()
        assert (stats.poison_envelopes, stats.session_restarts, stats.dead_letters) == (1, 2, 1)
        assert [r["kind"] for r in await hub.read_audit()].count("poison_envelope") == 1
        # The session carries on, with its state intact.
        await h.say(md, bob, "still here")
        state = hub.session_state(md.session_id)
        assert isinstance(state, ConversationState)
        assert state.turn_count == 2


async def test_a_post_whose_every_attempt_crashes_is_poison(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    h.faults.crash_at("before_append", session_id=md.session_id, times=2)
    with pytest.raises(ProtocolError, match="rejected as poison"):
        await h.say(md, alice, "unlucky")
    assert h.faults.history == [("before_append", md.session_id)] * 2
    assert [e.text for e in await hub.read_wal(md.session_id) if e.text] == []
    await h.say(md, alice, "lucky")
    assert [e.text for e in await hub.read_wal(md.session_id) if e.text] == ["lucky"]


async def open_many(h: HubPair, alice: Agent, bob: Agent, n: int) -> list[str]:
    sids = []
    for _ in range(n):
        md = await h.session("conversation", alice, bob)
        sids.append(md.session_id)
        await h.say(md, alice, "before")
    return sids


async def test_a_session_that_keeps_crashing_is_closed_and_100_others_are_untouched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(session_max_restarts=3, session_within_s=5.0) as h:
        hub = h.hub
        alice, bob = await h.agent("alice"), await h.agent("bob")
        others = await open_many(h, alice, bob, 100)
        doomed = await h.session("conversation", alice, bob)
        sid = doomed.session_id
        await h.say(doomed, alice, "before")
        await h.settle()
        states = {s: hub.session_state(s) for s in others}
        wals = {s: await hub.read_wal(s) for s in others}
        h.faults.crash_at("before_append", session_id=sid, times=100)
        # Two poison posts: four crashes in no time, one more than the session may have.
        for _ in range(2):
            with pytest.raises(ProtocolError, match="rejected as poison"):
                await h.say(doomed, alice, "crash me")
        await h.settle()
        md = await hub.get_session(sid)
        assert (md.state, md.close_reason) == (SessionState.CLOSED, "crashed")
        assert md.closed_at is not None
        last = (await hub.read_wal(sid))[-1]
        assert (last.event_type, last.event_data) == (
            EV_SESSION_CLOSED,
            {"reason": "crashed", "session_id": sid},
        )
        for agent in (alice, bob):
            assert client_of(agent).notified(agent.id, sid)[-1] == last
        with pytest.raises(ProtocolError, match=f"session {sid} is closed \\(crashed\\)"):
            await h.say(doomed, bob, "anyone?")
        stats = hub.statistics()
        assert (stats.sessions_crashed, stats.open_sessions) == (1, 100)
        assert "session_crashed" in [r["kind"] for r in await hub.read_audit()]
        # Nothing else moved, and everything else still works.
        assert {s: hub.session_state(s) for s in others} == states
        assert {s: await hub.read_wal(s) for s in others} == wals
        for s in others:
            await h.say(s, bob, "after")
        for s in others:
            state = hub.session_state(s)
            assert isinstance(state, ConversationState)
            assert state.turn_count == 2
            assert (await hub.get_session(s)).state is SessionState.ACTIVE
        assert hub.core.directory.live_created_by(alice.id) == 100


async def test_posts_racing_a_session_given_up_on_do_not_resurrect_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(session_max_restarts=1) as h:
        hub = h.hub
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        sid = md.session_id
        h.faults.crash_at("before_append", session_id=sid, times=2)
        errors: list[Exception] = []
        accepted: list[str] = []

        async def post(n: int) -> None:
            try:
                accepted.append(await h.say(md, alice if n % 2 else bob, f"p{n}"))
            except ProtocolError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(post, n)
        await h.settle()
        final = await hub.get_session(sid)
        assert (final.state, final.close_reason) == (SessionState.CLOSED, "crashed")
        wal = await hub.read_wal(sid)
        assert [e.seq for e in wal] == list(range(1, len(wal) + 1))
        assert wal[-1].event_type == EV_SESSION_CLOSED
        assert [e.event_type for e in wal].count(EV_SESSION_CLOSED) == 1
        assert {e.envelope_id for e in wal} >= set(accepted)
        assert len(accepted) + len(errors) == 6
        assert not hub.core.directory.get(sid).running
        assert hub.statistics().sessions_crashed == 1


def all_tasks() -> set[trio.lowlevel.Task]:
    found = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        assert task is not None
        found.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


async def test_leaving_the_hub_leaves_no_task_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = all_tasks()
    async with open_hub_pair(ttl_sweep_interval=10) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        carol = await h.agent("carol", invites="ignore")
        sessions = [await h.session("conversation", alice, bob) for _ in range(5)]
        for md in sessions:
            await h.say(md, alice)
        # One client stopped reading, one handshake still waiting, one post in flight.
        client_of(bob).endpoint.stalled = trio.Event()
        h.nursery.start_soon(
            partial(
                h.hub.create_session,
                creator_id=alice.id,
                manifest_type="conversation",
                participants=[carol.id],
            )
        )
        for md in sessions:
            await h.say(md, alice)
        await h.settle()
        assert len(all_tasks()) > len(before) + 10
        assert h.hub.statistics().live_sessions == 6
    assert all_tasks() == before


async def test_shutdown_flushes_the_audit_log(autojump_clock: trio.testing.MockClock) -> None:
    async with open_hub_pair() as h:
        alice = await h.agent("alice", connect=False)
        for i in range(50):
            await h.hub.set_skill(alice.id, str(i))
    async with h.store:
        records = await h.store.read_audit()
    assert [r["kind"] for r in records] == ["agent_registered"] + ["skill_set"] * 50


async def test_a_retry_queued_behind_other_posts_is_not_appended_twice(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    h.faults.crash_at("after_append", session_id=md.session_id)
    returned: list[str] = []

    async def post(n: int) -> None:
        returned.append(await h.say(md, alice if n % 2 else bob, f"p{n}"))

    # The first post handled crashes after its append; its retry queues behind the others.
    async with trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(post, n)
    assert h.faults.history == [("after_append", md.session_id)]
    texts = [e for e in await hub.read_wal(md.session_id) if e.event_type == EV_TEXT]
    assert sorted(e.envelope_id for e in texts) == sorted(returned)
    assert len(texts) == 8


@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_a_crash_while_sending_the_invites_still_invites_everyone(
    autojump_clock: trio.testing.MockClock, point: str
) -> None:
    async with open_hub_pair() as h:
        alice, bob, carol, dave = [await h.agent(n) for n in ("alice", "bob", "carol", "dave")]
        h.faults.crash_at(point, session_id=None)  # the first invite's post crashes
        md = await h.session("discussion", alice, bob, carol, dave)
        sid = md.session_id
        assert h.faults.history == [(point, sid)]
        wal = await h.hub.read_wal(sid)
        invites = [e.audience for e in wal if e.event_type == "troupe.session.invite"]
        assert invites == [(bob.id,), (carol.id,), (dave.id,)]
        assert [e.seq for e in wal] == list(range(1, len(wal) + 1))


async def test_crashes_count_against_the_session_only_within_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(session_max_restarts=2, session_within_s=5.0) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        h.faults.crash_at("before_append", session_id=md.session_id, times=100)
        with pytest.raises(ProtocolError, match="poison"):  # two crashes, two restarts
            await h.say(md, alice)
        await trio.sleep(5.1)  # those two leave the window
        with pytest.raises(ProtocolError, match="poison"):
            await h.say(md, alice)
        assert (await h.hub.get_session(md.session_id)).state is SessionState.ACTIVE
        h.faults.clear()
        await h.say(md, alice, "between")
        h.faults.crash_at("before_append", session_id=md.session_id, times=100)
        # A third crash within 5 s: the supervisor gives up on the session at once. The
        # retry finds the actor either dead already or about to be: refused either way.
        with pytest.raises(ProtocolError, match=r"rejected as poison|crashed too often"):
            await h.say(md, alice)
        await h.settle()
        closed = await h.hub.get_session(md.session_id)
        assert (closed.state, closed.close_reason) == (SessionState.CLOSED, "crashed")
        assert len(h.faults.history) == 5
        assert h.hub.statistics().session_restarts == 4
