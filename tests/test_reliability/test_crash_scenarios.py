"""Crash scenarios the state machine found, kept as plain deterministic tests.

Each test is a shrunk example from ``test_stateful.py``, named for the promise it broke.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe import (
    EV_SESSION_CLOSED,
    EV_TEXT,
    Envelope,
    HubClient,
    LocalLink,
    Passport,
    ProtocolError,
    SessionState,
    StoreError,
)
from troupe.client import HumanClient
from troupe.hub import Accepted, Hub, open_hub
from troupe.store import Store
from troupe.testing import CrashPoints, FaultyStore, ScriptedAgent, check_invariants, seeded_ids


async def consulting(troupe_hub_client: HubClient, *, bot: bool = False) -> tuple[HumanClient, str]:
    me = await troupe_hub_client.register_human(Passport(name="me"))
    if bot:
        await troupe_hub_client.register(ScriptedAgent(["an answer"]), Passport(name="you"))
    else:
        await troupe_hub_client.register_human(Passport(name="you"))
    with trio.fail_after(10):
        channel = await me.open(type="consulting", target="you")
    return me, channel.session_id


def question(me: HumanClient, sid: str, *, idempotency_key: str | None = None) -> Envelope:
    return Envelope(
        session_id=sid,
        sender_id=me.agent_id,
        event_type=EV_TEXT,
        event_data={"text": "a question?"},
        idempotency_key=idempotency_key,
    )


async def post_as_it_dies(
    troupe_hub: Hub,
    troupe_crash_points: CrashPoints,
    troupe_store_faults: FaultyStore,
    envelope: Envelope,
) -> Accepted:
    """Post ``envelope``, crashing its session right after the append, and fail every
    restart's reads until the supervisor gives up and the hub closes the session."""
    sid = envelope.session_id
    troupe_crash_points.crash_at("after_append", session_id=sid)
    troupe_store_faults.fail_next("reads", n=3, session_id=sid)
    accepted = await troupe_hub.post(envelope)
    with trio.fail_after(5):
        await troupe_hub.core.directory.get(sid).wait_for(lambda m: m.state.terminal)
    return accepted


def assert_repeat_of(again: Accepted, accepted: Accepted) -> None:
    """``again`` answers a retry of the post that got ``accepted``."""
    assert (again.envelope_id, again.seq, again.duplicate) == (
        accepted.envelope_id,
        accepted.seq,
        True,
    )


async def in_wal(troupe_hub: Hub, sid: str, envelope_id: str) -> int:
    return sum(1 for e in await troupe_hub.read_wal(sid) if e.envelope_id == envelope_id)


async def test_a_post_retried_inside_the_hub_is_not_reported_as_a_duplicate(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_crash_points: CrashPoints,
    autojump_clock: object,
) -> None:
    me, sid = await consulting(troupe_hub_client)
    troupe_crash_points.crash_at("after_append", session_id=sid)
    accepted = await troupe_hub.post(question(me, sid))
    assert not accepted.duplicate
    assert await in_wal(troupe_hub, sid, accepted.envelope_id) == 1


async def test_a_post_appended_before_its_second_crash_is_accepted_not_poison(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_crash_points: CrashPoints,
    autojump_clock: object,
) -> None:
    me, sid = await consulting(troupe_hub_client)
    troupe_crash_points.crash_at("before_append", session_id=sid)
    troupe_crash_points.crash_at("after_append", session_id=sid)
    accepted = await troupe_hub.post(question(me, sid))
    assert await in_wal(troupe_hub, sid, accepted.envelope_id) == 1
    assert troupe_hub.statistics().poison_envelopes == 0
    assert len(troupe_hub.dead_letters.letters) == 0
    await trio.testing.wait_all_tasks_blocked()  # the session's second restart
    await check_invariants(troupe_hub)


async def test_a_post_that_crashes_twice_before_its_append_is_still_poison(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_crash_points: CrashPoints,
    autojump_clock: object,
) -> None:
    me, sid = await consulting(troupe_hub_client)
    troupe_crash_points.crash_at("before_append", session_id=sid, times=2)
    with pytest.raises(ProtocolError, match="rejected as poison"):
        await troupe_hub.post(question(me, sid))
    assert [e.event_type for e in await troupe_hub.read_wal(sid)][-1] != EV_TEXT
    assert troupe_hub.statistics().poison_envelopes == 1


async def test_a_session_closed_as_crashed_publishes_no_stale_state(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_crash_points: CrashPoints,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    # The question is appended, the actor crashes, and every restart fails to read the
    # store until the supervisor gives up: the poster learns its post landed, and the
    # session is closed without claiming a state its WAL contradicts.
    me, sid = await consulting(troupe_hub_client)
    accepted = await post_as_it_dies(
        troupe_hub, troupe_crash_points, troupe_store_faults, question(me, sid)
    )
    assert await in_wal(troupe_hub, sid, accepted.envelope_id) == 1
    assert (await troupe_hub.get_session(sid)).close_reason == "crashed"
    await check_invariants(troupe_hub)


async def test_an_ack_appended_before_a_crash_still_opens_the_session(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_crash_points: CrashPoints,
    autojump_clock: object,
) -> None:
    me = await troupe_hub_client.register_human(Passport(name="me"))
    await troupe_hub_client.register_human(Passport(name="you"))
    troupe_crash_points.crash_at("after_append", after=1)  # the invite passes; its ack crashes
    with trio.fail_after(5):
        channel = await me.open(type="conversation", target="you")
    assert channel.state is SessionState.ACTIVE
    await check_invariants(troupe_hub)


async def test_a_crash_before_a_new_sessions_first_append_still_opens_and_saves_it(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_crash_points: CrashPoints,
    autojump_clock: object,
) -> None:
    # The hub actor saves nothing: the first invite's append carries the metadata. Its
    # actor crashed before it, so the restarted one finds nothing in the store and the
    # retried invite saves the session.
    me = await troupe_hub_client.register_human(Passport(name="me"))
    await troupe_hub_client.register_human(Passport(name="you"))
    troupe_crash_points.crash_at("before_append")
    with trio.fail_after(5):
        channel = await me.open(type="conversation", target="you")
    assert channel.state is SessionState.ACTIVE
    stored = await troupe_hub.core.store.get_session(channel.session_id)
    assert stored is not None
    assert stored.state is SessionState.ACTIVE
    assert troupe_hub.statistics().session_restarts == 1
    await check_invariants(troupe_hub)


async def test_a_retry_of_the_post_that_closed_its_session_gets_its_id_back(
    troupe_hub: Hub, troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    # The consulting reply closes the session: a poster that lost the answer to its
    # question and retries must learn the question was accepted, not that it was refused.
    me, sid = await consulting(troupe_hub_client, bot=True)
    envelope = question(me, sid, idempotency_key="q-1")
    accepted = await troupe_hub.post(envelope)
    with trio.fail_after(5):
        await troupe_hub.core.directory.get(sid).wait_for(lambda m: m.state.terminal)
    again = await troupe_hub.post(envelope)
    assert_repeat_of(again, accepted)
    fresh = question(me, sid, idempotency_key="q-2")
    with pytest.raises(ProtocolError, match="is closed"):
        await troupe_hub.post(fresh)


async def test_that_retry_gets_its_id_back_after_a_hub_restart_too(
    troupe_hub_store: Store, autojump_clock: object
) -> None:
    async with (
        open_hub(troupe_hub_store, new_id=seeded_ids(1)) as troupe_hub,
        HubClient(LocalLink(troupe_hub)) as hc,
    ):
        me, sid = await consulting(hc, bot=True)
        envelope = question(me, sid, idempotency_key="q-1")
        accepted = await troupe_hub.post(envelope)
        with trio.fail_after(5):
            await troupe_hub.core.directory.get(sid).wait_for(lambda m: m.state.terminal)
    async with open_hub(troupe_hub_store, new_id=seeded_ids(2)) as troupe_hub:
        again = await troupe_hub.post(envelope)
    assert_repeat_of(again, accepted)


async def test_a_post_accepted_as_its_session_crashed_for_good_can_be_retried(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_crash_points: CrashPoints,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    # Appended, then the session crashes and every restart fails until it is given up on:
    # the post was accepted, so a retry after the session's close must get its id back.
    me, sid = await consulting(troupe_hub_client)
    envelope = question(me, sid, idempotency_key="k")
    accepted = await post_as_it_dies(troupe_hub, troupe_crash_points, troupe_store_faults, envelope)
    again = await troupe_hub.post(envelope)
    assert_repeat_of(again, accepted)


async def test_a_session_given_up_on_while_a_post_waits_leaves_the_others_serving(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_crash_points: CrashPoints,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    # A post crashes its session, whose restarts then fail until it is given up on, and
    # the store fails closing it too: the hub must refuse that post and go on serving
    # every other session.
    me, first = await consulting(troupe_hub_client)
    second = (await me.open(type="consulting", target="you")).session_id
    troupe_crash_points.crash_at("before_append", session_id=first)
    troupe_store_faults.fail_next("reads", n=5, session_id=first)
    with pytest.raises((ProtocolError, StoreError)):
        await troupe_hub.post(question(me, first))
    await trio.testing.wait_all_tasks_blocked()
    assert troupe_store_faults.armed == 0  # the hub's attempt to close the session failed too
    with trio.fail_after(10):
        accepted = await troupe_hub.post(question(me, second))
    assert await in_wal(troupe_hub, second, accepted.envelope_id) == 1
    with pytest.raises(ProtocolError, match="crashed too often"):
        await troupe_hub.post(question(me, first))


async def test_a_close_that_crashes_its_session_for_good_does_not_report_success(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    # The close notice's append fails, the store cannot say whether it landed (the actor
    # crashes to recover), and every restart fails: close_session must not return an
    # open session as if it had closed it.
    _me, sid = await consulting(troupe_hub_client)
    troupe_store_faults.fail_next("append", session_id=sid)
    troupe_store_faults.fail_next("reads", n=4, session_id=sid)
    with pytest.raises(ProtocolError, match="crashed"):
        await troupe_hub.close_session(sid)
    with trio.fail_after(5):
        md = await troupe_hub.core.directory.get(sid).wait_for(lambda m: m.state.terminal)
    assert md.close_reason == "crashed"
    await check_invariants(troupe_hub)


@pytest.mark.parametrize("kind", ["consulting", "auction"])
async def test_a_create_whose_invites_crash_twice_fails_at_once(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_crash_points: CrashPoints,
    kind: str,
    autojump_clock: object,
) -> None:
    # No invite went out: create_session must say so at once, not wait for acks that
    # cannot come and then blame the invitee.
    me = await troupe_hub_client.register_human(Passport(name="me"))
    await troupe_hub_client.register_human(Passport(name="you"))
    troupe_crash_points.crash_at("before_append", times=2)
    start = trio.current_time()
    with pytest.raises(ProtocolError, match="crashed twice"):
        await me.open(type=kind, target="you")
    assert trio.current_time() - start < troupe_hub.core.config.invite_ack_timeout
    [md] = await troupe_hub.list_sessions(include_terminal=True)
    assert (md.state, md.close_reason) == (SessionState.CLOSED, "invite_failed")
    await check_invariants(troupe_hub)


async def test_a_crashed_session_whose_close_the_store_fails_is_closed_once_it_recovers(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    # The post lands but the store reports a failure and cannot be read back, so the actor
    # crashes; its restarts fail until it is given up on; closing it fails too, first on a
    # read, then on an append that lands although it reports a failure. Once the store
    # answers again the session is closed as crashed, with one close notice.
    # The post and the background close race for the last failing read (trio schedules
    # ready tasks in a random order): the post either cannot tell whether it landed, or
    # reads the WAL and finds that it did. Either answer is true; a refusal would not be.
    me, sid = await consulting(troupe_hub_client)
    troupe_store_faults.fail_next("append", n=2, session_id=sid, lost_reply=True)
    troupe_store_faults.fail_next("reads", n=5, session_id=sid)
    outcome: Accepted | StoreError
    try:
        outcome = await troupe_hub.post(question(me, sid))
    except StoreError as exc:
        outcome = exc
    await trio.sleep(10)  # the hub retries the close in the background
    assert troupe_store_faults.armed == 0
    md = await troupe_hub.get_session(sid)
    assert (md.state, md.close_reason) == (SessionState.CLOSED, "crashed")
    wal = await troupe_hub.read_wal(sid)
    assert [e.event_type for e in wal].count(EV_SESSION_CLOSED) == 1
    assert [e.text for e in wal if e.event_type == EV_TEXT] == ["a question?"]
    if isinstance(outcome, StoreError):
        assert "whether it was appended is unknown" in str(outcome)
    else:
        assert [e.seq for e in wal if e.event_type == EV_TEXT] == [outcome.seq]
    await check_invariants(troupe_hub)
