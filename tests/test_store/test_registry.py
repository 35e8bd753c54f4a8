"""Agents, resumes, rules, skills and the capability index, on every engine."""

from __future__ import annotations

import pytest

import troupe
from troupe.model import ObservedStat, Passport, Resume, Rule
from troupe.store import AgentRecord, Store

from .conftest import Reopen
from .factories import agent, env


async def test_agents_load_in_registration_order(store: Store) -> None:
    for agent_id in ("c", "a", "b"):
        await store.save_agent(agent(agent_id))
    # Saving an existing agent replaces it in place; it does not move to the end.
    await store.save_agent(agent("c", "writing"))
    loaded = await store.load_agents()
    assert [r.passport.agent_id for r in loaded] == ["c", "a", "b"]
    assert loaded[0] == agent("c", "writing")


async def test_an_agent_reads_back_equal(store: Store) -> None:
    record = AgentRecord(
        passport=Passport(name="alice", agent_id="a1", kind="human", created_at="t0"),
        resume=Resume(
            claimed_capabilities=["review"],
            summary="reviews",
            observed={"review": ObservedStat(n=3, completed=2, p50_latency_ms=120)},
        ),
        rule=Rule(version=2),
        skill_md="---\nname: alice\n---\nbody",
    )
    await store.save_agent(record)
    assert await store.load_agents() == [record]


async def test_agent_without_an_id_is_refused(store: Store) -> None:
    record = AgentRecord(passport=Passport(name="nobody"), resume=Resume(), rule=Rule())
    with pytest.raises(troupe.StoreError, match="'nobody' has no agent_id"):
        await store.save_agent(record)
    assert await store.load_agents() == []


async def test_capability_index_follows_claims_and_observations(store: Store) -> None:
    await store.save_agent(agent("b", "review", "write"))
    await store.save_agent(agent("a", "review"))
    assert await store.agents_with_capability("review") == ["a", "b"]
    assert await store.agents_with_capability("write") == ["b"]
    assert await store.agents_with_capability("fly") == []

    observed = Resume(observed={"translate": ObservedStat(n=1, completed=1)})
    await store.save_resume("b", observed)
    assert await store.agents_with_capability("review") == ["a"]
    assert await store.agents_with_capability("write") == []
    assert await store.agents_with_capability("translate") == ["b"]
    assert (await store.load_agents())[0].resume == observed

    await store.save_agent(agent("a", "write"))
    assert await store.agents_with_capability("review") == []
    assert await store.agents_with_capability("write") == ["a"]


async def test_rule_and_skill_updates(store: Store) -> None:
    await store.save_agent(agent("a"))
    await store.save_rule("a", Rule(version=7))
    await store.save_skill("a", "# skill")
    (record,) = await store.load_agents()
    assert record.rule == Rule(version=7)
    assert record.skill_md == "# skill"
    await store.save_skill("a", None)
    assert (await store.load_agents())[0].skill_md is None


@pytest.mark.parametrize("method", ["save_resume", "save_rule", "save_skill"])
async def test_updates_to_an_unknown_agent_fail_and_name_it(store: Store, method: str) -> None:
    value = {"save_resume": Resume(), "save_rule": Rule(), "save_skill": "# s"}[method]
    with pytest.raises(troupe.StoreError, match="unknown agent 'ghost'"):
        await getattr(store, method)("ghost", value)
    assert await store.load_agents() == []


async def test_delete_agent_forgets_identity_index_and_cursors_but_keeps_history(
    store: Store,
) -> None:
    await store.save_agent(agent("a", "review"))
    await store.save_agent(agent("b", "review"))
    await store.append("s1", [env("s1", 1, sender_id="a")])
    await store.save_cursors([("a", "s1", 1)])
    await store.save_cursors([("b", "s1", 1)])

    await store.delete_agent("a")
    await store.delete_agent("never-registered")  # forgetting nobody is not an error

    assert [r.passport.agent_id for r in await store.load_agents()] == ["b"]
    assert await store.agents_with_capability("review") == ["b"]
    assert await store.load_cursors("a") == {}
    assert await store.load_cursors("b") == {"s1": 1}
    assert [e.sender_id for e in await store.read("s1")] == ["a"]

    # Registered again, the agent comes last (a new registration).
    await store.save_agent(agent("a"))
    assert [r.passport.agent_id for r in await store.load_agents()] == ["b", "a"]


async def test_registry_survives_a_restart(reopen: Reopen) -> None:
    async with reopen() as store:
        await store.save_agent(agent("a", "review"))
        await store.save_skill("a", "# s")
    async with reopen() as store:
        assert [r.skill_md for r in await store.load_agents()] == ["# s"]
        assert await store.agents_with_capability("review") == ["a"]
