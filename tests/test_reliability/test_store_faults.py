"""Store faults reach the poster as clear errors, never as half-applied posts.

After each fault clears, the session goes on: the next envelope takes the next seq with no
gap, and the state is the fold of what the WAL holds.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from troupe import (
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_SESSION_CLOSED,
    EV_SESSION_OPENED,
    EV_TEXT,
    Envelope,
    HubClient,
    Passport,
    SessionState,
    StoreError,
)
from troupe.client import HumanClient
from troupe.hub import Hub
from troupe.testing import FaultyStore, ScriptedAgent, check_invariants, expect_envelope


async def two_humans(
    troupe_hub_client: HubClient, kind: str = "conversation"
) -> tuple[HumanClient, HumanClient, str]:
    me = await troupe_hub_client.register_human(Passport(name="me"))
    you = await troupe_hub_client.register_human(Passport(name="you"))
    channel = await me.open(type=kind, target="you")
    return me, you, channel.session_id


def text(me: HumanClient, sid: str, body: str, **fields: Any) -> Envelope:
    return Envelope(
        session_id=sid,
        sender_id=me.agent_id,
        event_type=EV_TEXT,
        event_data={"text": body},
        **fields,
    )


async def texts_in(troupe_hub: Hub, sid: str) -> list[tuple[int, str | None]]:
    return [(e.seq, e.text) for e in await troupe_hub.read_wal(sid) if e.event_type == EV_TEXT]


async def test_a_failed_append_is_the_posters_store_error_and_appends_nothing(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    me, _you, sid = await two_humans(troupe_hub_client)
    await me.send(sid, "one")
    before = (
        await troupe_hub.read_wal(sid),
        troupe_hub.session_state(sid),
        await troupe_hub.get_session(sid),
    )
    troupe_store_faults.fail_next("append", session_id=sid)
    with pytest.raises(StoreError, match=f"append for session '{sid}'"):
        await me.send(sid, "lost")
    assert (
        await troupe_hub.read_wal(sid),
        troupe_hub.session_state(sid),
        await troupe_hub.get_session(sid),
    ) == before
    await me.send(sid, "two")
    wal = await troupe_hub.read_wal(sid)
    assert await texts_in(troupe_hub, sid) == [(wal[-2].seq, "one"), (wal[-1].seq, "two")]
    assert troupe_hub.session_state(sid).turn_count == 2
    assert troupe_hub.statistics().session_restarts == 0
    await check_invariants(troupe_hub)


async def test_the_session_goes_on_when_a_long_outage_ends(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    _me, you, sid = await two_humans(troupe_hub_client)
    troupe_store_faults.fail_next("append", n=None)
    for body in ("a", "b", "c"):
        with pytest.raises(StoreError):
            await you.send(sid, body)
    troupe_store_faults.heal()
    await you.send(sid, "d")
    assert [t for _, t in await texts_in(troupe_hub, sid)] == ["d"]
    assert (await troupe_hub.get_session(sid)).state is SessionState.ACTIVE
    await check_invariants(troupe_hub)


async def test_a_retry_after_a_store_error_is_accepted_once(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    me, _you, sid = await two_humans(troupe_hub_client)
    troupe_store_faults.fail_next("append", session_id=sid)
    envelope = text(me, sid, "once", idempotency_key="k1")
    with pytest.raises(StoreError):
        await troupe_hub.post(envelope)
    first = await troupe_hub.post(envelope)
    again = await troupe_hub.post(envelope)
    assert (again.envelope_id, again.seq, again.duplicate) == (first.envelope_id, first.seq, True)
    assert [t for _, t in await texts_in(troupe_hub, sid)] == ["once"]
    await check_invariants(troupe_hub)


async def test_a_commit_whose_reply_was_lost_is_accepted_once(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    # The append is durable but the store reported a failure: the envelope is accepted (a
    # retry gets its id back), and the next post does not reuse its seq.
    me, _you, sid = await two_humans(troupe_hub_client)
    troupe_store_faults.fail_next("append", session_id=sid, lost_reply=True)
    envelope = text(me, sid, "landed", idempotency_key="k2")
    accepted = await troupe_hub.post(envelope)
    assert (await troupe_hub.post(envelope)).envelope_id == accepted.envelope_id
    await me.send(sid, "next")
    assert await texts_in(troupe_hub, sid) == [(accepted.seq, "landed"), (accepted.seq + 1, "next")]
    assert troupe_hub.session_state(sid).turn_count == 2
    assert troupe_hub.statistics().session_restarts == 0
    await check_invariants(troupe_hub)


async def test_an_append_the_store_cannot_vouch_for_is_recovered_from_the_wal(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    me, _you, sid = await two_humans(troupe_hub_client)
    troupe_store_faults.fail_next("append", session_id=sid)
    troupe_store_faults.fail_next("last_seq", session_id=sid)
    await me.send(sid, "retried on a recovered session")
    assert [t for _, t in await texts_in(troupe_hub, sid)] == ["retried on a recovered session"]
    assert troupe_hub.statistics().session_restarts == 1
    await check_invariants(troupe_hub)


class TestWithSnapshots:
    """A snapshot (and an activity summary) every two envelopes."""

    @pytest.fixture
    def troupe_hub_options(self) -> dict[str, Any]:
        return {"snapshot_every": 2}

    async def test_a_failing_snapshot_write_neither_fails_posts_nor_crashes_the_session(
        self,
        troupe_hub: Hub,
        troupe_hub_client: HubClient,
        troupe_store_faults: FaultyStore,
        autojump_clock: object,
    ) -> None:
        me, _you, sid = await two_humans(troupe_hub_client)
        troupe_store_faults.fail_next("snapshot", n=None)
        for n in range(8):
            await me.send(sid, f"#{n}")
        assert troupe_hub.statistics().session_restarts == 0
        assert (await troupe_hub.get_session(sid)).state is SessionState.ACTIVE
        troupe_store_faults.heal()
        await me.send(sid, "after")
        assert (
            troupe_store_faults.statistics().calls["save_snapshot"]
            > troupe_store_faults.statistics().failed["save_snapshot"]
        )
        assert troupe_hub.session_state(sid).turn_count == 9
        await check_invariants(troupe_hub)

    async def test_a_failed_cleanup_after_a_close_does_not_undo_the_close(
        self,
        troupe_hub: Hub,
        troupe_hub_client: HubClient,
        troupe_store_faults: FaultyStore,
        autojump_clock: object,
    ) -> None:
        me, _you, sid = await two_humans(troupe_hub_client)
        for body in ("a", "b", "c"):
            await me.send(sid, body)
        troupe_store_faults.fail_next("delete_kv")
        md = await troupe_hub.close_session(sid)
        assert md.state is SessionState.CLOSED
        await expect_envelope(me, sid, event_type=EV_SESSION_CLOSED)
        assert troupe_store_faults.statistics().failed == {"delete_kv": 1}
        await check_invariants(troupe_hub)


async def test_a_read_fault_during_recovery_is_retried_by_the_supervisor(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    troupe_crash_points: Any,
    autojump_clock: object,
) -> None:
    me, _you, sid = await two_humans(troupe_hub_client)
    troupe_crash_points.crash_at("after_fold", session_id=sid)
    troupe_store_faults.fail_next("reads", session_id=sid)
    await me.send(sid, "through it all")
    assert [t for _, t in await texts_in(troupe_hub, sid)] == ["through it all"]
    assert troupe_hub.statistics().session_restarts == 2
    await check_invariants(troupe_hub)


async def test_a_failed_close_is_an_error_and_the_session_stays_usable(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    me, _you, sid = await two_humans(troupe_hub_client)
    troupe_store_faults.fail_next("append", session_id=sid, n=None)
    with pytest.raises(StoreError):
        await troupe_hub.close_session(sid)
    troupe_store_faults.heal()
    assert (await troupe_hub.get_session(sid)).state is SessionState.ACTIVE
    await me.send(sid, "still open")
    md = await troupe_hub.close_session(sid)
    assert md.state is SessionState.CLOSED
    await check_invariants(troupe_hub)


async def test_a_failed_registration_is_the_callers_store_error(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    troupe_store_faults.fail_next("save_agent")
    with pytest.raises(StoreError, match="save_agent"):
        await troupe_hub_client.register_human(Passport(name="me"))
    me = await troupe_hub_client.register_human(Passport(name="me"))
    assert (await troupe_hub.get_agent("me")).agent_id == me.agent_id
    assert troupe_hub.statistics().agents == 1


async def test_a_failed_session_creation_leaves_no_half_made_session(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    me = await troupe_hub_client.register_human(Passport(name="me"))
    await troupe_hub_client.register(ScriptedAgent(["hi"]), Passport(name="bot"))
    # Its first write is the append of its invite, which saves its metadata too (the hub
    # actor saves nothing); a new session's first actor reads nothing, so no read fails it.
    troupe_store_faults.fail_next("append")
    with pytest.raises(StoreError), trio.fail_after(60):
        await me.open(type="conversation", target="bot")
    channel = await me.open(type="conversation", target="bot")
    await me.send(channel.session_id, "hello")
    await expect_envelope(me, channel.session_id, text="hi")
    assert [md.session_id for md in await troupe_hub.list_sessions()] == [channel.session_id]
    await check_invariants(troupe_hub)


async def test_a_two_party_session_is_created_in_two_writes(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    # Its invite carries its metadata; the ack that makes the quorum and the activation it
    # causes are one append (issue 15, item 6).
    me = await troupe_hub_client.register_human(Passport(name="me"))
    await troupe_hub_client.register_human(Passport(name="you"))
    before = troupe_store_faults.statistics().calls
    channel = await me.open(type="conversation", target="you")
    after = troupe_store_faults.statistics().calls
    assert channel.state is SessionState.ACTIVE
    assert after.get("save_session", 0) == before.get("save_session", 0)
    assert after["append"] - before.get("append", 0) == 2
    stored = await troupe_store_faults.inner.get_session(channel.session_id)
    assert stored is not None
    assert (stored.state, stored.pending_acks) == (SessionState.ACTIVE, ())


async def test_an_ack_the_store_refused_opens_nothing_and_its_retry_opens_the_session(
    troupe_hub: Hub, troupe_store_faults: FaultyStore, autojump_clock: object
) -> None:
    me = (await troupe_hub.register(Passport(name="me"))).agent_id
    you = (await troupe_hub.register(Passport(name="you"))).agent_id  # no client: no ack
    assert me is not None
    assert you is not None
    created: list[Any] = []

    async def create() -> None:
        created.append(
            await troupe_hub.create_session(
                creator_id=me, manifest_type="conversation", participants=[you]
            )
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(create)
        await trio.testing.wait_all_tasks_blocked()
        (pending,) = await troupe_hub.list_sessions()
        sid = pending.session_id
        ack = Envelope(session_id=sid, sender_id=you, event_type=EV_CHANNEL_INVITE_ACK)
        troupe_store_faults.fail_next("append", session_id=sid)
        with pytest.raises(StoreError):
            await troupe_hub.post_envelope(ack)
        # Neither the ack nor the activation: the session waits for the ack as before.
        assert [e.event_type for e in await troupe_hub.read_wal(sid)] == [EV_CHANNEL_INVITE]
        for md in (await troupe_hub.get_session(sid), await troupe_store_faults.get_session(sid)):
            assert md is not None
            assert (md.state, md.pending_acks) == (SessionState.PENDING, (you,))
        await troupe_hub.post_envelope(ack)
    assert created[0].state is SessionState.ACTIVE
    kinds = [e.event_type for e in await troupe_hub.read_wal(sid)]
    assert kinds == [EV_CHANNEL_INVITE, EV_CHANNEL_INVITE_ACK, EV_SESSION_OPENED]
    stored = await troupe_store_faults.get_session(sid)
    assert stored is not None
    assert stored.state is SessionState.ACTIVE
    await check_invariants(troupe_hub)


async def test_a_store_fault_while_binding_an_identity_spares_its_connection(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    # Every identity of a HubClient shares one connection: one bind that fails must not
    # take the others' deliveries down with it.
    me, you, sid = await two_humans(troupe_hub_client)
    troupe_store_faults.fail_next("load_cursors")
    with pytest.raises(StoreError, match="load_cursors"):
        await troupe_hub_client.register_human(Passport(name="late"))
    assert troupe_hub.statistics().connections == 1
    await me.send(sid, "still delivered")
    await expect_envelope(you, sid, text="still delivered")


async def test_a_registration_whose_bind_failed_can_be_retried(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    troupe_store_faults.fail_next("load_cursors")
    with pytest.raises(StoreError, match="load_cursors"):
        await troupe_hub_client.register_human(Passport(name="late"))
    late = await troupe_hub_client.register_human(Passport(name="late"))
    assert (await troupe_hub.get_agent("late")).agent_id == late.agent_id


async def test_a_store_fault_saving_cursors_spares_the_connection(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    me, you, sid = await two_humans(troupe_hub_client)
    troupe_store_faults.fail_next("save_cursors", n=3)
    for body in ("one", "two"):
        await me.send(sid, body)
        await expect_envelope(you, sid, text=body)
    await trio.sleep(1)  # (virtual) past the cursor flush interval: the saves are tried
    await trio.testing.wait_all_tasks_blocked()
    assert troupe_store_faults.statistics().failed.get("save_cursors", 0) >= 1
    assert troupe_hub.statistics().connections == 1
    await me.send(sid, "three")
    await expect_envelope(you, sid, text="three")


class TestPassivation:
    """Sessions idle for a minute are passivated (their snapshot saved, their actor stopped)."""

    @pytest.fixture
    def troupe_hub_options(self) -> dict[str, Any]:
        return {"passivate_after": 60.0}

    async def test_a_failed_snapshot_before_a_passivation_keeps_the_session_running(
        self,
        troupe_hub: Hub,
        troupe_hub_client: HubClient,
        troupe_store_faults: FaultyStore,
        autojump_clock: object,
    ) -> None:
        me, you, sid = await two_humans(troupe_hub_client)
        await me.send(sid, "before")
        troupe_store_faults.fail_next("snapshot", session_id=sid)
        await trio.sleep(90)
        assert troupe_hub.statistics().session_restarts == 0
        await trio.sleep(90)  # the next sweep passivates it
        assert troupe_hub.statistics().passivations == 1
        await me.send(sid, "after")
        await expect_envelope(you, sid, text="after")
        assert troupe_hub.session_state(sid).turn_count == 2
        await check_invariants(troupe_hub)
