"""Delivery: WAL order per pair, receipts → cursors, replay after reconnect, redelivery guard."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import attrs
import pytest
import trio
from trio.testing import MockClock

from troupe import (
    EV_TEXT,
    AgentClient,
    Envelope,
    HumanClient,
    InboxFull,
    LocalLink,
    Passport,
    Resume,
    Rule,
    SessionMetadata,
    Turn,
)
from troupe.hub._connection import UNYIELDED_FRAMES
from troupe.model import InboxBlock, LimitsBlock, NotifyFrame, ReceiptFrame
from troupe.session_types import ExpectedTurn
from troupe.session_types._common import BaseSessionType
from troupe.transport import LocalLinkClient
from troupe.transport._local import BUFFER

from ..harness import WAIT, HubPair, Lines, counting_steps, from_, open_hub_pair, text, texts


async def pull_all(human: HumanClient) -> list[Envelope]:
    """Everything queued for ``human`` to pull right now."""
    got = []
    while True:
        try:
            got.append(await human.next_envelope(timeout=0.01))
        except TimeoutError:
            return got


async def test_one_senders_envelopes_arrive_in_wal_order(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        bea = await p.human("bea")
        ch = await al.open(type="conversation", target="bea")
        seqs: list[int] = []
        all_seen = trio.Event()

        async def record(e: Envelope) -> None:
            if e.event_type == EV_TEXT:
                seqs.append(e.seq)
                if e.seq % 3 == 0:
                    await trio.sleep(0.1)  # a slow UI does not reorder anything
                if len(seqs) == 30:
                    all_seen.set()

        bea.on_envelope(record)
        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(al.send, ch.session_id, str(i))
        with trio.fail_after(WAIT):
            await all_seen.wait()
        wal = [e.seq for e in await p.wal(ch.session_id) if e.event_type == EV_TEXT]
        assert seqs == wal
        assert len(seqs) == 30


async def test_receipts_advance_the_cursor(autojump_clock: MockClock) -> None:
    async with open_hub_pair(cursor_flush_interval=0) as p:  # each ack saved at once
        al = await p.human("al")
        bob, _ = await p.scripted("bob")
        ch = await al.open(type="conversation", target="bob")
        await al.send(ch.session_id, "hi")
        await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(bob), timeout=WAIT
        )
        await p.settle()
        last = (await p.wal(ch.session_id))[-1].seq
        # bob saw everything but his own reply; al everything but her own question.
        assert await p.store.load_cursors(bob.agent_id) == {ch.session_id: last - 1}
        assert await p.store.load_cursors(al.agent_id) == {ch.session_id: last}


async def test_a_nack_leaves_the_cursor_and_the_envelope_is_replayed(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair(cursor_flush_interval=0) as p:  # each ack saved at once
        al = await p.human("al")
        first = p.client()
        bob, agent = await p.scripted("bob", lambda turn: None, hc=first)
        ch = await al.open(type="conversation", target="bob")
        await p.settle()
        opened_at = (await p.wal(ch.session_id))[-1].seq

        async def refuse(e: Envelope) -> None:
            if e.text == "boom":
                raise RuntimeError("observer failed")

        bob.on_envelope(refuse)
        await al.send(ch.session_id, "boom")
        await p.settle()
        (nack,) = await p.audit("delivery_nacked")
        assert (nack["agent_id"], nack["seq"]) == (bob.agent_id, opened_at + 1)
        assert "observer failed" in nack["reason"]
        assert await p.store.load_cursors(bob.agent_id) == {ch.session_id: opened_at}
        assert agent.turns == []  # the handler did not run

        await first.close()
        await p.reattach("bob", agent)
        assert [t.text for t in agent.turns] == ["boom"]
        assert await p.store.load_cursors(bob.agent_id) == {ch.session_id: opened_at + 1}


async def test_a_reconnected_human_is_replayed_what_it_missed_once(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        bea = await p.human("bea")
        first = p.client()
        al = await p.human("al", hc=first)
        ch = await bea.open(type="conversation", target="al")
        for body in ("1", "2", "3"):
            await bea.send(ch.session_id, body)
        await p.settle()
        before = await pull_all(al)
        assert texts(before) == ["1", "2", "3"]

        await first.close()
        for body in ("4", "5", "6"):
            await bea.send(ch.session_id, body)
        _, again = await p.reattach("al")
        assert isinstance(again, HumanClient)
        after = await pull_all(again)
        assert texts(after) == ["4", "5", "6"]
        seen = [e.seq for e in before + after]
        wal = [e.seq for e in await p.wal(ch.session_id) if e.sender_id != al.agent_id]
        assert seen == wal  # nothing lost, nothing twice, in WAL order


async def test_a_reconnected_agent_answers_what_it_missed_once(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        first = p.client()
        bob, agent = await p.scripted("bob", hc=first)
        ch = await al.open(type="conversation", target="bob")
        await al.send(ch.session_id, "q1")
        await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(bob), timeout=WAIT
        )
        await p.settle()
        await first.close()

        await al.send(ch.session_id, "q2")
        await al.send(ch.session_id, "q3")
        await p.reattach("bob", agent)
        assert [t.text for t in agent.turns] == ["q1", "q2", "q3"]
        assert texts(await p.wal(ch.session_id)) == [
            "q1",
            "bob: q1",
            "q2",
            "q3",
            "bob: q2",
            "bob: q3",
        ]


async def test_a_replayed_trigger_already_answered_is_not_answered_again(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        first = p.client()
        bob, agent = await p.scripted("bob", hc=first)
        ch = await al.open(type="conversation", target="bob")
        await p.settle()
        await first.close()
        question = await al.send(ch.session_id, "q")
        # bob's previous process answered and died before it could ack the question.
        answer = text(ch.session_id, bob.agent_id, "answered", causation_id=question)
        await p.hub.post_envelope(answer)

        await p.reattach("bob", agent)
        assert agent.turns == []
        assert texts(await p.wal(ch.session_id)) == ["q", "answered"]


async def test_a_replay_answers_the_current_trigger_not_a_stale_one(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        ada, _ = await p.scripted("ada", Lines())
        bob, _ = await p.scripted("bob", Lines("b1"))
        first = p.client()
        cy, c = await p.scripted("cy", Lines("c1"), hc=first)
        ch = await ada.open(type="discussion", target=["bob", "cy"])
        await p.settle()
        await first.close()
        await ch.send("a0")
        b1 = await ada.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(bob), timeout=WAIT
        )

        # cy comes back and is replayed a0 (no longer a trigger: bob answered it), then b1.
        await p.reattach("cy", c)
        assert [t.envelope.envelope_id for t in c.turns] == [b1.envelope_id]
        (turn,) = c.turns
        assert turn.text == "b1"
        assert [h.content for h in turn.history] == ["[ada]: a0"]
        wal = await p.wal(ch.session_id)
        (reply,) = [e for e in wal if e.sender_id == cy.agent_id and e.event_type == EV_TEXT]
        assert reply.causation_id == b1.envelope_id


@attrs.frozen
class DeskState:
    asker: str
    desk: str
    question_id: str | None = None


class HelpDesk(BaseSessionType[DeskState]):
    """The asker asks any number of times; the desk owes an answer to the latest question.

    Answers do not take the floor away (the turn stays with the desk until a new question).
    """

    name = "help_desk"
    state_type = DeskState
    max_participants = 2

    def initial_state(self, metadata: SessionMetadata) -> DeskState:
        desk = next(i for i in metadata.participant_ids() if i != metadata.creator_id)
        return DeskState(asker=metadata.creator_id, desk=desk)

    def fold_turn(self, envelope: Envelope, state: DeskState) -> DeskState:
        if envelope.sender_id == state.asker:
            return attrs.evolve(state, question_id=envelope.envelope_id)
        return state

    def next_turn(self, metadata: SessionMetadata, state: DeskState) -> ExpectedTurn | None:
        if state.question_id is None:
            return None
        return ExpectedTurn(agent_id=state.desk, triggering_envelope_id=state.question_id)


async def test_resume_pending_turns_reruns_a_failed_turn_once(
    autojump_clock: MockClock,
) -> None:
    attempts: list[str] = []

    def flaky(turn: Turn) -> str:
        attempts.append(turn.text)
        if len(attempts) == 1:
            raise ConnectionError("model unavailable")
        return "sorted"

    async with open_hub_pair(session_types=[HelpDesk()]) as p:
        desk, agent = await p.scripted("desk", flaky)
        al = await p.human("al")
        ch = await al.open(type="help_desk", target="desk")
        await al.send(ch.session_id, "printer?")
        await p.settle()
        assert len(await p.audit("turn_failed")) == 1
        assert [t.session_id for t in await p.hc.pending_turns_for(desk.agent_id)] == [
            ch.session_id
        ]

        assert await desk.resume_pending_turns() == 1
        assert attempts == ["printer?", "printer?"]
        assert texts(await p.wal(ch.session_id)) == ["printer?", "sorted"]

        # Still its turn by the session type, but that trigger is answered: no new answer.
        assert await desk.resume_pending_turns() == 1
        assert attempts == ["printer?", "printer?"]
        assert texts(await p.wal(ch.session_id)) == ["printer?", "sorted"]
        assert len(agent.turns) == 2


async def test_a_resumed_turn_is_delivered_like_any_other(autojump_clock: MockClock) -> None:
    # Issue 17: resume_pending_turns called the turn handler directly, so the re-fired
    # trigger bypassed the on_envelope observers and the session inbox.
    attempts: list[str] = []

    def flaky(turn: Turn) -> str:
        attempts.append(turn.text)
        if len(attempts) == 1:
            raise ConnectionError("model unavailable")
        return "sorted"

    async with open_hub_pair(session_types=[HelpDesk()]) as p:
        desk, _ = await p.scripted("desk", flaky)
        seen: list[str] = []

        async def observe(envelope: Envelope) -> None:
            await trio.lowlevel.checkpoint()
            seen.append(envelope.envelope_id)

        desk.on_envelope(observe)
        al = await p.human("al")
        ch = await al.open(type="help_desk", target="desk")
        question = await al.send(ch.session_id, "printer?")
        await p.settle()
        got = await desk.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(al), timeout=WAIT
        )
        assert got.envelope_id == question
        seen.clear()

        assert await desk.resume_pending_turns() == 1
        assert seen == [question]
        again = await desk.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(al), timeout=WAIT
        )
        assert again.envelope_id == question
        assert attempts == ["printer?", "printer?"]
        assert texts(await p.wal(ch.session_id)) == ["printer?", "sorted"]


async def test_resume_pending_turns_skips_turns_without_trigger(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        ada, a = await p.scripted("ada")
        await p.scripted("bob")
        await ada.open(type="discussion", target=["bob"])
        # The creator holds the floor with no trigger: nothing to answer.
        assert len(await p.hc.pending_turns_for(ada.agent_id)) == 1
        assert await ada.resume_pending_turns() == 0
        assert a.turns == []


async def test_sessions_are_handled_concurrently_each_in_order(autojump_clock: MockClock) -> None:
    gate = trio.Event()
    order: list[tuple[str, str]] = []

    class Slow:
        async def respond(self, turn: Turn) -> str:
            order.append(("start", turn.text))
            if turn.text == "slow":
                await gate.wait()
            order.append(("end", turn.text))
            return f"re: {turn.text}"

    async with open_hub_pair() as p:
        bob = await p.hc.register(Slow(), Passport(name="bob"), Resume())
        al = await p.human("al")
        one = await al.open(type="conversation", target="bob")
        two = await al.open(type="conversation", target="bob")
        await al.send(one.session_id, "slow")
        await al.send(one.session_id, "after slow")
        await al.send(two.session_id, "fast")
        got = await al.wait_for_channel_event(
            channel_id=two.session_id, predicate=from_(bob), timeout=WAIT
        )
        assert got.text == "re: fast"  # session two did not wait for session one
        await p.settle()
        assert ("start", "after slow") not in order  # session one waits, in order
        gate.set()
        await p.settle()
        assert texts(await p.wal(one.session_id)) == [
            "slow",
            "after slow",
            "re: slow",
            "re: after slow",
        ]
        assert order.index(("end", "slow")) < order.index(("start", "after slow"))


async def _bare_al_with(
    p: HubPair, bea: HumanClient
) -> tuple[LocalLinkClient, str, SessionMetadata]:
    """al, served by a bare connection that reads and acks by hand, in a conversation with
    ``bea`` of more texts than the default cap; the connection, al's id, the session."""
    al_id = (await p.hub.register(Passport(name="al", kind="human"))).agent_id or ""
    conn = LocalLink(p.hub).client()
    await conn.open()
    await p.hub.bind_endpoint(conn.endpoint_id, al_id)
    md = await p.hc.create_session(
        creator_id=al_id,
        manifest_type="conversation",
        participants=[bea.agent_id],
        knobs={"max_turns": None},
    )
    return conn, al_id, md


async def test_receipts_sent_before_a_disconnect_are_kept(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bea = await p.human("bea")
        conn, al_id, md = await _bare_al_with(p, bea)
        for i in range(BUFFER + 40):
            await bea.send(md.session_id, str(i))
        await p.settle()  # the link is full: the hub waits to send the rest
        frames = conn.frames()
        assert isinstance(frames, AsyncGenerator)
        async with aclosing(frames):
            got = [await anext(frames) for _ in range(10)]
        await p.settle()  # the hub refilled the link and waits again
        acked = [f.envelope for f in got if isinstance(f, NotifyFrame)]
        for envelope in acked:
            await conn.send_frame(
                ReceiptFrame(
                    envelope_id=envelope.envelope_id,
                    recipient_id=al_id,
                    session_id=envelope.session_id,
                    seq=envelope.seq,
                )
            )
        await p.settle()
        await conn.aclose()
        await p.settle()
        assert await p.store.load_cursors(al_id) == {md.session_id: acked[-1].seq}


async def test_deliveries_past_a_full_link_follow_the_direct_ones_in_order(
    autojump_clock: MockClock,
) -> None:
    # In process, a dispatch writes a NotifyFrame itself while the connection actor is idle
    # and the link has room; once the link is full the actor writes the rest, waiting. The
    # client gets them all, once each, in the WAL's order.
    async with open_hub_pair() as p:
        bea = await p.human("bea")
        conn, _, md = await _bare_al_with(p, bea)
        count = 2 * BUFFER
        for i in range(count):
            await bea.send(md.session_id, str(i))
        await p.settle()  # the link is full: the hub waits to send the rest
        frames = conn.frames()
        assert isinstance(frames, AsyncGenerator)
        texts: list[str] = []
        async with aclosing(frames):
            while len(texts) < count:
                frame = await anext(frames)
                if isinstance(frame, NotifyFrame) and frame.envelope.text is not None:
                    texts.append(frame.envelope.text)
        assert texts == [str(i) for i in range(count)]
        await conn.aclose()


async def test_a_nacked_envelope_is_handled_when_replayed_to_the_same_client(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        bob, agent = await p.scripted("bob", lambda turn: None)
        ch = await al.open(type="conversation", target="bob")
        failing = True

        async def flaky(e: Envelope) -> None:
            if e.text == "boom" and failing:
                raise RuntimeError("observer failed")

        bob.on_envelope(flaky)
        await al.send(ch.session_id, "boom")
        await p.settle()
        assert len(await p.audit("delivery_nacked")) == 1
        assert agent.turns == []

        failing = False
        again = await p.hc.attach(agent, "bob")  # re-bind on the same connection: a replay
        assert isinstance(again, AgentClient)
        await p.settle()
        assert [t.text for t in agent.turns] == ["boom"]


async def test_a_busy_agents_backlog_is_bounded_by_its_inbox_rule(
    autojump_clock: MockClock,
) -> None:
    gate = trio.Event()

    class Busy:
        async def respond(self, turn: Turn) -> None:
            await gate.wait()

    async with open_hub_pair() as p:
        rule = Rule(limits=LimitsBlock(inbox=InboxBlock(max_pending=2, overflow="reject")))
        await p.hc.register(Busy(), Passport(name="bob"), Resume(), rule=rule)
        al = await p.human("al")
        ch = await al.open(type="conversation", target="bob")
        await al.send(ch.session_id, "1")  # bob is busy with it (not acked)
        await al.send(ch.session_id, "2")  # waits in bob's client
        with pytest.raises(InboxFull, match="bob"):
            await al.send(ch.session_id, "3")
        gate.set()
        await p.settle()
        await al.send(ch.session_id, "3")  # handled and acked: room again


async def test_a_pending_turn_says_since_when_it_is_owed(autojump_clock: MockClock) -> None:
    async with open_hub_pair(session_types=[HelpDesk()]) as p:
        desk, _ = await p.scripted("desk", lambda turn: None)
        al = await p.human("al")
        ch = await al.open(type="help_desk", target="desk")
        await trio.sleep(7)
        question = await al.send(ch.session_id, "printer?")
        await trio.sleep(5)
        [turn] = await p.hc.pending_turns_for(desk.agent_id)
        [trigger] = [e for e in await p.wal(ch.session_id) if e.envelope_id == question]
        assert turn.triggering_envelope_id == question
        assert turn.expected_at == trigger.created_at != ""
        assert await p.hc.pending_turn(ch.session_id, desk.agent_id) == turn
        # No trigger: the creator's first turn in a discussion is owed from now.
        ada, _ = await p.scripted("ada")
        await p.scripted("bob")
        await ada.open(type="discussion", target=["bob"])
        [opening] = await p.hc.pending_turns_for(ada.agent_id)
        assert opening.triggering_envelope_id is None
        assert opening.expected_at == p.hub.core.now_iso()


async def test_a_long_replay_to_an_in_process_client_lets_the_others_run(
    autojump_clock: MockClock,
) -> None:
    """A replay is one message of the connection actor; in process its frames go straight
    to the client's router without waiting, so it takes a schedule point every
    UNYIELDED_FRAMES (it held the hub for the whole backlog, review of issue 15)."""
    async with open_hub_pair() as p:
        bea = await p.human("bea")
        first = p.client()
        await p.human("al", hc=first)
        ch = await bea.open(type="conversation", target="al", knobs={"max_turns": None})
        await p.settle()
        await first.close()
        backlog = 4 * UNYIELDED_FRAMES
        for n in range(backlog):
            await bea.send(ch.session_id, str(n))
        later = p.client()
        await p.human("cy", hc=later)  # its loop waits for frames before al comes back
        await p.settle()
        with counting_steps(resuming_a_replay) as counter:
            again = await later.attach(None, "al")
            await p.settle()
        assert isinstance(again, HumanClient)
        assert texts(await pull_all(again)) == [str(n) for n in range(backlog)]
        # It resumed inside the replay once every UNYIELDED_FRAMES frames (never, before).
        assert counter.steps >= backlog // UNYIELDED_FRAMES - 1


def resuming_a_replay(task: trio.lowlevel.Task) -> bool:
    """Whether ``task`` is about to resume inside a connection actor's replay."""
    coro: Any = task.coro
    while coro is not None:
        code = getattr(coro, "cr_code", None)
        if code is not None and code.co_name == "_replay":
            return True
        coro = getattr(coro, "cr_await", None)
    return False
