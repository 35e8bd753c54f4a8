"""Actors: spawn, tell / ask / stop, let it crash, and asks that never hang."""

from __future__ import annotations

import gc
import logging
import weakref
from typing import Any, assert_type

import attrs
import pytest
import trio
import trio.testing

from troupe import ActorDead, MailboxFull
from troupe.actors import Actor, ActorRef, Message, Refused, spawn
from troupe.actors._actor import BURST
from troupe.mailbox import DeadLetterBuffer, Mailbox

from ..harness import counting_steps, live_would_blocks


class Recorder(Actor[Any, Any]):
    """Records what it handles; answers with the message; obeys a few commands."""

    def __init__(self) -> None:
        self.log: list[Any] = []
        self.gate: trio.Event | None = None

    async def on_start(self) -> None:
        await trio.sleep(1)  # starting takes time: spawn must wait for it
        self.log.append("started")

    async def handle(self, msg: Any) -> Any:
        self.log.append(msg)
        if msg == "wait":
            self.gate = trio.Event()
            await self.gate.wait()
        elif msg == "crash":
            raise ValueError("boom")
        elif msg == "hang":
            await trio.sleep_forever()
        return ("reply", msg)

    async def on_stop(self) -> None:
        self.log.append("stopped")


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def ask_expecting(
    ref: ActorRef[Any, Any],
    msg: str,
    expected: type[BaseException],
    failures: dict[str, BaseException],
) -> None:
    """Ask ``ref``; file the ``expected`` error it fails with under ``msg``; never hang."""
    with trio.fail_after(10):
        try:
            await ref.ask(msg)
        except expected as exc:
            failures[msg] = exc


async def test_spawn_returns_once_on_start_has_run(autojump_clock: trio.testing.MockClock) -> None:
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor)
        assert actor.log == ["started"]
        assert trio.current_time() == 1
        assert actor.ref is ref
        assert ref.name == "Recorder"
        await ref.stop()


async def test_tell_tell_nowait_and_ask(autojump_clock: trio.testing.MockClock) -> None:
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor, name="rec")
        await ref.tell("a")
        ref.tell_nowait("b")
        assert await ref.ask("c") == ("reply", "c")
        assert actor.log == ["started", "a", "b", "c"]
        await ref.stop()
    assert actor.log[-1] == "stopped"


async def test_tell_waits_for_room_in_a_block_mailbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor, mailbox=Mailbox(1))
        await ref.tell("wait")  # being handled
        await settle()
        await ref.tell("queued")  # fills the mailbox
        with trio.move_on_after(5) as scope:
            await ref.tell("blocked")
        assert scope.cancelled_caught  # no room: backpressure
        with pytest.raises(MailboxFull):
            ref.tell_nowait("refused")
        assert actor.gate is not None
        actor.gate.set()
        await ref.tell("later")
        await settle()
        await ref.stop()
    assert actor.log == ["started", "wait", "queued", "later", "stopped"]


async def test_a_crash_fails_the_asker_with_actor_dead_caused_by_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Recorder()
    failures: dict[str, BaseException] = {}
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="boom")):
        async with trio.open_nursery() as nursery:
            ref = await spawn(nursery, actor, name="fragile")
            nursery.start_soon(ask_expecting, ref, "crash", ActorDead, failures)
    err = failures["crash"]
    assert isinstance(err.__cause__, ValueError)
    assert "fragile" in str(err)
    assert not ref.alive
    assert "dead" in repr(ref)


class Picky(Actor[int, int]):
    """Doubles even numbers; refuses odd ones (and goes on)."""

    async def handle(self, msg: int) -> Any:
        await trio.lowlevel.checkpoint()
        if msg % 2:
            return Refused(ValueError(f"{msg} is odd"))
        return msg * 2


async def test_a_refusal_raises_at_the_asker_and_the_actor_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Picky(), name="picky")
        assert await ref.ask(2) == 4
        with pytest.raises(ValueError, match="3 is odd"):
            await ref.ask(3)
        await ref.tell(5)  # a refusal answers nothing to a tell
        assert await ref.ask(4) == 8
        assert ref.alive
        await ref.stop()


@attrs.frozen
class Length(Message[int]):
    text: str


@attrs.frozen
class Shout(Message[str]):
    text: str


class Typed(Actor[Length | Shout | bytes, object]):
    """Answers each kind of message with the type that message declares."""

    async def handle(self, msg: Length | Shout | bytes) -> object:
        await trio.lowlevel.checkpoint()
        if isinstance(msg, Length):
            return len(msg.text)
        if isinstance(msg, Shout):
            return msg.text.upper()
        return msg


async def test_ask_is_typed_by_the_message_it_sends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Typed(), name="typed")
        length = await ref.ask(Length("four"))
        assert_type(length, int)  # checked by mypy: the message's result type
        assert length == 4
        shout = await ref.ask(Shout("hi"))
        assert_type(shout, str)
        assert shout == "HI"
        other = await ref.ask(b"raw")  # not a Message: the actor's own result type
        assert_type(other, object)
        assert other == b"raw"
        await ref.stop()


async def test_a_crash_is_logged_with_the_actor_name(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.RaisesGroup(ValueError):
        async with trio.open_nursery() as nursery:
            ref = await spawn(nursery, Recorder(), name="noisy")
            await ref.tell("crash")
    [record] = [r for r in caplog.records if r.name == "troupe.actors"]
    assert record.levelno == logging.ERROR
    assert "noisy" in record.getMessage()
    assert record.exc_info is not None


async def test_asks_and_tells_to_a_dead_actor_fail_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Recorder(), name="gone")
        await ref.stop()
    assert not ref.alive
    with trio.fail_after(1):
        start = trio.current_time()
        with pytest.raises(ActorDead, match="gone"):
            await ref.ask("hello?")
        with pytest.raises(ActorDead):
            await ref.tell("hello?")
        with pytest.raises(ActorDead):
            ref.tell_nowait("hello?")
        await ref.stop()  # stopping a dead actor is a no-op
        assert trio.current_time() == start


async def test_asks_queued_when_the_actor_crashes_fail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    letters = DeadLetterBuffer()
    actor = Recorder()
    failures: dict[str, BaseException] = {}
    with pytest.RaisesGroup(ValueError):
        async with trio.open_nursery() as nursery:
            ref = await spawn(nursery, actor, mailbox=Mailbox(8, dead_letters=letters))
            await ref.tell("wait")
            await settle()
            nursery.start_soon(ask_expecting, ref, "crash", ActorDead, failures)
            await settle()
            nursery.start_soon(ask_expecting, ref, "queued-ask", ActorDead, failures)
            await settle()
            await ref.tell("queued-tell")
            assert actor.gate is not None
            actor.gate.set()
    assert isinstance(failures["crash"].__cause__, ValueError)  # the one that caused it
    assert failures["queued-ask"].__cause__ is None  # merely queued behind it
    assert [(x.message, x.reason) for x in letters.letters] == [("queued-tell", "actor_dead")]
    assert actor.log == ["started", "wait", "crash"]


async def test_stop_goes_after_the_current_message_and_ahead_of_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Recorder()
    failures: dict[str, BaseException] = {}
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor)
        await ref.tell("wait")
        await settle()
        await ref.tell("queued-tell")
        nursery.start_soon(ask_expecting, ref, "queued-ask", ActorDead, failures)
        nursery.start_soon(ref.stop)
        await settle()
        assert "stopped" not in actor.log
        assert actor.gate is not None
        actor.gate.set()
    assert actor.log == ["started", "wait", "stopped"]
    assert list(failures) == ["queued-ask"]
    assert not ref.alive


async def test_an_actor_may_stop_itself(autojump_clock: trio.testing.MockClock) -> None:
    class Quitter(Actor[str, None]):
        stopped = False

        async def handle(self, msg: str) -> None:
            await self.ref.stop()  # only requests it: must not wait for itself

        async def on_stop(self) -> None:
            self.stopped = True

    quitter = Quitter()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, quitter)
        with trio.fail_after(1):
            await ref.ask("quit")
    assert quitter.stopped
    assert not ref.alive


async def test_on_stop_does_not_run_after_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    actor = Recorder()
    with pytest.RaisesGroup(ValueError):
        async with trio.open_nursery() as nursery:
            ref = await spawn(nursery, actor)
            await ref.tell("crash")
    assert "stopped" not in actor.log


async def test_a_failing_on_start_raises_out_of_spawn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Broken(Actor[Any, Any]):
        async def on_start(self) -> None:
            raise OSError("no database")

    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError, match="no database"):
            await spawn(nursery, Broken())


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
async def test_an_ask_dropped_by_a_full_mailbox_fails(
    policy: str, autojump_clock: trio.testing.MockClock
) -> None:
    actor = Recorder()
    failures: dict[str, BaseException] = {}
    survivor, victim = ("second", "first") if policy == "drop_oldest" else ("first", "second")
    async with trio.open_nursery() as nursery:
        mailbox: Mailbox[Any] = Mailbox(1, policy)  # type: ignore[arg-type]
        ref = await spawn(nursery, actor, mailbox=mailbox)
        await ref.tell("wait")
        await settle()
        nursery.start_soon(ask_expecting, ref, "first", MailboxFull, failures)
        await settle()
        nursery.start_soon(ask_expecting, ref, "second", MailboxFull, failures)
        await settle()  # one of the two asks was dropped
        assert list(failures) == [victim]
        assert "dropped" in str(failures[victim])
        assert actor.gate is not None
        actor.gate.set()
        await settle()  # the surviving ask is answered before the stop goes in
        await ref.stop()
    assert actor.log == ["started", "wait", survivor, "stopped"]


async def test_a_cancelled_asker_leaves_no_trace(autojump_clock: trio.testing.MockClock) -> None:
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor, mailbox=Mailbox(1))
        await ref.tell("wait")
        await settle()
        # Cancelled while queued: the request is taken back and never handled.
        with trio.move_on_after(1):
            await ref.ask("withdrawn")
        assert ref.mailbox.statistics().queued == 0
        # Cancelled while waiting for room: nothing was sent.
        await ref.tell("filler")
        with trio.move_on_after(1):
            await ref.ask("never-sent")
        assert ref.mailbox.statistics().waiting_senders == 0
        assert actor.gate is not None
        actor.gate.set()
        # Cancelled while being handled: the actor finishes it and carries on.
        with trio.move_on_after(1):
            await ref.ask("wait")
        actor.gate.set()
        assert await ref.ask("next") == ("reply", "next")
        await ref.stop()
    assert actor.log == ["started", "wait", "filler", "wait", "next", "stopped"]


async def test_a_withdrawn_ask_makes_room_for_a_waiting_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Recorder()
    asking = trio.CancelScope()

    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor, mailbox=Mailbox(1))

        async def asker() -> None:
            with asking:
                await ref.ask("withdrawn")

        await ref.tell("wait")
        await settle()
        nursery.start_soon(asker)
        await settle()  # the ask fills the mailbox
        nursery.start_soon(ref.tell, "waiting")
        await settle()
        assert ref.mailbox.statistics().waiting_senders == 1
        asking.cancel()
        await settle()
        stats = ref.mailbox.statistics()
        assert (stats.waiting_senders, stats.queued) == (0, 1)
        assert actor.gate is not None
        actor.gate.set()
        await settle()
        await ref.stop()
    assert actor.log == ["started", "wait", "waiting", "stopped"]


async def test_an_actor_cancelled_mid_ask_fails_the_asker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    failures: dict[str, BaseException] = {}
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as actors:
            ref = await spawn(actors, Recorder(), name="doomed")
            outer.start_soon(ask_expecting, ref, "hang", ActorDead, failures)
            await settle()
            actors.cancel_scope.cancel()
    assert "doomed" in str(failures["hang"])
    assert not ref.alive


async def test_the_default_handle_says_what_is_missing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Lazy(Actor[int, int]):
        pass

    with pytest.RaisesGroup(pytest.RaisesExc(NotImplementedError, match="Lazy")):
        async with trio.open_nursery() as nursery:
            ref: ActorRef[int, int] = await spawn(nursery, Lazy())
            with pytest.raises(ActorDead):
                await ref.ask(1)


async def test_an_ask_that_finds_room_takes_one_scheduler_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 15, item 3: an ask waits for its answer right after sending, which is its
    schedule point; the send took one more of its own before (two steps per ask)."""
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor)

        async def asker() -> None:
            for n in range(10):
                assert await ref.ask(n) == ("reply", n)

        with counting_steps(lambda task: task.name.endswith("asker")) as counter:
            nursery.start_soon(asker)
            await settle()
        assert counter.steps == 1 + 10  # its first step, then one per answer
        await ref.stop()


async def test_an_ask_in_a_cancelled_scope_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor)
        with trio.CancelScope() as scope:
            scope.cancel()
            await ref.ask("never")
        await settle()
        assert actor.log == ["started"]
        await ref.stop()


async def test_an_ask_to_a_full_reject_mailbox_fails_and_is_not_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor, mailbox=Mailbox(1, "reject"))
        await ref.tell("wait")
        await settle()
        await ref.tell("queued")
        with pytest.raises(MailboxFull):
            await ref.ask("refused")
        assert ref.mailbox.statistics().queued == 1
        assert actor.gate is not None
        actor.gate.set()
        await settle()
        await ref.stop()
    assert actor.log == ["started", "wait", "queued", "stopped"]


async def test_an_actor_takes_what_is_queued_for_it_in_bursts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 15, item 3: messages that wait queued are taken without a schedule point
    each, at most BURST in a row; between bursts the actor lets the others run."""
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor, name="burst")
        await settle()
        with counting_steps(lambda task: task.name.endswith("_run_spawned")) as counter:
            for n in range(2 * BURST + 8):
                ref.tell_nowait(n)
            await settle()
        assert actor.log == ["started", *range(2 * BURST + 8)]
        assert counter.steps == 3  # one per burst (it was one per message)
        await ref.stop()


async def test_an_idle_actor_holds_no_exception_while_it_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An actor that worked through a burst and waits for more raised nothing to find its
    mailbox empty: a WouldBlock caught there stayed alive, with its traceback, for as long
    as the actor was idle (and cost ~1 us per idle spell)."""

    before = live_would_blocks()
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        refs = [await spawn(nursery, actor, name=f"idle-{n}") for n in range(8)]
        for ref in refs:
            ref.tell_nowait("a")
            ref.tell_nowait("b")  # a burst, then an empty mailbox
        await settle()
        assert live_would_blocks() == before
        for ref in refs:
            await ref.stop()


async def test_an_idle_actor_keeps_neither_its_last_message_nor_its_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What an actor handled last is not kept alive by the actor while it waits for more:
    a large envelope would otherwise stay in memory for as long as its session is idle."""

    class Big:
        pass

    class Answers(Actor[Big, Big]):
        async def handle(self, msg: Big) -> Big:
            return Big()

    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Answers())
        asked = Big()
        answer = await ref.ask(asked)
        await settle()
        gone = [weakref.ref(asked), weakref.ref(answer)]
        del asked, answer
        gc.collect()
        assert [w() for w in gone] == [None, None]
        told = Big()  # the last message, told this time
        ref.tell_nowait(told)
        await settle()
        gone = [weakref.ref(told)]
        del told
        gc.collect()
        assert [w() for w in gone] == [None]
        await ref.stop()


async def test_an_ask_dropped_as_it_is_queued_still_takes_a_schedule_point(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A full ``drop_newest`` mailbox settles the ask as it is offered: it fails without
    waiting, so it must take its schedule point there, or a caller retrying in a loop
    would never let the actor run (review of issue 15)."""
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor, mailbox=Mailbox(1, "drop_newest"))
        await ref.tell("wait")
        await settle()
        await ref.tell("queued")

        async def release() -> None:
            assert actor.gate is not None
            actor.gate.set()
            await trio.lowlevel.checkpoint()

        nursery.start_soon(release)
        answered = False
        for _ in range(100):
            try:
                answered = await ref.ask("retried") == ("reply", "retried")
                break
            except MailboxFull:
                continue
        assert answered  # the actor got to run between two tries
        await ref.stop()
    assert actor.log == ["started", "wait", "queued", "retried", "stopped"]


async def test_an_actor_cancelled_mid_burst_takes_no_more_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A burst checks for cancellation before each message it takes: what is still queued
    stays queued, not handled by a cancelled actor (review of issue 15)."""
    log: list[int] = []

    class CancelsItsScope(Actor[int, None]):
        def __init__(self, scope: trio.CancelScope) -> None:
            self.scope = scope

        async def handle(self, msg: int) -> None:
            log.append(msg)
            if msg == 2:
                self.scope.cancel()  # as if cancelled from outside, between two messages

    async def host(task_status: trio.TaskStatus[ActorRef[int, None]]) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as actors:
                task_status.started(await spawn(actors, CancelsItsScope(scope)))

    async with trio.open_nursery() as nursery:
        ref = await nursery.start(host)
        for n in range(10):
            ref.tell_nowait(n)
        await settle()
    assert log == [0, 1, 2]


async def test_a_stop_queued_mid_burst_goes_before_the_messages_behind_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The system lane still comes first within a burst: a stop queued while the actor
    works through its queue is taken next, ahead of the user messages still queued."""
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor)
        ref.tell_nowait("a")
        ref.tell_nowait("wait")
        ref.tell_nowait("b")
        await settle()  # handling "wait"
        nursery.start_soon(ref.stop)
        await settle()
        assert actor.gate is not None
        actor.gate.set()
        await settle()
    assert actor.log == ["started", "a", "wait", "stopped"]
