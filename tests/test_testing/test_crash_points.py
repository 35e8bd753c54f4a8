"""CrashPoints: armed points raise InjectedCrash where and as often as asked."""

from __future__ import annotations

import pytest

from troupe import EV_TEXT, Envelope, HubClient, Passport, ProtocolError
from troupe.hub import CRASH_POINTS, Hub, InjectedCrash
from troupe.testing import CrashPoints, ScriptedAgent, check_invariants


def crashes(points: CrashPoints, point: str, session_id: str) -> bool:
    try:
        points.check(point, session_id)
    except InjectedCrash:
        return True
    return False


def test_nothing_armed_never_crashes() -> None:
    points = CrashPoints()
    assert not any(crashes(points, p, "s") for p in CRASH_POINTS)
    assert points.statistics().checks == 4
    assert points.statistics().crashes == 0


def test_crash_at_crashes_that_point_n_times() -> None:
    points = CrashPoints()
    points.crash_at("after_fold", times=2)
    assert not crashes(points, "after_append", "s")
    assert crashes(points, "after_fold", "s")
    assert crashes(points, "after_fold", "t")
    assert not crashes(points, "after_fold", "s")
    assert points.history == [("after_fold", "s"), ("after_fold", "t")]
    assert points.statistics().by_point == {"after_fold": 2}


def test_crash_at_one_session_spares_the_others() -> None:
    points = CrashPoints()
    points.crash_at("before_append", session_id="s")
    assert not crashes(points, "before_append", "t")
    assert crashes(points, "before_append", "s")
    assert not crashes(points, "before_append", "s")


def test_after_lets_that_many_through_first() -> None:
    points = CrashPoints()
    points.crash_at("after_append", session_id="s", after=2)
    assert not crashes(points, "after_append", "t")
    assert not crashes(points, "after_append", "s")
    assert not crashes(points, "after_append", "s")
    assert crashes(points, "after_append", "s")
    assert not crashes(points, "after_append", "s")


def test_times_none_crashes_until_cleared() -> None:
    points = CrashPoints()
    points.crash_at("after_dispatch", times=None)
    assert all(crashes(points, "after_dispatch", "s") for _ in range(10))
    points.clear()
    assert not crashes(points, "after_dispatch", "s")
    assert points.statistics().crashes == 10


def test_random_crashes_are_reproducible_from_the_seed() -> None:
    def run(seed: int) -> list[bool]:
        points = CrashPoints()
        points.crash_randomly(0.3, seed=seed, points=["after_append"])
        return [crashes(points, p, "s") for _ in range(50) for p in CRASH_POINTS]

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert 0 < sum(first) < 50
    never = CrashPoints()
    never.crash_randomly(0.0, seed=1)
    assert not any(crashes(never, p, "s") for p in CRASH_POINTS * 20)
    always = CrashPoints()
    always.crash_randomly(1.0, seed=1, session_id="s")
    assert crashes(always, "before_append", "s")
    assert not crashes(always, "before_append", "t")


def test_bad_arguments_are_refused() -> None:
    points = CrashPoints()
    with pytest.raises(ValueError, match="unknown crash point 'after_lunch'"):
        points.crash_at("after_lunch")
    with pytest.raises(ValueError, match="at least 1"):
        points.crash_at("after_fold", times=0)
    with pytest.raises(ValueError, match="after must be >= 0"):
        points.crash_at("after_fold", after=-1)
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        points.crash_randomly(1.5, seed=0)
    with pytest.raises(ValueError, match="unknown crash point"):
        points.crash_randomly(0.5, seed=0, points=["nowhere"])


@pytest.mark.parametrize("troupe_hub_store", ["memory", "sqlite"], indirect=True)
@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_a_crash_at_any_point_of_a_post_is_invisible_to_the_poster(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_crash_points: CrashPoints,
    point: str,
    autojump_clock: object,
) -> None:
    echo = ScriptedAgent([lambda turn: f"echo: {turn.text}"], cycle=True)
    await troupe_hub_client.register(echo, Passport(name="echo"))
    me = await troupe_hub_client.register_human(Passport(name="me"))
    channel = await me.open(type="conversation", target="echo")
    troupe_crash_points.crash_at(point, session_id=channel.session_id)
    envelope_id = await me.send(channel.session_id, "hello")
    reply = await me.wait_for_channel_event(
        channel_id=channel.session_id,
        predicate=lambda e: e.event_type == EV_TEXT and e.sender_id != me.agent_id,
        timeout=10,
    )
    assert reply.text == "echo: hello"
    assert reply.causation_id == envelope_id
    assert troupe_crash_points.history == [(point, channel.session_id)]
    assert troupe_hub.statistics().session_restarts == 1
    texts = [
        e.text for e in await troupe_hub.read_wal(channel.session_id) if e.event_type == EV_TEXT
    ]
    assert texts == ["hello", "echo: hello"]
    await check_invariants(troupe_hub)


async def test_a_post_that_crashes_its_session_twice_is_rejected_as_poison(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_crash_points: CrashPoints,
    autojump_clock: object,
) -> None:
    await troupe_hub_client.register(ScriptedAgent(), Passport(name="quiet"))
    me = await troupe_hub_client.register_human(Passport(name="me"))
    channel = await me.open(type="conversation", target="quiet")
    troupe_crash_points.crash_at("before_append", session_id=channel.session_id, times=2)
    poison = Envelope(
        session_id=channel.session_id,
        sender_id=me.agent_id,
        event_type=EV_TEXT,
        event_data={"text": "boom"},
    )
    with pytest.raises(ProtocolError, match="rejected as poison"):
        await me.post_envelope(poison)
    assert troupe_hub.statistics().poison_envelopes == 1
    await me.send(channel.session_id, "still here")
    texts = [
        e.text for e in await troupe_hub.read_wal(channel.session_id) if e.event_type == EV_TEXT
    ]
    assert texts == ["still here"]
    await check_invariants(troupe_hub)
