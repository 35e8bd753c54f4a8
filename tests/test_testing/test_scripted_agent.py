"""ScriptedAgent plays its script and records its turns; expect_* wait with a deadline."""

from __future__ import annotations

import pytest
import trio

import troupe
import troupe.testing
from troupe import EV_SESSION_CLOSED, EV_TEXT, HubClient, Passport
from troupe.client import HumanClient, Turn
from troupe.hub import Hub
from troupe.testing import (
    EnvelopeNotSeen,
    ScriptedAgent,
    ScriptExhausted,
    ScriptStep,
    UnexpectedEnvelope,
    expect_envelope,
    expect_no_envelope,
)


async def talk_to(
    troupe_hub_client: HubClient, agent: ScriptedAgent, kind: str = "conversation"
) -> tuple[HumanClient, str]:
    await troupe_hub_client.register(agent, Passport(name="bot"))
    me = await troupe_hub_client.register_human(Passport(name="me"))
    channel = await me.open(type=kind, target="bot")
    return me, channel.session_id


async def test_it_answers_in_order_and_records_what_it_saw(
    troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    steps: list[ScriptStep] = ["one", None, lambda turn: turn.text.upper()]
    bot = ScriptedAgent(steps)
    me, sid = await talk_to(troupe_hub_client, bot)
    await me.send(sid, "a")
    await expect_envelope(
        me, sid, text="one", sender_id=(await troupe_hub_client.get_agent("bot")).agent_id
    )
    await me.send(sid, "b")
    await me.send(sid, "c")
    assert (
        await expect_envelope(me, sid, event_type=EV_TEXT, match=lambda e: e.text != "b")
    ).text == "C"
    assert bot.texts == ["a", "b", "c"]
    assert all(isinstance(turn, Turn) for turn in bot.turns)
    assert bot.turns[2].history[-1].content == "b"
    assert bot.remaining == 0
    assert not bot.exhausted


async def test_past_the_end_of_its_script_the_turn_fails(
    troupe_hub: Hub, troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    bot = ScriptedAgent(["only"])
    me, sid = await talk_to(troupe_hub_client, bot)
    await me.send(sid, "a")
    await expect_envelope(me, sid, text="only")
    await me.send(sid, "b")
    with trio.fail_after(5):
        await bot.wait_for_turns(2)
    assert bot.exhausted
    await expect_no_envelope(me, sid, event_type=EV_TEXT)
    failures = [r for r in await troupe_hub.read_audit() if r["kind"] == "turn_failed"]
    assert [r["exc_type"] for r in failures] == [ScriptExhausted.__name__]


async def test_a_scripted_exception_fails_that_turn_only(
    troupe_hub: Hub, troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    bot = ScriptedAgent([RuntimeError("model down"), "back"])
    me, sid = await talk_to(troupe_hub_client, bot)
    await me.send(sid, "a")
    await me.send(sid, "b")
    await expect_envelope(me, sid, text="back")
    assert [
        r["exc_message"] for r in await troupe_hub.read_audit() if r["kind"] == "turn_failed"
    ] == ["model down"]


async def test_a_cycling_script_never_runs_out(
    troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    bot = ScriptedAgent(["x", "y"], cycle=True)
    me, sid = await talk_to(troupe_hub_client, bot)
    for _ in range(5):
        await me.send(sid, "?")
    bot_id = (await troupe_hub_client.get_agent("bot")).agent_id
    answers = [(await expect_envelope(me, sid, sender_id=bot_id)).text for _ in range(5)]
    assert answers == ["x", "y", "x", "y", "x"]
    with pytest.raises(ValueError, match="at least one reply"):
        ScriptedAgent([], cycle=True)


async def test_expect_envelope_fails_with_what_the_session_holds(
    troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    me, sid = await talk_to(troupe_hub_client, ScriptedAgent(["sure"]))
    await me.send(sid, "hi")
    with pytest.raises(EnvelopeNotSeen, match=r"text='nope'.*within 2.0s(.|\n)*'hi'(.|\n)*'sure'"):
        await expect_envelope(me, sid, text="nope", within=2.0)


async def test_expect_envelope_fails_at_once_when_the_session_ends(
    troupe_hub_client: HubClient,
    autojump_clock: object,
) -> None:
    me, sid = await talk_to(troupe_hub_client, ScriptedAgent(["fine"]), kind="consulting")
    await me.send(sid, "how are you?")
    await expect_envelope(me, sid, event_type=EV_SESSION_CLOSED)
    start = trio.current_time()
    with pytest.raises(EnvelopeNotSeen, match="ended"):
        await expect_envelope(me, sid, text="never", within=60)
    assert trio.current_time() == start


async def test_expect_no_envelope_fails_when_one_arrives(
    troupe_hub_client: HubClient, autojump_clock: object
) -> None:
    me, sid = await talk_to(troupe_hub_client, ScriptedAgent(["there"]))
    await me.send(sid, "anyone?")
    with pytest.raises(UnexpectedEnvelope, match=r"troupe\.text"):
        await expect_no_envelope(me, sid, text="there")
    await expect_no_envelope(me, sid, text="there", within=30)


def test_a_script_is_made_of_script_steps_not_replies() -> None:
    # troupe.Reply is the session types' reply packet; the testing kit's name for one item
    # of a script must not shadow it.
    assert "ScriptStep" in troupe.testing.__all__
    assert "Reply" not in troupe.testing.__all__
    assert troupe.testing.Reply is ScriptStep  # the old name still imports
    assert troupe.Reply.__module__.startswith("troupe.session_types")
