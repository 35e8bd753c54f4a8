"""Creating sessions: the checks in the reference's order, roles, TTL and the handshake."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

from troupe import AccessDeniedError, NotFoundError, ProtocolError
from troupe.hub import Hub
from troupe.hub._directory import SessionEntry
from troupe.model import (
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_CHANNEL_INVITE_REJECT,
    EV_SESSION_CLOSED,
    EV_SESSION_EXPIRED,
    EV_SESSION_OPENED,
    EV_TEXT,
    AccessBlock,
    Envelope,
    LimitsBlock,
    ParticipantRole,
    Rule,
    SessionMetadata,
    SessionState,
    SessionTypeAccess,
    parse_iso,
)
from troupe.store import MemoryStore

from ..harness import HubPair, open_hub_pair, text_envelope
from .conftest import Reopen


async def nothing_persisted(h: HubPair) -> None:
    assert await h.store.load_sessions() == []
    assert len(h.hub.core.directory) == 0


async def test_creation_checks_run_in_the_reference_order(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    """Each case breaks two rules at once; the earlier check must be the one reported."""
    picky = Rule(
        access=AccessBlock(
            inbound_from=["nobody"], session_types=SessionTypeAccess(accept=["discussion"])
        )
    )
    alice = await h.agent("alice", rule=Rule(limits=LimitsBlock(max_concurrent_sessions=1)))
    bob = await h.agent("bob")
    grumpy = await h.agent("grumpy", rule=picky)
    shy = await h.agent(
        "shy",
        rule=Rule(access=AccessBlock(session_types=SessionTypeAccess(initiate=["discussion"]))),
    )

    async def create(
        creator: str, participants: list[str], kind: str = "conversation", **kwargs: Any
    ) -> None:
        await hub.create_session(
            creator_id=creator, manifest_type=kind, participants=participants, **kwargs
        )

    # 1. the creator is registered (before anything about the participants)
    with pytest.raises(NotFoundError, match="agent not registered: 'ghost'"):
        await create("ghost", [])
    # 2. there are participants (before the session type)
    with pytest.raises(ProtocolError, match="at least one participant"):
        await create(alice.id, [], kind="nonsense")
    # 3. nobody is listed twice (before anyone is looked up)
    with pytest.raises(ProtocolError, match=f"participant {bob.id!r} is listed twice"):
        await create(alice.id, ["ghost", bob.id, bob.id])
    # 4. every participant is registered (before the session type)
    with pytest.raises(NotFoundError, match="participant not registered: 'ghost'"):
        await create(alice.id, [bob.id, "ghost"], kind="nonsense")
    # 5. the session type exists (before any rule is consulted)
    with pytest.raises(NotFoundError, match="no session type registered for nonsense@v1"):
        await create(alice.id, [grumpy.id], kind="nonsense")
    with pytest.raises(NotFoundError, match="no session type registered for conversation@v7"):
        await create(alice.id, [bob.id], manifest_version=7)
    # 6. the creator may initiate this type (before the invitees' rules)
    with pytest.raises(AccessDeniedError, match="agent 'shy' may not open 'conversation'"):
        await create(shy.id, [grumpy.id])
    # 7. each invitee accepts the creator ...
    with pytest.raises(
        AccessDeniedError,
        match=f"agent 'grumpy' \\({grumpy.id}\\) does not accept inbound sessions from 'alice'",
    ):
        await create(alice.id, [grumpy.id])
    # ... and the session type
    await hub.set_rule(
        grumpy.id, Rule(access=AccessBlock(session_types=SessionTypeAccess(accept=["discussion"])))
    )
    with pytest.raises(
        AccessDeniedError, match=f"'grumpy' \\({grumpy.id}\\) does not accept 'conversation'"
    ):
        await create(alice.id, [grumpy.id], required_acks=5)
    await nothing_persisted(h)
    # 8. required_acks is within the invitees
    for acks in (2, 0, -1):
        with pytest.raises(
            ProtocolError,
            match=rf"required_acks must be between 1 and 1 \(the invitees\), got {acks}",
        ):
            await create(alice.id, [bob.id], required_acks=acks)
    # 9. the session type's own shape check comes last
    with pytest.raises(ProtocolError, match="needs exactly 2 participants, got 3"):
        await create(alice.id, [bob.id, shy.id], kind="consulting", required_acks=1)
    with pytest.raises(ProtocolError, match="does not take knob\\(s\\) colour"):
        await create(alice.id, [bob.id], knobs={"colour": "red"})
    await nothing_persisted(h)
    # 10. max_concurrent_sessions counts the creator's live sessions
    first = await h.session("conversation", alice, bob)
    with pytest.raises(
        AccessDeniedError, match="'alice' already has 1 open sessions \\(max_concurrent_sessions 1"
    ):
        await create(alice.id, [bob.id], required_acks=7)
    await hub.close_session(first.session_id)
    await h.session("conversation", alice, bob)


async def test_roles_order_and_the_creator_prepended(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob, carol = [await h.agent(n) for n in ("alice", "bob", "carol")]
    two = await h.session("conversation", alice, bob)
    assert [(p.agent_id, p.role, p.order) for p in two.participants] == [
        (alice.id, ParticipantRole.INITIATOR, 0),
        (bob.id, ParticipantRole.RESPONDENT, 1),
    ]
    # The creator keeps the place it was given in the list.
    md = await hub.create_session(
        creator_id=bob.id, manifest_type="discussion", participants=[alice.id, bob.id, carol.id]
    )
    assert [(p.agent_id, p.role, p.order) for p in md.participants] == [
        (alice.id, ParticipantRole.PARTICIPANT, 0),
        (bob.id, ParticipantRole.INITIATOR, 1),
        (carol.id, ParticipantRole.PARTICIPANT, 2),
    ]
    assert md.creator_id == bob.id
    assert md.pending_acks == ()
    assert {p.joined_at for p in md.participants} == {md.created_at}


async def test_ttl_sets_expires_at(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice", rule=Rule(limits=LimitsBlock(session_ttl_default="1h")))
    bob = await h.agent("bob")
    cases: list[tuple[str | int | None, float | None]] = [
        ("15m", 900),
        (90, 90),
        ("2d", 2 * 86400),
        (None, 3600),  # the creator's session_ttl_default
        (0, None),  # no TTL
    ]
    for ttl, seconds in cases:
        md = await h.session("conversation", alice, bob, ttl=ttl)
        if seconds is None:
            assert md.expires_at is None
        else:
            assert md.expires_at is not None
            assert parse_iso(md.expires_at) - parse_iso(md.created_at) == pytest.approx(seconds)


async def test_a_malformed_ttl_is_refused_and_the_hub_carries_on(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    with pytest.raises(ProtocolError, match="not a duration: 'soon'"):
        await h.session("conversation", alice, bob, ttl="soon")
    await nothing_persisted(h)
    assert hub.statistics().agents == 2
    await h.session("conversation", alice, bob, ttl="1h")


async def test_labels_intent_and_knobs_are_kept(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob, carol = [await h.agent(n) for n in ("alice", "bob", "carol")]
    md = await h.session(
        "discussion",
        alice,
        bob,
        carol,
        knobs={"ordering": "round_robin"},
        labels={"team": "x"},
        intent="plan",
    )
    assert md.labels == {"team": "x", "intent": "plan"}
    assert md.knobs == {"ordering": "round_robin"}
    assert (await h.store.get_session(md.session_id)) == md


async def test_all_acks_activate_and_the_wal_tells_the_handshake(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob, carol = [await h.agent(n) for n in ("alice", "bob", "carol")]
    md = await h.session("discussion", alice, bob, carol)
    assert md.pending_acks == ()
    wal = await hub.read_wal(md.session_id)
    kinds = [(e.seq, e.event_type, e.sender_id, e.audience) for e in wal]
    assert kinds[:2] == [
        (1, EV_CHANNEL_INVITE, alice.id, (bob.id,)),
        (2, EV_CHANNEL_INVITE, alice.id, (carol.id,)),
    ]
    acks = sorted((e.sender_id, e.causation_id) for e in wal[2:4])
    assert acks == sorted([(bob.id, wal[0].envelope_id), (carol.id, wal[1].envelope_id)])
    assert {e.event_type for e in wal[2:4]} == {EV_CHANNEL_INVITE_ACK}
    assert (wal[4].seq, wal[4].event_type, wal[4].audience) == (
        5,
        EV_SESSION_OPENED,
        (alice.id, bob.id, carol.id),
    )
    assert await h.store.get_session(md.session_id) == md
    await h.settle()
    # Each invitee saw its invite and the opening; nobody is shown the acks.
    assert alice.client is not None
    assert bob.client is not None
    assert [e.event_type for e in bob.client.notified(bob.id)] == [
        EV_CHANNEL_INVITE,
        EV_SESSION_OPENED,
    ]
    assert [e.event_type for e in alice.client.notified(alice.id)] == [EV_SESSION_OPENED]


async def test_a_reject_closes_the_session_and_names_the_rejecter(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice")
    bob = await h.agent("bob")
    carol = await h.agent("carol", invites="reject")
    with pytest.raises(ProtocolError, match=rf"invite rejected by 'carol' \({carol.id}\)") as info:
        await h.session("discussion", alice, bob, carol)
    (md,) = await hub.list_sessions(include_terminal=True)
    assert md.session_id in str(info.value)
    assert (md.state, md.close_reason, md.rejected_by) == (
        SessionState.CLOSED,
        "invite_rejected",
        (carol.id,),
    )
    wal = await hub.read_wal(md.session_id)
    assert EV_CHANNEL_INVITE_REJECT in [e.event_type for e in wal]
    assert wal[-1].event_type == EV_SESSION_CLOSED
    assert wal[-1].event_data == {"reason": "invite_rejected", "session_id": md.session_id}
    await h.settle()
    assert alice.client is not None
    assert alice.client.notified(alice.id)[-1].event_type == EV_SESSION_CLOSED
    assert hub.core.directory.live_created_by(alice.id) == 0


async def test_no_ack_times_out_after_invite_ack_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(invite_ack_timeout=12.5) as h:
        alice = await h.agent("alice")
        bob = await h.agent("bob", invites="ignore")
        start = trio.current_time()
        late = rf"not opened: no ack within 12.5s from 'bob' \({bob.id}"
        with pytest.raises(ProtocolError, match=late):
            await h.session("conversation", alice, bob)
        assert trio.current_time() - start == pytest.approx(12.5)
        (md,) = await h.hub.list_sessions(include_terminal=True)
        assert (md.state, md.close_reason) == (SessionState.CLOSED, "invite_timeout")
        # A late ack finds a closed session.
        invite = (await h.hub.read_wal(md.session_id))[0]
        with pytest.raises(ProtocolError, match="is closed \\(invite_timeout\\)"):
            await h.hub.post_envelope(
                Envelope(
                    session_id=md.session_id,
                    sender_id=bob.id,
                    event_type=EV_CHANNEL_INVITE_ACK,
                    causation_id=invite.envelope_id,
                )
            )


async def test_a_pending_session_found_after_a_restart_times_out_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
    reopen: Reopen,
) -> None:
    async with open_hub_pair(reopen(), invite_ack_timeout=30) as h:
        alice = await h.agent("alice")
        bob = await h.agent("bob", invites="ignore")
        with trio.move_on_after(10):
            await h.session("conversation", alice, bob)
        (md,) = await h.hub.list_sessions()
        assert md.state is SessionState.PENDING
        assert md.handshake_deadline is not None
        deadline = parse_iso(md.handshake_deadline)
    async with open_hub_pair(reopen(), invite_ack_timeout=30, ttl_sweep_interval=1) as h:
        assert (await h.hub.get_session(md.session_id)).state is SessionState.PENDING
        await trio.sleep(15)  # still before the persisted deadline (t = 25)
        assert (await h.hub.get_session(md.session_id)).state is SessionState.PENDING
        await trio.sleep(10)
        after = await h.hub.get_session(md.session_id)
        assert (after.state, after.close_reason) == (SessionState.CLOSED, "invite_timeout")
        assert after.closed_at is not None
        assert deadline <= parse_iso(after.closed_at) <= deadline + 1


async def test_required_acks_is_a_quorum(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob, carol = [await h.agent(n) for n in ("alice", "bob", "carol")]
    dave = await h.agent("dave", invites="ignore")
    md = await h.session("discussion", alice, bob, carol, dave, required_acks=2)
    assert md.pending_acks == (dave.id,)
    invite_to_dave = next(e for e in await hub.read_wal(md.session_id) if e.audience == (dave.id,))
    # A late invitee may still ack; it may no longer reject.
    reject = Envelope(
        session_id=md.session_id,
        sender_id=dave.id,
        event_type=EV_CHANNEL_INVITE_REJECT,
        causation_id=invite_to_dave.envelope_id,
    )
    with pytest.raises(ProtocolError, match="is already active; close it instead"):
        await hub.post_envelope(reject)
    await hub.post_envelope(
        Envelope(
            session_id=md.session_id,
            sender_id=dave.id,
            event_type=EV_CHANNEL_INVITE_ACK,
            causation_id=invite_to_dave.envelope_id,
        )
    )
    assert (await hub.get_session(md.session_id)).pending_acks == ()
    # Zero required acks would open a session nobody consented to (see test_authz).
    nobody = await h.agent("nobody", invites="ignore")
    with pytest.raises(ProtocolError, match="required_acks must be between 1 and 1"):
        await h.session("conversation", alice, nobody, required_acks=0)


async def test_close_session_is_idempotent_and_tells_everyone(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    closed = await hub.close_session(md.session_id, reason="done here")
    assert (closed.state, closed.close_reason) == (SessionState.CLOSED, "done here")
    assert closed.closed_at == hub.core.now_iso()
    wal = await hub.read_wal(md.session_id)
    again = await hub.close_session(md.session_id, reason="other")
    assert again == closed
    assert await hub.read_wal(md.session_id) == wal
    assert wal[-1].event_type == EV_SESSION_CLOSED
    assert wal[-1].audience == (alice.id, bob.id)
    await h.settle()
    for agent in (alice, bob):
        assert agent.client is not None
        assert agent.client.notified(agent.id)[-1] == wal[-1]
    default = await hub.close_session((await h.session("conversation", alice, bob)).session_id)
    assert default.close_reason == "explicit_close"
    with pytest.raises(NotFoundError, match="session not found: 'nope'"):
        await hub.close_session("nope")
    with pytest.raises(NotFoundError, match="session not found: 'nope'"):
        await hub.get_session("nope")


async def test_closing_a_pending_session_fails_its_creation(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice")
    bob = await h.agent("bob", invites="ignore")
    errors: list[ProtocolError] = []

    async def create() -> None:
        try:
            await h.session("conversation", alice, bob)
        except ProtocolError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(create)
        await trio.sleep(1)
        (md,) = await hub.list_sessions()
        await hub.close_session(md.session_id, reason="changed my mind")
    (error,) = errors
    assert str(error) == f"session {md.session_id} was not opened: changed my mind"
    assert trio.current_time() == pytest.approx(1)


async def test_list_sessions_filters(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob, carol = [await h.agent(n) for n in ("alice", "bob", "carol")]
    ab = await h.session("conversation", alice, bob)
    bc = await h.session("conversation", bob, carol)
    ac = await h.session("conversation", alice, carol)
    await hub.close_session(ac.session_id)

    def ids(found: list[Any]) -> list[str]:
        return [md.session_id for md in found]

    assert ids(await hub.list_sessions()) == [ab.session_id, bc.session_id]
    assert ids(await hub.list_sessions(include_terminal=True)) == [
        ab.session_id,
        bc.session_id,
        ac.session_id,
    ]
    assert ids(await hub.list_sessions(agent_id=alice.id)) == [ab.session_id]
    assert ids(await hub.list_sessions(agent_id=alice.id, include_terminal=True)) == [
        ab.session_id,
        ac.session_id,
    ]
    assert ids(await hub.list_sessions(limit=1)) == [ab.session_id]
    # Asking for a terminal state is asking for terminal sessions.
    assert ids(await hub.list_sessions(state=SessionState.CLOSED)) == [ac.session_id]
    assert ids(await hub.list_sessions(state=SessionState.ACTIVE)) == [
        ab.session_id,
        bc.session_id,
    ]
    assert await hub.list_sessions(agent_id="ghost") == []


async def test_created_audit_and_statistics(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    await hub.close_session(md.session_id)
    records = [r for r in await hub.read_audit() if r.get("session_id") == md.session_id]
    assert [r["kind"] for r in records] == [
        "session_created",
        "invite_acked",
        "session_opened",
        "session_closed",
    ]
    assert records[0]["participants"] == [alice.id, bob.id]
    stats = hub.statistics()
    assert (stats.sessions, stats.open_sessions, stats.agents) == (1, 0, 2)


async def test_an_invite_the_creator_may_not_send_fails_the_session(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice", rule=Rule(access=AccessBlock(outbound_to=["carol"])))
    bob = await h.agent("bob")
    with pytest.raises(AccessDeniedError, match=r"agent 'alice' .* may not address 'bob'"):
        await h.session("conversation", alice, bob)
    (md,) = await hub.list_sessions(include_terminal=True)
    assert (md.state, md.close_reason) == (SessionState.CLOSED, "invite_failed")
    wal = await hub.read_wal(md.session_id)
    assert [(e.seq, e.event_type) for e in wal] == [(1, EV_SESSION_CLOSED)]
    assert hub.core.directory.live_created_by(alice.id) == 0


def actor_memory(entry: SessionEntry) -> tuple[object, ...]:
    """What an entry holds for its running actor (a call, so mypy does not narrow it)."""
    return (entry.ref, entry.dedup, entry.activity)


@pytest.mark.parametrize("ending", ["closed", "expired", "crashed"])
async def test_an_ended_session_keeps_its_record_but_not_its_actors_memory(
    autojump_clock: trio.testing.MockClock, ending: str
) -> None:
    """A terminal session lets go of its actor's ref, dedup index and activity summary; what
    readers and repeats need stays (metadata, final state, WAL, the store's dedup)."""
    async with open_hub_pair(session_max_restarts=0) as h:
        hub = h.hub
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob, ttl=60)
        sid = md.session_id
        keyed = text_envelope(md, alice, "once", idempotency_key="k1")
        first = await hub.post(keyed)
        entry = hub.core.directory.get(sid)
        assert all(actor_memory(entry))
        state = hub.session_state(sid)

        if ending == "closed":
            await hub.close_session(sid, reason="done")
            assert actor_memory(entry) == (None, None, None)  # at once
        elif ending == "expired":
            await trio.sleep(61)
            await hub.expire_due()
        else:
            h.faults.crash_at("before_append", session_id=sid)
            with pytest.raises(ProtocolError, match="crashed"):
                await h.say(md, alice, "boom")
        await h.settle()

        final = await hub.get_session(sid)
        assert final.state is {"expired": SessionState.EXPIRED}.get(ending, SessionState.CLOSED)
        assert (*actor_memory(entry), entry.gate) == (None, None, None, None)
        assert hub.statistics().live_sessions == 0
        # The final state stays readable (none after a crash: its actor never published it).
        assert hub.session_state(sid) == (None if ending == "crashed" else state)
        wal = await hub.read_wal(sid)
        assert wal[-1].event_type in (EV_SESSION_CLOSED, EV_SESSION_EXPIRED)
        # A repeat still gets its original id (from the store); a new post is refused.
        again = await hub.post(keyed)
        assert (again.envelope_id, again.seq, again.duplicate) == (
            first.envelope_id,
            first.seq,
            True,
        )
        with pytest.raises(ProtocolError, match=f"session {sid} is {final.state.value}"):
            await h.say(md, alice, "more")
        assert await hub.read_wal(sid) == wal
        assert actor_memory(entry) == (None, None, None)


class HeldStore(MemoryStore):
    """A MemoryStore whose ``get_session`` waits until ``release`` is set (a slow start)."""

    def __init__(self) -> None:
        super().__init__()
        self.release: trio.Event | None = None

    async def get_session(self, session_id: str) -> SessionMetadata | None:
        if self.release is not None:
            await self.release.wait()
        return await super().get_session(session_id)


async def test_a_session_its_recovery_closes_does_not_keep_an_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A crash right after the reply that ends a consulting session, and nobody asks the
    session again: the restarted actor appends the close it was about to, then stops
    instead of idling for the hub's life."""
    store = HeldStore()
    async with open_hub_pair(store) as h:
        hub = h.hub
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("consulting", alice, bob)
        sid = md.session_id
        question = await h.say(md, alice, "q?")
        h.faults.crash_at("after_append", session_id=sid)
        release = store.release = trio.Event()
        with trio.CancelScope() as poster:
            async with trio.open_nursery() as nursery:

                async def give_up() -> None:
                    # The retry waits for the restarted actor, whose start is held.
                    await trio.testing.wait_all_tasks_blocked()
                    poster.cancel()

                nursery.start_soon(give_up)
                await h.say(md, bob, "a!", causation_id=question)
        assert poster.cancelled_caught
        store.release = None
        release.set()
        await h.settle()
        final = await hub.get_session(sid)
        assert (final.state, final.close_reason) == (SessionState.CLOSED, "consulting_complete")
        wal = await hub.read_wal(sid)
        assert [e.event_type for e in wal[-2:]] == [EV_TEXT, EV_SESSION_CLOSED]
        entry = hub.core.directory.get(sid)
        assert actor_memory(entry) == (None, None, None)
        assert hub.statistics().live_sessions == 0


async def test_waiters_on_a_session_entry_wake_on_the_publish_they_wait_for() -> None:
    """A publish nobody waits for allocates no event (issue 15, item 3); waiters still wake."""
    pending = SessionMetadata(
        session_id="s-wait",
        manifest_type="chat",
        manifest_version=1,
        creator_id="a",
        participants=(),
        state=SessionState.PENDING,
        created_at="2026-01-01T00:00:00.000000+00:00",
    )
    entry = SessionEntry(metadata=pending, stype=None)
    entry.publish(pending, None, 0)  # nobody waits: nothing to wake
    woken: list[SessionState] = []

    async def waiter() -> None:
        md = await entry.wait_for(lambda m: m.state is not SessionState.PENDING)
        woken.append(md.state)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        entry.publish(pending, None, 1)  # not what they wait for: they wait on
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []
        entry.publish(attrs.evolve(pending, state=SessionState.ACTIVE), None, 2)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == [SessionState.ACTIVE, SessionState.ACTIVE]
        nursery.cancel_scope.cancel()  # a waiter left behind fails above, never hangs
