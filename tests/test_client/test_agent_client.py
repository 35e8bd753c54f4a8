"""AgentClient and the default turn handler: who answers, when, with what, and what not."""

from __future__ import annotations

import logging

import pytest
import trio
from trio.testing import MockClock

from troupe import (
    EV_CHANNEL_INVITE,
    EV_PACKET,
    EV_SESSION_CLOSED,
    EV_SESSION_OPENED,
    EV_TEXT,
    AccessDeniedError,
    AgentClient,
    Envelope,
    NotFoundError,
    Passport,
    Resume,
    Rule,
    SessionState,
    Turn,
)
from troupe.model import LimitsBlock

from ..harness import WAIT, Lines, Scripted, from_, kinds, of_type, open_hub_pair, text, texts


async def test_properties_and_identity_methods(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bob, agent = await p.scripted("bob")
        assert bob.agent is agent
        assert bob.hub_client is p.hc
        await bob.set_resume(Resume(summary="adds numbers"))
        assert bob.resume.summary == "adds numbers"
        assert bob.resume.version > 1  # refreshed from the hub
        await bob.set_skill("# Bob")
        assert await p.hc.get_skill(bob.agent_id) == "# Bob"
        await bob.set_rule(Rule(limits=LimitsBlock(delegation_depth=3)))
        assert bob.rule.limits.delegation_depth == 3


async def test_unregister_once(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bob, _ = await p.scripted("bob")
        await bob.unregister()
        assert bob.disconnected
        assert p.hub.find_agent_id("bob") is None
        await bob.unregister()  # a no-op the second time
        with pytest.raises(RuntimeError, match="disconnected"):
            await bob.send("s", "hi")


async def test_invites_are_acked_for_the_agent(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        ada, _ = await p.scripted("ada")
        bob, _ = await p.scripted("bob")
        seen: list[Envelope] = []

        async def observe(e: Envelope) -> None:
            seen.append(e)

        bob.on_envelope(observe)
        ch = await ada.open(type="discussion", target=["bob"])
        assert ch.metadata.state is SessionState.ACTIVE
        await p.settle()
        assert kinds(seen) == [EV_CHANNEL_INVITE, EV_SESSION_OPENED]
        assert [e.sender_id for e in await p.wal(ch.session_id)][:2] == [ada.agent_id, bob.agent_id]


async def test_send_and_post_envelope(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bob, _ = await p.scripted("bob", lambda turn: None)
        al = await p.human("al")
        ch = await bob.open(type="conversation", target="al")
        first = await bob.send(ch.session_id, "hello", audience=[al.agent_id])
        second = await bob.post_envelope(text(ch.session_id, "", "filled", causation_id=first))
        got = [
            await al.wait_for_channel_event(
                channel_id=ch.session_id, predicate=from_(bob), timeout=WAIT
            )
            for _ in "12"
        ]
        assert [(e.envelope_id, e.text) for e in got] == [(first, "hello"), (second, "filled")]
        assert got[0].audience == (al.agent_id,)
        assert got[1].sender_id == bob.agent_id
        assert got[1].causation_id == first


async def test_the_consulted_agent_answers_once(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        asker, asking = await p.scripted("asker")
        sage, wise = await p.scripted("sage", lambda turn: f"42 ({turn.text})")
        ch = await asker.open(type="consulting", target="sage")
        question = await ch.send("meaning of life?")
        answer = await asker.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(sage), timeout=WAIT
        )
        assert answer.text == "42 (meaning of life?)"
        assert answer.causation_id == question
        closed = await asker.wait_for_channel_event(
            channel_id=ch.session_id, predicate=of_type(EV_SESSION_CLOSED), timeout=WAIT
        )
        assert closed.event_data["reason"] == "consulting_complete"
        await p.settle()
        assert wise.triggers == [question]
        assert asking.turns == []  # the asker never has the floor after its question


async def test_the_turn_carries_text_envelope_session_and_history(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        sage, wise = await p.scripted("sage")
        al = await p.human("al")
        ch = await al.open(type="conversation", target="sage", labels={"room": "1"})
        for question in ("first?", "second?"):
            await al.send(ch.session_id, question)
            await al.wait_for_channel_event(
                channel_id=ch.session_id, predicate=from_(sage), timeout=WAIT
            )
        first, second = wise.turns
        assert second.text == "second?"
        assert second.envelope.event_type == EV_TEXT
        assert second.envelope.sender_id == al.agent_id
        assert second.session_id == ch.session_id
        assert second.session.labels["room"] == "1"
        assert second.session.state is SessionState.ACTIVE
        assert second.agent_id == sage.agent_id
        assert second.client is sage
        assert first.history == []
        # The conversation's view: the agent's own earlier line is an assistant line.
        assert [(h.role, h.content) for h in second.history] == [
            ("user", "first?"),
            ("assistant", "sage: first?"),
        ]


async def test_discussion_rotation_until_a_silent_round(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        ada, a = await p.scripted("ada", Lines("a1"))
        _bob, b = await p.scripted("bob", Lines("b1", "b2"))
        _cy, c = await p.scripted("cy", Lines("c1", "c2"))
        ch = await ada.open(type="discussion", target=["bob", "cy"])
        await ch.send("a0")
        await p.settle()
        wal = await p.wal(ch.session_id)
        spoken = [(p.hub.name_for(e.sender_id), e.text) for e in wal if e.event_type == EV_TEXT]
        assert spoken == [
            ("ada", "a0"),
            ("bob", "b1"),
            ("cy", "c1"),
            ("ada", "a1"),
            ("bob", "b2"),
            ("cy", "c2"),
        ]
        # ada then stays silent: nothing more is posted, the floor stays with her.
        assert [t.text for t in a.turns] == ["c1", "c2"]
        assert [t.text for t in b.turns] == ["a0", "a1"]
        assert [t.text for t in c.turns] == ["b1", "b2"]
        assert p.hc.can_send(ch.session_id, ada.agent_id)
        # Every reply names its trigger.
        texts_by_id = {e.envelope_id: e.text for e in wal}
        assert [(texts_by_id[e.causation_id or ""], e.text) for e in wal[-5:]] == [
            ("a0", "b1"),
            ("b1", "c1"),
            ("c1", "a1"),
            ("a1", "b2"),
            ("b2", "c2"),
        ]


async def test_discussion_history_is_named_and_includes_own_lines(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        ada, _ = await p.scripted("ada", Lines("a1"))
        _, b = await p.scripted("bob", Lines("b1", "b2"))
        ch = await ada.open(type="discussion", target=["bob"])
        await ch.send("a0")
        await p.settle()
        second = b.turns[1]
        assert [(h.role, h.content) for h in second.history] == [
            ("user", "[ada]: a0"),
            ("assistant", "b1"),
        ]
        assert second.text == "a1"


async def test_a_raising_respond_is_reported_and_nothing_is_posted(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(turn: Turn) -> str:
        raise LookupError("no model")

    async with open_hub_pair() as p:
        bob, agent = await p.scripted("bob", fail)
        al = await p.human("al")
        ch = await al.open(type="consulting", target="bob")
        question = await al.send(ch.session_id, "?")
        with caplog.at_level(logging.ERROR, logger="troupe.client"):
            await p.settle()
        assert len(agent.turns) == 1
        assert texts(await p.wal(ch.session_id)) == ["?"]
        assert (await ch.info()).state is SessionState.ACTIVE
        (failure,) = await p.audit("turn_failed")
        assert failure["session_id"] == ch.session_id
        assert failure["agent_id"] == bob.agent_id
        assert failure["envelope_id"] == question
        assert (failure["exc_type"], failure["exc_message"]) == ("LookupError", "no model")
        assert any("failed its turn" in r.getMessage() for r in caplog.records)
        assert await p.audit("delivery_nacked") == []  # handled: acked


def _my_bug(turn: Turn) -> str:
    raise RuntimeError("my bug")


async def test_a_failed_turn_is_on_stderr_without_any_logging_configuration(
    autojump_clock: MockClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As in a script that never called logging.basicConfig: no handler anywhere (pytest's
    # own capture handler on the root logger is taken away for the test).
    monkeypatch.setattr(logging.root, "handlers", [])
    async with open_hub_pair() as p:
        await p.scripted("echo", _my_bug)
        me = await p.human("me")
        ch = await me.open(type="consulting", target="echo")
        await me.send(ch.session_id, "hello")
        await p.settle()
    err = capsys.readouterr().err
    assert err.startswith("troupe: agent 'echo' failed its turn on ")
    assert err.count("Traceback (most recent call last)") == 1  # once, with its traceback
    assert err.rstrip().endswith("RuntimeError: my bug")


async def test_a_failed_turn_is_logged_once_and_not_on_stderr_when_logging_is_configured(
    autojump_clock: MockClock,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_hub_pair() as p:
        await p.scripted("echo", _my_bug)
        me = await p.human("me")
        ch = await me.open(type="consulting", target="echo")
        await me.send(ch.session_id, "hello")
        await p.settle()
    assert capsys.readouterr().err == ""
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "troupe.user_code"
    assert record.exc_info is not None


async def test_a_wait_that_times_out_names_the_failed_turn(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        await p.scripted("echo", _my_bug)
        me = await p.human("me")
        ch = await me.open(type="consulting", target="echo")
        await me.send(ch.session_id, "hello")
        with pytest.raises(TimeoutError) as info:
            await me.wait_for_channel_event(
                channel_id=ch.session_id,
                predicate=lambda e: e.event_type == EV_TEXT and e.sender_id != me.agent_id,
                timeout=5,
            )
        assert str(info.value) == (
            f"nothing matched in session {ch.session_id} within 5s; "
            "agent 'echo' failed its turn: RuntimeError: my bug"
        )
        # A session where no turn failed times out as before.
        other = await me.open(type="conversation", target="echo")
        with pytest.raises(TimeoutError, match=r"within 1s$"):
            await me.wait_for_channel_event(
                channel_id=other.session_id, predicate=lambda e: False, timeout=1
            )


async def test_a_reply_that_is_not_text_is_a_failed_turn(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        _, agent = await p.scripted("bob", lambda turn: {"text": "a dict"})
        al = await p.human("al")
        ch = await al.open(type="consulting", target="bob")
        await al.send(ch.session_id, "?")
        await p.settle()
        assert len(agent.turns) == 1
        assert texts(await p.wal(ch.session_id)) == ["?"]
        (failure,) = await p.audit("turn_failed")
        assert failure["exc_type"] == "TypeError"
        assert "dict" in failure["exc_message"]


async def test_a_refused_reply_is_a_failed_turn(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        # bob may not post deeper than depth 1; the question comes at depth 2.
        bob, _ = await p.scripted("bob", rule=Rule(limits=LimitsBlock(delegation_depth=1)))
        al = await p.human("al")
        ch = await al.open(type="consulting", target="bob")
        await al.post_envelope(text(ch.session_id, "", "?", depth=2))
        await p.settle()
        (failure,) = await p.audit("turn_failed")
        assert failure["agent_id"] == bob.agent_id
        assert failure["exc_type"] == AccessDeniedError.__name__


async def test_a_silent_round_posts_nothing(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        _, agent = await p.scripted("bob", lambda turn: None)
        al = await p.human("al")
        ch = await al.open(type="conversation", target="bob")
        await al.send(ch.session_id, "hello?")
        await p.settle()
        assert len(agent.turns) == 1
        assert texts(await p.wal(ch.session_id)) == ["hello?"]
        assert await p.audit("turn_failed") == []


async def test_an_empty_reply_is_a_silent_round(autojump_clock: MockClock) -> None:
    # Issue 17: respond() returning "" posted an empty text (two such agents ping-ponged
    # empty texts); in the reference an empty body is a silent round.
    async with open_hub_pair() as p:
        # (Each says nothing three times, then stays silent: the old code ends too.)
        ada, a = await p.scripted("ada", Lines("", "", ""))
        _, b = await p.scripted("bob", Lines("", "", ""))
        ch = await ada.open(type="conversation", target="bob")
        await ada.send(ch.session_id, "hello?")
        await p.settle()
        assert texts(await p.wal(ch.session_id)) == ["hello?"]
        assert (len(a.turns), len(b.turns)) == (0, 1)
        assert await p.audit("turn_failed") == []


async def test_own_envelopes_and_other_event_types_take_no_turn(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bob, agent = await p.scripted("bob")
        al = await p.human("al")
        ch = await al.open(type="conversation", target="bob")
        await al.post_envelope(
            Envelope(session_id=ch.session_id, sender_id="", event_type=EV_PACKET, event_data={})
        )
        await bob.send(ch.session_id, "to myself too", audience=[bob.agent_id, al.agent_id])
        await p.settle()
        assert agent.turns == []


class Delegator:
    """Answers by consulting ``helper`` from inside its own turn."""

    async def respond(self, turn: Turn) -> str:
        sub = await turn.client.open(type="consulting", target="helper")
        await sub.send(f"help with {turn.text}")
        helper_id = (await turn.client.hub_client.get_agent("helper")).agent_id
        answer = await sub.wait_for(lambda e: e.event_type == EV_TEXT and e.sender_id == helper_id)
        return f"done: {answer.text}"


async def test_channel_send_inside_a_turn_is_one_deeper(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        _, helping = await p.scripted("helper")
        boss = await p.hc.register(Delegator(), Passport(name="boss"), Resume())
        al = await p.human("al")
        ch = await al.open(type="consulting", target="boss")
        await al.post_envelope(text(ch.session_id, "", "the report", depth=2))
        reply = await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(boss), timeout=WAIT
        )
        assert reply.text == "done: helper: help with the report"
        assert reply.depth == 2  # a reply keeps its trigger's depth
        (question,) = helping.turns
        assert question.envelope.depth == 3  # a send from inside the turn: trigger + 1
        assert question.envelope.sender_id == boss.agent_id


async def test_channel_send_outside_a_turn_is_depth_zero_or_given(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        bob, _ = await p.scripted("bob", lambda turn: None)
        al = await p.human("al")
        ch = await al.open(type="conversation", target="bob")
        await ch.send("plain")
        await ch.send("deep", depth=4)
        got = [
            await bob.wait_for_channel_event(
                channel_id=ch.session_id, predicate=from_(al), timeout=WAIT
            )
            for _ in "12"
        ]
        assert [(e.text, e.depth) for e in got] == [("plain", 0), ("deep", 4)]


async def test_channel_handle(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        await p.scripted("bob", lambda turn: None)
        al = await p.human("al")
        ch = await al.open(type="conversation", target="bob", labels={"k": "v"})
        assert ch.channel_id == ch.session_id == ch.metadata.session_id
        assert ch.metadata.labels == {"k": "v"}
        assert ch.metadata.state is SessionState.ACTIVE
        assert ch.state == ch.metadata.state
        assert ch.session_id in repr(ch)
        sent = await ch.send("hi", audience=[p.hub.find_agent_id("bob") or ""], causation_id="c")
        (stamped,) = [e for e in await p.wal(ch.session_id) if e.envelope_id == sent]
        assert (stamped.text, stamped.causation_id) == ("hi", "c")
        info = await ch.info()
        assert info.session_id == ch.session_id
        closed = await ch.close(reason="bye")
        assert (closed.state, closed.close_reason) == (SessionState.CLOSED, "bye")
        assert ch.state.terminal  # the handle keeps the metadata close() returned
        assert (await ch.info()).close_reason == "bye"


async def test_async_with_unregisters_the_agent_on_exit(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        async with await p.hc.register(Scripted("bob"), Passport(name="bob")) as bob:
            assert isinstance(bob, AgentClient)
            assert (await p.hc.get_agent("bob")).agent_id == bob.agent_id
        assert bob.disconnected
        with pytest.raises(NotFoundError):
            await p.hc.get_agent("bob")


async def test_a_handler_replaces_the_default_turn_handler(autojump_clock: MockClock) -> None:
    seen: list[str] = []

    async def custom(envelope: Envelope, client: AgentClient) -> None:
        seen.append(envelope.event_type)
        if envelope.event_type == EV_TEXT and envelope.sender_id != client.agent_id:
            await client.send(
                envelope.session_id, f"custom: {envelope.text}", causation_id=envelope.envelope_id
            )

    async with open_hub_pair() as p:
        agent = Scripted("bob")
        bob = await p.hc.register(agent, Passport(name="bob"), handler=custom)
        assert bob.handler is custom
        al = await p.human("al")
        ch = await al.open(type="conversation", target="bob")  # the invite is still acked
        await al.send(ch.session_id, "hi")
        reply = await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(bob), timeout=WAIT
        )
        assert reply.text == "custom: hi"
        assert agent.turns == []
        assert seen[0] == EV_CHANNEL_INVITE
        # None restores the default turn handler.
        bob.set_handler(None)
        await al.send(ch.session_id, "again")
        reply = await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(bob), timeout=WAIT
        )
        assert reply.text == "bob: again"


async def test_an_agent_can_answer_its_invites_itself(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bob = await p.hc.register(Scripted("bob"), Passport(name="bob"), auto_ack_invites=False)
        invites: list[Envelope] = []

        async def keep(envelope: Envelope) -> None:
            await trio.lowlevel.checkpoint()
            if envelope.event_type == EV_CHANNEL_INVITE:
                invites.append(envelope)

        bob.on_envelope(keep)
        al = await p.human("al")
        opened: list[SessionState] = []

        async def open_() -> None:
            ch = await al.open(type="conversation", target="bob")
            opened.append(ch.state)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_)
            await p.settle()
            [invite] = invites
            assert (await p.hc.get_session(invite.session_id)).state is SessionState.PENDING
            assert opened == []
            await bob.accept_invite(invite)
        assert opened == [SessionState.ACTIVE]


@pytest.mark.parametrize(("knobs", "cap"), [(None, 200), ({"max_turns": 6}, 6)])
async def test_two_agents_that_always_answer_stop_at_the_conversation_cap(
    autojump_clock: MockClock, knobs: dict[str, object] | None, cap: int
) -> None:
    async with open_hub_pair() as p:
        ann, _ = await p.scripted("ann")  # each answers every text with one of its own
        await p.scripted("bob")
        ch = await ann.open(type="conversation", target="bob", knobs=knobs)
        await ch.send("hello")
        closed = await ann.wait_for_channel_event(
            channel_id=ch.session_id, predicate=of_type(EV_SESSION_CLOSED), timeout=WAIT
        )
        assert closed.event_data["reason"] == "max_turns"
        await p.settle()
        assert len(texts(await p.wal(ch.session_id))) == cap
        assert (await ch.info()).close_reason == "max_turns"
