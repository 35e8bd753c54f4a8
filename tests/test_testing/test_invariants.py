"""check_invariants finds each kind of damage; no_task_leaks finds tasks left behind."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio

from troupe import EV_SESSION_CLOSED, EV_TEXT, Envelope, HubClient, LocalLink, Passport, TroupeError
from troupe.hub import Hub, open_hub
from troupe.testing import (
    CrashPoints,
    FaultyStore,
    InvariantViolation,
    ScriptedAgent,
    TaskLeak,
    check_invariants,
    live_tasks,
    no_task_leaks,
    seeded_ids,
)


async def a_conversation(troupe_hub: Hub, troupe_hub_client: HubClient) -> str:
    await troupe_hub_client.register(ScriptedAgent(["pong"] * 3), Passport(name="bot"))
    me = await troupe_hub_client.register_human(Passport(name="me"))
    channel = await me.open(type="conversation", target="bot")
    await me.send(channel.session_id, "ping", causation_id=None)
    await me.wait_for_channel_event(
        channel_id=channel.session_id, predicate=lambda e: e.text == "pong", timeout=5
    )
    return channel.session_id


async def append_behind_the_hubs_back(troupe_hub: Hub, sid: str, **fields: Any) -> Envelope:
    wal = await troupe_hub.read_wal(sid)
    extra = attrs.evolve(
        wal[-1], envelope_id=f"extra-{len(wal)}", seq=len(wal) + 1, idempotency_key=None, **fields
    )
    await troupe_hub.core.store.append(sid, [extra])
    return extra


async def test_a_healthy_hub_passes(
    troupe_hub: Hub, troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    sid = await a_conversation(troupe_hub, troupe_hub_client)
    report = await check_invariants(troupe_hub)
    assert report.sessions == 1
    assert report.folded == 1
    assert report.envelopes == len(await troupe_hub.read_wal(sid))


async def test_a_state_that_is_not_the_fold_of_the_wal_is_caught(
    troupe_hub: Hub, troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    sid = await a_conversation(troupe_hub, troupe_hub_client)
    entry = troupe_hub.core.directory.get(sid)
    entry.state = attrs.evolve(entry.state, turn_count=99)
    with pytest.raises(InvariantViolation, match="is not the fold of its WAL"):
        await check_invariants(troupe_hub)


async def test_an_envelope_the_hub_did_not_publish_is_caught(
    troupe_hub: Hub, troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    sid = await a_conversation(troupe_hub, troupe_hub_client)
    await append_behind_the_hubs_back(troupe_hub, sid)
    with pytest.raises(InvariantViolation, match=r"published last_seq \d+, WAL has"):
        await check_invariants(troupe_hub)


async def test_a_retry_appended_twice_is_caught(
    troupe_hub: Hub, troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    sid = await a_conversation(troupe_hub, troupe_hub_client)
    reply = next(e for e in await troupe_hub.read_wal(sid) if e.text == "pong")
    await append_behind_the_hubs_back(troupe_hub, sid, causation_id=reply.causation_id)
    with pytest.raises(InvariantViolation, match="share the dedup key"):
        await check_invariants(troupe_hub)


async def test_a_close_notice_in_an_open_session_is_caught(
    troupe_hub: Hub, troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    sid = await a_conversation(troupe_hub, troupe_hub_client)
    await append_behind_the_hubs_back(
        troupe_hub, sid, event_type=EV_SESSION_CLOSED, causation_id=None
    )
    with pytest.raises(InvariantViolation, match="is active but its WAL ends with a close notice"):
        await check_invariants(troupe_hub)


async def test_metadata_stored_differently_is_caught(
    troupe_hub: Hub, troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    sid = await a_conversation(troupe_hub, troupe_hub_client)
    md = await troupe_hub.get_session(sid)
    await troupe_hub.core.store.save_session(attrs.evolve(md, close_reason="tampered"))
    with pytest.raises(InvariantViolation, match="stored metadata differs"):
        await check_invariants(troupe_hub)


async def test_the_same_envelope_id_in_two_sessions_is_caught(
    troupe_hub: Hub, troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    sid = await a_conversation(troupe_hub, troupe_hub_client)
    me = await troupe_hub_client.register_human(Passport(name="me2"))
    other = await me.open(type="conversation", target="bot")
    first = (await troupe_hub.read_wal(sid))[0]
    wal = await troupe_hub.read_wal(other.session_id)
    copy = attrs.evolve(wal[-1], envelope_id=first.envelope_id, seq=len(wal) + 1)
    await troupe_hub.core.store.append(other.session_id, [copy])
    with pytest.raises(InvariantViolation, match=f"envelope id {first.envelope_id} is in sessions"):
        await check_invariants(troupe_hub)


async def test_a_clean_hub_leaves_no_task(autojump_clock: object) -> None:
    before = live_tasks()
    with no_task_leaks():
        async with open_hub(new_id=seeded_ids(1)) as troupe_hub:
            client = HubClient(LocalLink(troupe_hub))
            me = await client.register_human(Passport(name="me"))
            await client.register(ScriptedAgent(["a"]), Passport(name="bot"))
            channel = await me.open(type="conversation", target="bot")
            await me.send(channel.session_id, "q")
            assert len(live_tasks()) > len(before) + 5
    assert live_tasks() == before


async def test_a_task_left_in_an_outer_nursery_is_caught(autojump_clock: object) -> None:
    async with trio.open_nursery() as outer:
        with pytest.raises(TaskLeak, match=r"1 task.*sleep_forever"):
            with no_task_leaks():
                outer.start_soon(trio.sleep_forever)
        outer.cancel_scope.cancel()


async def test_a_system_task_left_behind_is_caught(autojump_clock: object) -> None:
    stop = trio.Event()
    with pytest.raises(TaskLeak, match="wait"):
        with no_task_leaks():
            trio.lowlevel.spawn_system_task(stop.wait)
    stop.set()


async def test_a_failing_block_is_not_masked(autojump_clock: object) -> None:
    async def fail_leaving_a_task(outer: trio.Nursery) -> None:
        await trio.lowlevel.checkpoint()
        with no_task_leaks():
            outer.start_soon(trio.sleep_forever)
            raise KeyError("the real failure")

    async with trio.open_nursery() as outer:
        with pytest.raises(KeyError, match="the real failure"):
            await fail_leaving_a_task(outer)
        outer.cancel_scope.cancel()


async def test_a_session_the_hub_is_still_closing_is_skipped_until_closed(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_crash_points: CrashPoints,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    sid = await a_conversation(troupe_hub, troupe_hub_client)
    troupe_crash_points.crash_at("before_append", session_id=sid, times=None)
    troupe_store_faults.fail_next("append", session_id=sid, n=None)  # the close notice too
    me = troupe_hub_client.identities()[1]
    for _ in range(2):
        with pytest.raises(TroupeError):
            await me.post_envelope(
                Envelope(session_id=sid, sender_id="", event_type=EV_TEXT, event_data={})
            )
    await trio.sleep(1)
    assert (await check_invariants(troupe_hub)).closing == 1
    troupe_store_faults.heal()
    await trio.sleep(10)
    report = await check_invariants(troupe_hub)
    assert report.closing == 0
    assert (await troupe_hub.get_session(sid)).close_reason == "crashed"
