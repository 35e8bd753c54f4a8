"""Issue 15 item 4: a poster whose recipient is behind waits for room, as a trio channel
makes its sender wait (``overflow="block"``, the default), bounded by ``block_timeout`` and
cancellable; ``overflow="reject"`` keeps the reference's ``InboxFull``; and two agents
answering each other with both inboxes full do not deadlock."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from troupe import (
    EV_TEXT,
    HumanClient,
    InboxBlock,
    InboxFull,
    LimitsBlock,
    Passport,
    Resume,
    Rule,
    Turn,
)

from ..harness import HubPair, open_hub_pair, texts


def _inbox(**kw: object) -> Rule:
    return Rule(limits=LimitsBlock(inbox=InboxBlock(**kw)))  # type: ignore[arg-type]


class Gated:
    """Answers nothing until its gate opens (its deliveries stay unacked meanwhile)."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.heard: list[str] = []

    async def respond(self, turn: Turn) -> None:
        self.heard.append(turn.text)
        await self.gate.wait()


async def _busy_bob(p: HubPair, **inbox: object) -> tuple[Gated, str, HumanClient]:
    bob = Gated()
    await p.hc.register(bob, Passport(name="bob"), Resume(), rule=_inbox(max_pending=2, **inbox))
    al = await p.human("al")
    ch = await al.open(type="conversation", target="bob", knobs={"max_turns": None})
    await al.send(ch.session_id, "1")  # bob is busy with it (not acked)
    await al.send(ch.session_id, "2")  # waits in bob's client: bob's inbox is full
    await p.settle()
    return bob, ch.session_id, al


async def test_a_poster_waits_for_room_and_posts_once_the_recipient_acks(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        bob, sid, al = await _busy_bob(p)
        posted = trio.Event()

        async def third() -> None:
            await al.send(sid, "3")
            posted.set()

        p.nursery.start_soon(third)
        await trio.sleep(30)  # however long: it waits, it is not refused
        assert not posted.is_set()
        assert texts(await p.wal(sid)) == ["1", "2"]
        bob.gate.set()  # bob's turns end, its deliveries are acked: room
        await posted.wait()
        await p.settle()
        assert texts(await p.wal(sid)) == ["1", "2", "3"]
        assert bob.heard == ["1", "2", "3"]


async def test_a_waiting_post_is_cancellable_and_posts_nothing(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        bob, sid, al = await _busy_bob(p)
        with trio.move_on_after(5) as scope:
            await al.send(sid, "3")
        assert scope.cancelled_caught
        bob.gate.set()
        await p.settle()
        assert texts(await p.wal(sid)) == ["1", "2"]
        assert p.hub.core.room.waiting() == 0
        assert p.hub.core.ledger.watched == set()


async def test_a_wait_longer_than_block_timeout_is_refused_with_inbox_full(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        _, sid, al = await _busy_bob(p, block_timeout=5.0)
        start = trio.current_time()
        with pytest.raises(InboxFull, match=r"'bob'.*no room within its block_timeout of 5.0 s"):
            await al.send(sid, "3")
        assert trio.current_time() - start == 5.0
        assert texts(await p.wal(sid)) == ["1", "2"]
        assert p.hub.core.room.waiting() == 0


async def test_overflow_reject_refuses_at_once(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        _, sid, al = await _busy_bob(p, overflow="reject")
        start = trio.current_time()
        with pytest.raises(InboxFull, match=r"2 pending, max_pending 2$"):
            await al.send(sid, "3")
        assert trio.current_time() == start


class Answers:
    """Answers its first turn once ``both`` agents are in their first turn; then silent."""

    def __init__(self, name: str, both: list[str], ready: trio.Event) -> None:
        self.name = name
        self.both = both
        self.ready = ready
        self.heard: list[str] = []

    async def respond(self, turn: Turn) -> str | None:
        self.heard.append(turn.text)
        if len(self.heard) > 1:
            return None
        self.both.append(self.name)
        if len(self.both) == 2:
            self.ready.set()
        await self.ready.wait()  # both turns hold their trigger: both inboxes are full
        return f"{self.name} answers {turn.text!r}"


async def test_two_agents_answering_each_other_with_both_inboxes_full_do_not_deadlock(
    autojump_clock: MockClock,
) -> None:
    both: list[str] = []
    ready = trio.Event()
    ann, ben = Answers("ann", both, ready), Answers("ben", both, ready)
    # One pending envelope fills an inbox; a blocked post waits (almost) forever.
    rule = _inbox(max_pending=1, block_timeout=3600.0)
    with trio.fail_after(600):
        async with open_hub_pair() as p:
            a = await p.hc.register(ann, Passport(name="ann"), Resume(), rule=rule)
            b = await p.hc.register(ben, Passport(name="ben"), Resume(), rule=rule)
            ch = await a.open(type="conversation", target="ben", knobs={"max_turns": None})
            await a.send(ch.session_id, "from ann")
            await b.send(ch.session_id, "from ben")
            await p.settle()
            # Each answer went to the agent whose turn it answers, whose inbox was full
            # (its own trigger unacked) and which was itself waiting to post: the second
            # to post went through, its turn ended, and the first followed.
            wal = await p.wal(ch.session_id)
            assert sorted(texts(wal)[2:]) == [
                "ann answers 'from ben'",
                "ben answers 'from ann'",
            ]
            assert ann.heard == ["from ben", "ben answers 'from ann'"]
            assert ben.heard == ["from ann", "ann answers 'from ben'"]
            assert [r for r in await p.hub.read_audit() if r["kind"] == "turn_failed"] == []
            assert p.hub.core.room.waiting() == 0


class Cheap:
    async def respond(self, turn: Turn) -> str:
        return "ok"


async def test_a_flood_into_agents_completes_with_default_overflow(
    autojump_clock: MockClock,
) -> None:
    """4 people x 300 posts each into agents that can hold 20: every post is accepted (the
    people wait for room) and answered; no InboxFull."""
    people, posts = 4, 300
    async with open_hub_pair() as p:
        chats = []
        agents = []
        for n in range(people):
            agent = await p.hc.register(
                Cheap(), Passport(name=f"agent-{n}"), rule=_inbox(max_pending=20)
            )
            agents.append(agent.agent_id)
            person = await p.human(f"person-{n}")
            chat = await person.open(
                type="conversation", target=f"agent-{n}", knobs={"max_turns": None}
            )
            chats.append((person, chat.session_id))
        peak = 0

        async def flood(person: HumanClient, sid: str) -> None:
            nonlocal peak
            for i in range(posts):
                await person.send(sid, f"m{i}")
                peak = max(peak, *(p.hub.core.ledger.pending(a) for a in agents))

        async with trio.open_nursery() as nursery:
            for person, sid in chats:
                nursery.start_soon(flood, person, sid)
        await p.settle()
        for _, sid in chats:
            wal = await p.wal(sid)
            kinds = [e for e in wal if e.event_type == EV_TEXT]
            assert len(kinds) == 2 * posts  # every post, and its answer
        # No agent ever had more than its max_pending waiting for it.
        assert peak == 20
