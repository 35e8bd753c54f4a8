"""The registry: identities, names, resumes, rules, skills, capabilities, observations, auth."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe import AuthError, DecodeError, NotFoundError, ProtocolError, StoreError
from troupe.hub import ApiKeyAuth, Hub, NoAuth
from troupe.model import (
    AccessBlock,
    AuthBlock,
    ObservedStat,
    Passport,
    Resume,
    Rule,
    TaskState,
    parse_iso,
)
from troupe.store import MemoryStore
from troupe.testing import FaultyStore

from ..harness import HubPair, open_hub_pair
from .conftest import Reopen


async def stored(h: HubPair, agent_id: str) -> Passport:
    (record,) = [r for r in await h.store.load_agents() if r.passport.agent_id == agent_id]
    return record.passport


async def test_register_stamps_id_and_time_on_a_copy(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    await trio.sleep(7)
    mine = Passport(name="alice", agent_id="chosen-by-me")
    stamped = await hub.register(mine, Resume(summary="s"))
    assert mine.agent_id == "chosen-by-me"
    assert mine.created_at == ""
    assert stamped.agent_id
    assert stamped.agent_id != "chosen-by-me"
    assert stamped.name == "alice"
    assert abs(parse_iso(stamped.created_at) - hub.core.now()) < 1e-3
    assert await stored(h, stamped.agent_id) == stamped
    assert await hub.get_rule(stamped.agent_id) == Rule()


async def test_a_taken_name_is_refused_naming_the_existing_id(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    first = await hub.register(Passport(name="alice"))
    with pytest.raises(ProtocolError, match="already registered") as info:
        await hub.register(Passport(name="alice", owner="someone else"))
    assert first.agent_id is not None
    assert first.agent_id in str(info.value)
    assert [r.passport for r in await h.store.load_agents()] == [first]


async def test_one_of_many_concurrent_same_name_registrations_wins(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    won: list[Passport] = []
    lost: list[ProtocolError] = []

    async def attempt() -> None:
        try:
            won.append(await hub.register(Passport(name="bob")))
        except ProtocolError as exc:
            lost.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(attempt)
    assert len(won) == 1
    assert len(lost) == 9
    assert len(await h.store.load_agents()) == 1


@pytest.mark.parametrize(
    ("passport", "match"),
    [
        (Passport(name=""), "non-empty name"),
        (Passport(name="   "), "non-empty name"),
        (Passport(name="x", kind="robot"), "unknown kind 'robot'"),
    ],
)
async def test_malformed_passports_are_refused(
    autojump_clock: trio.testing.MockClock, hub: Hub, passport: Passport, match: str
) -> None:
    with pytest.raises(ProtocolError, match=match):
        await hub.register(passport)


async def test_get_agent_by_name_or_id_and_not_found_messages(
    autojump_clock: trio.testing.MockClock, hub: Hub
) -> None:
    alice = await hub.register(Passport(name="alice"), Resume(summary="hi"), skill_md="# A")
    assert alice.agent_id is not None
    assert await hub.get_agent("alice") == alice
    assert await hub.get_agent(alice.agent_id) == alice
    assert hub.find_agent_id("alice") == alice.agent_id
    assert hub.find_agent_id("nobody") is None
    assert hub.name_for(alice.agent_id) == "alice"
    assert hub.name_for("unknown-id") == "unknown-id"
    with pytest.raises(NotFoundError, match="agent not found: 'nobody'"):
        await hub.get_agent("nobody")
    with pytest.raises(NotFoundError, match="resume not found: 'nobody'"):
        await hub.get_resume("nobody")
    with pytest.raises(NotFoundError, match="agent not registered: 'nobody'"):
        await hub.get_rule("nobody")
    assert await hub.get_skill(alice.agent_id) == "# A"
    assert await hub.get_skill("nobody") is None
    assert (await hub.get_resume(alice.agent_id)).summary == "hi"


async def test_unregister_forgets_and_re_registering_gives_a_new_id(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice")
    bob = await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    await hub.unregister(alice.id)
    assert hub.find_agent_id("alice") is None
    assert [r.passport.name for r in await h.store.load_agents()] == ["bob"]
    with pytest.raises(NotFoundError, match="agent not found: 'alice'"):
        await hub.get_agent("alice")
    with pytest.raises(NotFoundError, match=f"agent not registered: '{alice.id}'"):
        await hub.unregister(alice.id)
    # The session and its WAL are kept; the dead id may no longer post into it.
    assert (await hub.get_session(md.session_id)).session_id == md.session_id
    with pytest.raises(NotFoundError, match=f"sender not registered: '{alice.id}'"):
        await h.say(md, alice)
    # A post to the dead id still lands in the WAL.
    await h.say(md, bob, "still there?")
    assert (await hub.read_wal(md.session_id))[-1].event_data == {"text": "still there?"}
    again = await hub.register(Passport(name="alice"))
    assert again.agent_id not in (None, alice.id)


async def test_set_resume_bumps_the_version_and_moves_the_capability_index(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await hub.register(Passport(name="alice"), Resume(claimed_capabilities=["sql"]))
    assert alice.agent_id is not None
    aid = alice.agent_id
    assert hub.agents_with_capability("sql") == [aid]
    await trio.sleep(60)
    await hub.set_resume(aid, Resume(claimed_capabilities=["python"], version=42))
    resume = await hub.get_resume(aid)
    assert resume.version == 2
    assert resume.last_updated == hub.core.now_iso()
    assert hub.agents_with_capability("sql") == []
    assert hub.agents_with_capability("python") == [aid]
    assert await h.store.agents_with_capability("python") == [aid]
    (record,) = await h.store.load_agents()
    assert record.resume == resume
    await hub.set_resume(aid, Resume())
    assert (await hub.get_resume(aid)).version == 3
    with pytest.raises(NotFoundError, match="agent not registered: 'ghost'"):
        await hub.set_resume("ghost", Resume())


async def test_set_rule_and_set_skill(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await hub.register(Passport(name="alice"), skill_md="v1")
    assert alice.agent_id is not None
    aid = alice.agent_id
    strict = Rule(version=99, access=AccessBlock(inbound_from=["bob"]))
    await hub.set_rule(aid, strict)
    rule = await hub.get_rule(aid)
    assert rule.version == 2
    assert rule.access.inbound_from == ("bob",)
    await hub.set_rule(aid, strict)
    assert (await hub.get_rule(aid)).version == 3
    await hub.set_skill(aid, "v2")
    assert await hub.get_skill(aid) == "v2"
    (record,) = await h.store.load_agents()
    assert (record.rule.version, record.skill_md) == (3, "v2")
    await hub.set_skill(aid, None)
    assert await hub.get_skill(aid) is None
    (record,) = await h.store.load_agents()
    assert record.skill_md is None
    with pytest.raises(NotFoundError, match="agent not registered: 'ghost'"):
        await hub.set_rule("ghost", Rule())
    with pytest.raises(NotFoundError, match="agent not registered: 'ghost'"):
        await hub.set_skill("ghost", "x")
    kinds = [r["kind"] for r in await hub.read_audit()]
    assert kinds == ["agent_registered", "rule_set", "rule_set", "skill_set", "skill_set"]


async def registered(hub: Hub, name: str, **resume: object) -> str:
    passport = await hub.register(Passport(name=name), Resume(**resume))  # type: ignore[arg-type]
    assert passport.agent_id is not None
    return passport.agent_id


async def test_list_agents_filters(autojump_clock: trio.testing.MockClock, hub: Hub) -> None:
    await registered(hub, "carol", claimed_capabilities=["sql"], summary="Writes SQL")
    await registered(hub, "alice", claimed_capabilities=["python"], summary="Python and sql")
    await hub.register(Passport(name="hank", kind="human"), Resume(summary="a human"))
    await hub.register(Passport(name="agnes", kind="agent"))

    def names(found: list[Passport]) -> list[str]:
        return [p.name for p in found]

    assert names(await hub.list_agents()) == ["carol", "alice", "hank", "agnes"]
    assert names(await hub.list_agents(capability="sql")) == ["carol"]
    assert names(await hub.list_agents(capability="cobol")) == []
    # The query looks at the summary only, case-insensitively (not at names).
    assert names(await hub.list_agents(query="SQL")) == ["carol", "alice"]
    assert names(await hub.list_agents(query="agnes")) == []
    assert names(await hub.list_agents(kind="human")) == ["hank"]
    # "agent" matches a passport without a kind.
    assert names(await hub.list_agents(kind="agent")) == ["carol", "alice", "agnes"]
    assert names(await hub.list_agents(sort_by="name")) == ["agnes", "alice", "carol", "hank"]
    assert names(await hub.list_agents(sort_by="name", limit=2)) == ["agnes", "alice"]
    assert names(await hub.list_agents(limit=0)) == []
    assert names(await hub.list_agents(query="sql", kind="agent", limit=1)) == ["carol"]
    # The caller's error naming the field (over a wire: bad_frame, not an internal error).
    with pytest.raises(DecodeError, match=r"ListAgents\.sort_by: unknown sort_by 'cost'") as bad:
        await hub.list_agents(sort_by="cost")
    assert bad.value.field == "sort_by"


async def test_list_agents_sorted_by_track_record(
    autojump_clock: trio.testing.MockClock, hub: Hub
) -> None:
    slow = await registered(hub, "slow")
    fast = await registered(hub, "fast")
    never = await registered(hub, "never", claimed_capabilities=["sql"])
    for owner, outcomes, latency in (
        (slow, [TaskState.COMPLETED, TaskState.COMPLETED], 900),
        (fast, [TaskState.COMPLETED, TaskState.FAILED], 100),
    ):
        for outcome in outcomes:
            await hub.record_observation(
                owner_id=owner, capability="sql", outcome=outcome, latency_ms=latency
            )
    by_rate = await hub.list_agents(capability="sql", sort_by="success_rate")
    assert [p.agent_id for p in by_rate] == [slow, fast, never]
    by_latency = await hub.list_agents(capability="sql", sort_by="latency")
    assert [p.agent_id for p in by_latency] == [fast, slow, never]


async def test_observations_count_terminal_outcomes_once_per_task(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    aid = await registered(hub, "alice")
    await hub.record_observation(owner_id=aid, capability="sql", outcome=TaskState.RUNNING)
    assert (await hub.get_resume(aid)).observed == {}
    assert hub.agents_with_capability("sql") == []
    for outcome, task_id in (
        (TaskState.COMPLETED, "t1"),
        (TaskState.FAILED, "t2"),
        (TaskState.EXPIRED, "t3"),
        (TaskState.CANCELLED, "t4"),
        (TaskState.COMPLETED, "t1"),  # a repeat of t1: ignored
    ):
        await hub.record_observation(
            owner_id=aid, capability="sql", outcome=outcome, latency_ms=50, task_id=task_id
        )
    await hub.record_observation(owner_id="ghost", capability="sql", outcome=TaskState.FAILED)
    resume = await hub.get_resume(aid)
    assert resume.observed == {
        "sql": ObservedStat(n=4, completed=1, failed=1, expired=1, p50_latency_ms=50)
    }
    assert resume.version == 5
    # Observed capabilities join the index (and persist).
    assert hub.agents_with_capability("sql") == [aid]
    assert [p.agent_id for p in await hub.list_agents(capability="sql")] == [aid]
    (record,) = await h.store.load_agents()
    assert record.resume == resume


async def test_observation_dedup_survives_a_restart(
    autojump_clock: trio.testing.MockClock,
    reopen: Reopen,
) -> None:
    async with open_hub_pair(reopen()) as h:
        aid = await registered(h.hub, "alice")
        await h.hub.record_observation(
            owner_id=aid, capability="sql", outcome=TaskState.COMPLETED, task_id="t1"
        )
    async with open_hub_pair(reopen()) as h:
        await h.hub.record_observation(
            owner_id=aid, capability="sql", outcome=TaskState.FAILED, task_id="t1"
        )
        await h.hub.record_observation(
            owner_id=aid, capability="sql", outcome=TaskState.FAILED, task_id="t2"
        )
        stat = (await h.hub.get_resume(aid)).observed["sql"]
        assert (stat.n, stat.completed, stat.failed) == (2, 1, 1)
        assert h.hub.agents_with_capability("sql") == [aid]


async def test_an_observation_whose_resume_was_not_saved_can_be_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A store that refuses the resume leaves the task unobserved: the retry counts it."""
    store = FaultyStore(MemoryStore())

    async def observe(h: HubPair, aid: str, task_id: str, outcome: TaskState) -> None:
        await h.hub.record_observation(
            owner_id=aid, capability="sql", outcome=outcome, task_id=task_id
        )

    async with open_hub_pair(store) as h:
        aid = await registered(h.hub, "alice")
        store.fail_next("save_resume")
        with pytest.raises(StoreError):
            await observe(h, aid, "t1", TaskState.COMPLETED)
        assert (await h.hub.get_resume(aid)).observed == {}
        await observe(h, aid, "t1", TaskState.COMPLETED)  # the retry
        await observe(h, aid, "t1", TaskState.COMPLETED)  # a repeat: ignored
        stat = (await h.hub.get_resume(aid)).observed["sql"]
        assert (stat.n, stat.completed) == (1, 1)
    async with open_hub_pair(store) as h:
        await observe(h, aid, "t1", TaskState.COMPLETED)  # still a repeat after a restart
        stat = (await h.hub.get_resume(aid)).observed["sql"]
        assert (stat.n, stat.completed) == (1, 1)


async def test_an_observation_counted_but_not_marked_is_not_counted_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The resume was saved, the task's mark was not: the observation stands (the call
    succeeds, nothing to retry) and a repeat in this hub run is still ignored."""
    store = FaultyStore(MemoryStore())
    async with open_hub_pair(store) as h:
        aid = await registered(h.hub, "alice")
        store.fail_next("put_kv")
        for _ in range(2):
            await h.hub.record_observation(
                owner_id=aid, capability="sql", outcome=TaskState.FAILED, task_id="t1"
            )
        stat = (await h.hub.get_resume(aid)).observed["sql"]
        assert (stat.n, stat.failed) == (1, 1)
        assert store.statistics().failed == {"put_kv": 1}
        (record,) = await store.load_agents()
        assert record.resume.observed["sql"] == stat


async def test_auth_unknown_scheme_and_bad_api_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(auth=[NoAuth(), ApiKeyAuth({"alice": "s3cret"})]) as h:
        hub = h.hub
        with pytest.raises(
            AuthError,
            match=r"no auth adapter installed for scheme 'jwt' \(agent 'x'\); the hub accepts "
            r"api_key, none$",
        ):
            await hub.register(Passport(name="x", auth=AuthBlock(scheme="jwt")))
        with pytest.raises(AuthError, match="bad api key for agent 'alice'"):
            await hub.register(
                Passport(name="alice", auth=AuthBlock(scheme="api_key", claim={"token": "nope"}))
            )
        with pytest.raises(AuthError, match="bad api key for agent 'alice'"):
            await hub.register(Passport(name="alice", auth=AuthBlock(scheme="api_key")))
        with pytest.raises(AuthError, match="bad api key for agent 'bob'"):
            await hub.register(
                Passport(name="bob", auth=AuthBlock(scheme="api_key", claim={"token": "x"}))
            )
        assert await h.store.load_agents() == []
        ok = await hub.register(
            Passport(name="alice", auth=AuthBlock(scheme="api_key", claim={"token": "s3cret"}))
        )
        assert ok.agent_id is not None
        # Without a scheme a passport goes through NoAuth; remote agents skip auth.
        await hub.register(Passport(name="plain"))
        await hub.register(
            Passport(name="far", kind="remote_agent", auth=AuthBlock(scheme="federation"))
        )
        assert hub.auth.schemes() == ["api_key", "none"]


async def test_only_api_key_installed_refuses_passports_without_a_scheme(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(auth=[ApiKeyAuth({"alice": "k"})]) as h:
        with pytest.raises(
            AuthError,
            match=r"^the hub requires authentication for agent 'alice' \(api_key\) and none was "
            r"presented; over WebSocket give the link its key: "
            r"WsLink\(url, auth=\{'alice': KEY\}\)$",
        ):
            await h.hub.register(Passport(name="alice"))


async def test_registry_is_rebuilt_from_the_store(
    autojump_clock: trio.testing.MockClock,
    reopen: Reopen,
) -> None:
    async with open_hub_pair(reopen()) as h:
        aid = await registered(h.hub, "alice", claimed_capabilities=["sql"], summary="x")
        await h.hub.set_rule(aid, Rule())
        await h.hub.set_skill(aid, "skill")
        before = await h.hub.get_agent("alice"), await h.hub.get_resume(aid)
    async with open_hub_pair(reopen()) as h:
        assert (await h.hub.get_agent("alice"), await h.hub.get_resume(aid)) == before
        assert (await h.hub.get_rule(aid)).version == 2
        assert await h.hub.get_skill(aid) == "skill"
        assert h.hub.agents_with_capability("sql") == [aid]
        with pytest.raises(ProtocolError, match=f"already registered \\(agent_id {aid}\\)"):
            await h.hub.register(Passport(name="alice"))
