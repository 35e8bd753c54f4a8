"""HumanClient: every seed method, on trio; waits that never steal or hang."""

from __future__ import annotations

import contextvars
import logging

import attrs
import pytest
import trio
from trio.testing import MockClock

from troupe import (
    EV_CHANNEL_INVITE,
    EV_SESSION_CLOSED,
    EV_SESSION_OPENED,
    EV_TEXT,
    Envelope,
    ProtocolError,
    SessionState,
    open_hub,
)
from troupe.client import Channel, HumanClient
from troupe.client._hub_client import PULL_CAPACITY
from troupe.client._inbox import INBOX_CAPACITY

from ..harness import WAIT, HubPair, from_, kinds, of_type, open_hub_pair, said, text, texts


async def talking(p: HubPair) -> tuple[HumanClient, HumanClient, Channel]:
    """Two people in a conversation opened by the first."""
    al = await p.human("al")
    bea = await p.human("bea")
    ch = await al.open(type="conversation", target="bea")
    await p.settle()
    return al, bea, ch


async def test_properties(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        assert al.agent_id == p.hub.find_agent_id("al")
        assert al.passport.name == "al"
        assert al.resume == await p.hc.get_resume(al.agent_id)
        assert al.rule == await p.hc.get_rule(al.agent_id)
        assert al.hub_client is p.hc
        assert al.hub is p.hub


async def test_invites_are_acked_automatically(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bot, _ = await p.scripted("bot")
        al = await p.human("al")
        ch = await bot.open(type="consulting", target="al")
        assert ch.metadata.state is SessionState.ACTIVE
        invite = await al.next_envelope(timeout=WAIT)
        assert invite.event_type == EV_CHANNEL_INVITE
        opened = await al.next_envelope(timeout=WAIT)
        assert opened.event_type == EV_SESSION_OPENED


async def test_invites_wait_for_accept_invite_when_auto_ack_is_off(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        bot, _ = await p.scripted("bot")
        al = await p.human("al", auto_ack_invites=False)
        opened: list[Channel] = []

        async def open_() -> None:
            opened.append(await bot.open(type="consulting", target="al"))

        p.nursery.start_soon(open_)
        invite = await al.next_envelope(predicate=of_type(EV_CHANNEL_INVITE), timeout=WAIT)
        await p.settle()
        assert opened == []
        assert (await p.hc.get_session(invite.session_id)).state is SessionState.PENDING
        await al.accept_invite(invite)
        await p.settle()
        assert [c.session_id for c in opened] == [invite.session_id]
        assert opened[0].metadata.state is SessionState.ACTIVE


async def test_reject_invite_fails_the_opener(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bot, _ = await p.scripted("bot")
        al = await p.human("al", auto_ack_invites=False)

        async def refuse() -> None:
            invite = await al.next_envelope(predicate=of_type(EV_CHANNEL_INVITE), timeout=WAIT)
            await al.reject_invite(invite, reason="busy")

        p.nursery.start_soon(refuse)
        with pytest.raises(ProtocolError, match=rf"invite rejected by 'al' \({al.agent_id}\)"):
            await bot.open(type="consulting", target="al")
        (session,) = await p.hc.list_sessions(agent_id=al.agent_id, include_terminal=True)
        assert session.close_reason == "invite_rejected"


async def test_callbacks_run_in_order_and_a_raising_one_stops_nothing(
    autojump_clock: MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        calls: list[tuple[str, str | None]] = []

        async def first(e: Envelope) -> None:
            calls.append(("first", e.text))

        async def broken(e: Envelope) -> None:
            calls.append(("broken", e.text))
            raise ValueError("ui bug")

        async def last(e: Envelope) -> None:
            await trio.lowlevel.checkpoint()
            calls.append(("last", e.text))

        for callback in (first, broken, last):
            bea.on_envelope(callback)
        with caplog.at_level(logging.ERROR, logger="troupe.client"):
            await al.send(ch.session_id, "one")
            await al.send(ch.session_id, "two")
            await p.settle()
        assert calls == [
            ("first", "one"),
            ("broken", "one"),
            ("last", "one"),
            ("first", "two"),
            ("broken", "two"),
            ("last", "two"),
        ]
        assert [r.getMessage() for r in caplog.records].count(
            f"human callback raised: human=bea session={ch.session_id} event={EV_TEXT}"
        ) == 2
        # The pull queue got them too, and the hub got acks (not nacks).
        pulled = [await bea.next_envelope(predicate=of_type(EV_TEXT), timeout=WAIT) for _ in "12"]
        assert texts(pulled) == ["one", "two"]
        assert await p.audit("delivery_nacked") == []


async def test_remove_envelope_callback(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        seen: list[str | None] = []

        async def record(e: Envelope) -> None:
            seen.append(e.text)

        bea.on_envelope(record)
        await al.send(ch.session_id, "one")
        await p.settle()
        bea.remove_envelope_callback(record)
        bea.remove_envelope_callback(record)  # absent: a no-op
        await al.send(ch.session_id, "two")
        await p.settle()
        assert seen == ["one"]


async def test_next_envelope_takes_the_match_and_leaves_the_rest(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        for body in ("a", "b", "c"):
            await al.send(ch.session_id, body)
        got = await bea.next_envelope(predicate=said("b"), timeout=WAIT)
        assert got.text == "b"
        rest = [await bea.next_envelope(timeout=WAIT) for _ in range(4)]
        assert kinds(rest) == [EV_CHANNEL_INVITE, EV_SESSION_OPENED, EV_TEXT, EV_TEXT]
        assert texts(rest) == ["a", "c"]


async def test_next_envelope_waits_for_a_later_match(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)

        async def later() -> None:
            await trio.sleep(5)
            await al.send(ch.session_id, "late")

        p.nursery.start_soon(later)
        start = trio.current_time()
        got = await bea.next_envelope(predicate=said("late"), timeout=WAIT)
        assert got.text == "late"
        assert trio.current_time() - start == pytest.approx(5)


async def test_next_envelope_timeout_raises_the_builtin_timeout_error(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        await al.send(ch.session_id, "not it")
        start = trio.current_time()
        with pytest.raises(TimeoutError):
            await bea.next_envelope(predicate=said("it"), timeout=7)
        assert trio.current_time() - start == pytest.approx(7)
        # What did not match is still there.
        assert (await bea.next_envelope(predicate=said("not it"), timeout=0.1)).text == "not it"


async def test_two_pull_consumers_never_steal_from_each_other(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        got: dict[str, str | None] = {}

        async def want(body: str) -> None:
            got[body] = (await bea.next_envelope(predicate=said(body), timeout=WAIT)).text

        async with trio.open_nursery() as nursery:
            nursery.start_soon(want, "x")
            nursery.start_soon(want, "y")
            await p.settle()
            await al.send(ch.session_id, "y")
            await al.send(ch.session_id, "x")
        assert got == {"x": "x", "y": "y"}


async def test_envelopes_streams_in_order_until_disconnect(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        streamed: list[Envelope] = []
        ended = trio.Event()

        async def stream() -> None:
            async for e in bea.envelopes():
                streamed.append(e)
            ended.set()

        p.nursery.start_soon(stream)
        for body in ("1", "2", "3"):
            await al.send(ch.session_id, body)
        await p.settle()
        assert kinds(streamed) == [EV_CHANNEL_INVITE, EV_SESSION_OPENED, EV_TEXT, EV_TEXT, EV_TEXT]
        assert texts(streamed) == ["1", "2", "3"]
        assert not ended.is_set()
        await bea.disconnect()
        await p.settle()
        assert ended.is_set()


async def test_disconnect_wakes_every_waiter(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        _al, bea, ch = await talking(p)
        woken: list[str] = []

        async def pull() -> None:
            with pytest.raises(RuntimeError, match="disconnected"):
                await bea.next_envelope(predicate=said("never"))
            woken.append("next_envelope")

        async def wait(name: str) -> None:
            with pytest.raises(RuntimeError, match="disconnected"):
                await bea.wait_for_channel_event(
                    channel_id=ch.session_id, predicate=said("never"), timeout=WAIT
                )
            woken.append(name)

        async def stream() -> None:
            async for _ in bea.envelopes():
                pass
            woken.append("envelopes")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pull)
            nursery.start_soon(wait, "wait 1")
            nursery.start_soon(wait, "wait 2")
            nursery.start_soon(stream)
            await p.settle()
            await bea.disconnect()
            await bea.disconnect()  # idempotent
        assert sorted(woken) == ["envelopes", "next_envelope", "wait 1", "wait 2"]


async def test_a_disconnected_human_refuses_everything(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        await bea.disconnect()
        assert bea.disconnected
        with pytest.raises(RuntimeError, match="disconnected"):
            await bea.next_envelope()
        with pytest.raises(RuntimeError, match="disconnected"):
            await bea.wait_for_channel_event(channel_id=ch.session_id, predicate=said("x"))
        with pytest.raises(RuntimeError, match="disconnected"):
            await bea.send(ch.session_id, "hi")
        with pytest.raises(RuntimeError, match="disconnected"):
            await bea.post_envelope(text(ch.session_id, bea.agent_id, "hi"))
        with pytest.raises(RuntimeError, match="disconnected"):
            await bea.open(type="conversation", target="al")
        with pytest.raises(RuntimeError, match="disconnected"):
            await bea.close_channel(ch.session_id)
        # Deliveries after disconnect are dropped (and still acked); envelopes() yields
        # what was queued before the disconnect, then ends.
        await al.send(ch.session_id, "anyone?")
        await p.settle()
        assert kinds([e async for e in bea.envelopes()]) == [EV_CHANNEL_INVITE, EV_SESSION_OPENED]
        assert await p.audit("delivery_nacked") == []


async def test_send_posts_text_with_audience_and_causation(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        first = await al.send(ch.session_id, "question")
        answer = await bea.send(ch.session_id, "answer", audience=[al.agent_id], causation_id=first)
        got = await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(bea), timeout=WAIT
        )
        assert got.envelope_id == answer
        assert (got.text, got.audience, got.causation_id) == ("answer", (al.agent_id,), first)


async def test_post_envelope_fills_an_empty_sender_and_keeps_the_callers_object(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        _al, bea, ch = await talking(p)
        mine = text(ch.session_id, "", "filled in")
        sent = await bea.post_envelope(mine)
        assert mine.sender_id == ""
        (stamped,) = [e for e in await p.wal(ch.session_id) if e.envelope_id == sent]
        assert stamped.sender_id == bea.agent_id
        via_alias = await bea.send_envelope(text(ch.session_id, "", "alias"))
        assert [e.text for e in await p.wal(ch.session_id) if e.envelope_id == via_alias] == [
            "alias"
        ]


async def test_open_with_an_agent_and_get_its_answer(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bot, agent = await p.scripted("bot")
        al = await p.human("al")
        ch = await al.open(
            type="consulting", target=bot.agent_id, intent="ask", labels={"k": "v"}, ttl="1h"
        )
        assert ch.metadata.state is SessionState.ACTIVE
        assert ch.metadata.creator_id == al.agent_id
        assert ch.metadata.labels["k"] == "v"
        await ch.send("ping")
        reply = await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(bot), timeout=WAIT
        )
        assert reply.text == "bot: ping"
        assert [t.text for t in agent.turns] == ["ping"]


async def test_close_channel_says_human_closed(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        md = await bea.close_channel(ch.session_id)
        assert (md.state, md.close_reason) == (SessionState.CLOSED, "human_closed")
        notice = await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=of_type(EV_SESSION_CLOSED), timeout=WAIT
        )
        assert notice.event_data["reason"] == "human_closed"
        md = await al.close_channel(ch.session_id, "again")  # already closed: unchanged
        assert md.close_reason == "human_closed"


async def test_ensure_channel_inbox_keeps_what_arrives_before_the_wait(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        inbox = bea.ensure_channel_inbox(ch.session_id)
        assert bea.ensure_channel_inbox(ch.session_id) is inbox
        assert inbox.capacity == INBOX_CAPACITY
        await al.send(ch.session_id, "early")
        await p.settle()
        got = await bea.wait_for_channel_event(
            channel_id=ch.session_id, predicate=said("early"), timeout=0.5
        )
        assert got.text == "early"


async def test_wait_for_channel_event_timeout(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        _al, bea, ch = await talking(p)
        start = trio.current_time()
        with pytest.raises(TimeoutError):
            await bea.wait_for_channel_event(
                channel_id=ch.session_id, predicate=said("x"), timeout=3
            )
        assert trio.current_time() - start == pytest.approx(3)


async def test_wait_for_channel_event_only_looks_at_its_session(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        other = await al.open(type="conversation", target="bea")
        await al.send(other.session_id, "x")
        with pytest.raises(TimeoutError):
            await bea.wait_for_channel_event(
                channel_id=ch.session_id, predicate=said("x"), timeout=1
            )
        got = await bea.wait_for_channel_event(
            channel_id=other.session_id, predicate=said("x"), timeout=1
        )
        assert got.session_id == other.session_id


async def test_concurrent_waiters_each_get_theirs(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        got: dict[str, str | None] = {}

        async def want(body: str) -> None:
            envelope = await bea.wait_for_channel_event(
                channel_id=ch.session_id, predicate=said(body), timeout=WAIT
            )
            got[body] = envelope.text

        async with trio.open_nursery() as nursery:
            nursery.start_soon(want, "for the first")
            nursery.start_soon(want, "for the second")
            await p.settle()
            await al.send(ch.session_id, "noise")
            await al.send(ch.session_id, "for the second")
            await al.send(ch.session_id, "for the first")
        assert got == {"for the first": "for the first", "for the second": "for the second"}
        # Nothing was consumed but the two matches: the pull queue and the inbox still agree.
        left = await bea.wait_for_channel_event(
            channel_id=ch.session_id, predicate=said("noise"), timeout=0.5
        )
        assert left.text == "noise"


async def test_a_session_that_ends_without_a_match_raises(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)

        async def close_soon() -> None:
            await trio.sleep(2)
            await al.close_channel(ch.session_id)

        p.nursery.start_soon(close_soon)
        start = trio.current_time()
        with pytest.raises(ProtocolError, match=f"session {ch.session_id} ended"):
            await bea.wait_for_channel_event(
                channel_id=ch.session_id, predicate=said("never"), timeout=WAIT
            )
        assert trio.current_time() - start == pytest.approx(2)
        # What arrived before the end can still be waited for.
        closed = await bea.wait_for_channel_event(
            channel_id=ch.session_id, predicate=of_type(EV_SESSION_CLOSED), timeout=0.5
        )
        assert closed.event_data["reason"] == "human_closed"


async def test_receive_chunk_is_a_no_op(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        await al.receive_chunk({"delta": "x"}, channel_id="s", parent_envelope_id="e")
        with pytest.raises(TimeoutError):
            await al.next_envelope(timeout=0.5)


def flood(session_id: str, sender_id: str, n: int) -> list[Envelope]:
    return [
        text(session_id, sender_id, str(i), envelope_id=f"e{i}", seq=i) for i in range(1, n + 1)
    ]


async def test_the_pull_queue_keeps_the_newest_1024(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        assert PULL_CAPACITY == 1024
        n = PULL_CAPACITY + 10
        for i, envelope in enumerate(flood("s", "x", n)):
            await al.receive(attrs.evolve(envelope, session_id=f"s{i % 3}"))
        got = [(await al.next_envelope(timeout=0.1)).text for _ in range(PULL_CAPACITY)]
        assert got == [str(i) for i in range(11, n + 1)]
        with pytest.raises(TimeoutError):
            await al.next_envelope(timeout=0.1)


async def test_a_session_inbox_keeps_the_newest_256(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        assert INBOX_CAPACITY == 256
        n = INBOX_CAPACITY + 4
        for envelope in flood("s", "x", n):
            await al.receive(envelope)
        inbox = al.ensure_channel_inbox("s")
        stats = inbox.statistics()
        assert (stats.queued, stats.dropped, stats.overflow) == (256, 4, "drop_oldest")
        with pytest.raises(TimeoutError):
            await al.wait_for_channel_event(channel_id="s", predicate=said("4"), timeout=0.1)
        got = await al.wait_for_channel_event(channel_id="s", predicate=said("5"), timeout=0.1)
        assert got.seq == 5


async def test_a_raising_predicate_fails_its_own_waiter_only(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)

        def broken(e: Envelope) -> bool:
            if e.text == "bad":
                raise KeyError("predicate bug")
            return False

        async def wait_broken() -> None:
            with pytest.raises(KeyError, match="predicate bug"):
                await bea.wait_for_channel_event(
                    channel_id=ch.session_id, predicate=broken, timeout=WAIT
                )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_broken)
            await p.settle()
            await al.send(ch.session_id, "bad")
        # The delivery went through: acked, queued, and there for other waiters.
        got = await bea.wait_for_channel_event(
            channel_id=ch.session_id, predicate=said("bad"), timeout=0.5
        )
        assert got.text == "bad"
        assert await p.audit("delivery_nacked") == []


async def test_the_seeds_constructor(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        direct = HumanClient(
            passport=al.passport,
            resume=al.resume,
            rule=al.rule,
            hub=p.hub,
            hub_client=p.hc,
            auto_ack_invites=False,
        )
        assert (direct.agent_id, direct.hub, direct.hub_client) == (al.agent_id, p.hub, p.hc)
        async with open_hub(ttl_sweep_interval=0) as other:
            with pytest.raises(ValueError, match="hub"):
                HumanClient(
                    passport=al.passport, resume=al.resume, rule=al.rule, hub=other, hub_client=p.hc
                )


CALLER = contextvars.ContextVar("CALLER", default="unset")


async def test_a_delivery_runs_in_the_clients_context_not_the_posters(
    autojump_clock: MockClock,
) -> None:
    """In process a delivery is routed in the hub's task that dispatches it (a session
    actor, whose context is a copy of whoever started it); the client's handlers must still
    run in the client's own context, as when its loop read the frame. They used to see the
    context variables of the task that happened to start the session (review of issue 15's
    LocalLink hand-off: a delegating turn's depth refused an unrelated person's reply)."""
    async with open_hub_pair() as p:
        me = await p.human("me")
        bob = await p.human("bob")
        seen: list[str] = []

        async def record(envelope: Envelope) -> None:
            seen.append(CALLER.get())
            await trio.lowlevel.checkpoint()

        bob.on_envelope(record)
        token = CALLER.set("the poster's")
        try:
            channel = await me.open(type="conversation", target="bob")
            await me.send(channel.session_id, "hi")
        finally:
            CALLER.reset(token)
        await p.settle()
        assert len(seen) >= 2  # the invite and the text
        assert set(seen) == {"unset"}
