"""The trio mailbox: overflow policies, selective receive, system lane, close, statistics."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe import MailboxClosed, MailboxFull
from troupe.mailbox import DeadLetter, DeadLetterBuffer, Mailbox
from troupe.mailbox._queue import Match


async def park_receiver(
    nursery: trio.Nursery, mb: Mailbox[str], got: list[str], match: Match[str] | None = None
) -> None:
    """Start a task that receives one message into ``got``; return once it is parked."""

    async def receiver() -> None:
        got.append(await mb.receive(match=match))

    nursery.start_soon(receiver)
    await trio.testing.wait_all_tasks_blocked()


async def test_send_then_receive_in_order(autojump_clock: trio.testing.MockClock) -> None:
    mb: Mailbox[int] = Mailbox(4)
    for i in range(4):
        await mb.send(i)
    assert [await mb.receive() for _ in range(4)] == [0, 1, 2, 3]


async def test_a_parked_receiver_gets_the_message_directly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[str] = Mailbox(1)
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        await park_receiver(nursery, mb, got)
        assert mb.statistics().waiting_receivers == 1
        mb.send_nowait("hi")
    assert got == ["hi"]
    assert mb.statistics().queued == 0


async def test_block_parks_senders_and_admits_them_in_fifo_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[str] = Mailbox(1)
    await mb.send("first")
    sent: list[str] = []
    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):

            async def sender(name: str = name) -> None:
                await mb.send(name)
                sent.append(name)

            nursery.start_soon(sender)
            # One at a time, so the order in which they parked is known.
            await trio.testing.wait_all_tasks_blocked()
        assert mb.statistics().waiting_senders == 3
        assert sent == []
        got = []
        for _ in range(4):
            got.append(await mb.receive())
            await trio.testing.wait_all_tasks_blocked()
    assert got == ["first", "a", "b", "c"]
    assert sent == ["a", "b", "c"]
    assert mb.statistics().waiting_senders == 0


async def test_send_nowait_on_a_full_block_mailbox_raises_mailbox_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[int] = Mailbox(1)
    mb.send_nowait(1)
    with pytest.raises(MailboxFull, match="full"):
        mb.send_nowait(2)


async def test_reject_raises_mailbox_full_which_is_a_would_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[int] = Mailbox(2, "reject", name="inbox-7")
    await mb.send(1)
    await mb.send(2)
    with pytest.raises(trio.WouldBlock):
        await mb.send(3)
    with pytest.raises(MailboxFull, match="inbox-7"):
        mb.send_nowait(3)
    stats = mb.statistics()
    assert (stats.queued, stats.dropped, stats.waiting_senders) == (2, 0, 0)


@pytest.mark.parametrize(
    ("policy", "kept", "lost"),
    [("drop_oldest", [3, 4, 5], [1, 2]), ("drop_newest", [1, 2, 3], [4, 5])],
)
async def test_drop_policies_send_dead_letters_with_the_reason(
    autojump_clock: trio.testing.MockClock, policy: str, kept: list[int], lost: list[int]
) -> None:
    letters = DeadLetterBuffer()
    mb: Mailbox[int] = Mailbox(3, policy, dead_letters=letters, name="mb")  # type: ignore[arg-type]
    for i in range(1, 6):
        await mb.send(i)
    assert [mb.receive_nowait() for _ in range(3)] == kept
    assert [letter.message for letter in letters.letters] == lost
    assert {letter.reason for letter in letters.letters} == {policy}
    assert letters.letters[0] == DeadLetter(message=lost[0], reason=policy, mailbox="mb")
    assert letters.counts == {policy: 2}
    assert letters.total == 2
    assert mb.statistics().dropped == 2


async def test_drops_are_counted_without_a_sink(autojump_clock: trio.testing.MockClock) -> None:
    mb: Mailbox[int] = Mailbox(1, "drop_newest")
    for i in range(5):
        mb.send_nowait(i)
    assert mb.statistics().dropped == 4
    assert mb.receive_nowait() == 0


async def test_selective_receive_returns_the_first_match_and_keeps_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[str] = Mailbox(10)
    for msg in ("a1", "b1", "a2", "b2"):
        mb.send_nowait(msg)
    assert await mb.receive(match=lambda m: m.startswith("b")) == "b1"
    assert [mb.receive_nowait() for _ in range(3)] == ["a1", "a2", "b2"]


async def test_a_parked_selective_receiver_skips_non_matching_sends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[str] = Mailbox(10)
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        await park_receiver(nursery, mb, got, lambda m: m == "wanted")
        mb.send_nowait("other")
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        mb.send_nowait("wanted")
    assert got == ["wanted"]
    assert mb.receive_nowait() == "other"


async def test_a_parked_selective_receiver_is_woken_even_when_the_queue_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[str] = Mailbox(2)
    mb.send_nowait("x")
    mb.send_nowait("y")
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        await park_receiver(nursery, mb, got, lambda m: m == "wanted")
        with trio.fail_after(1):
            await mb.send("wanted")
    assert got == ["wanted"]
    assert [mb.receive_nowait(), mb.receive_nowait()] == ["x", "y"]


async def test_a_selective_receive_takes_a_match_from_a_parked_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The queue is full of messages the receiver does not want and the one it wants is
    # held by a sender waiting for room: without looking there both would wait forever.
    mb: Mailbox[str] = Mailbox(1)
    mb.send_nowait("noise")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mb.send, "wanted")
        await trio.testing.wait_all_tasks_blocked()
        assert mb.statistics().waiting_senders == 1
        with trio.fail_after(1):
            assert await mb.receive(match=lambda m: m == "wanted") == "wanted"
    assert mb.statistics().waiting_senders == 0
    assert mb.receive_nowait() == "noise"


async def test_a_predicate_that_raises_fails_only_its_receiver(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[int] = Mailbox(4)

    def bad(msg: int) -> bool:
        raise ZeroDivisionError(msg)

    errors: list[BaseException] = []
    got: list[int] = []
    async with trio.open_nursery() as nursery:

        async def picky() -> None:
            try:
                await mb.receive(match=bad)
            except ZeroDivisionError as exc:
                errors.append(exc)

        async def plain() -> None:
            got.append(await mb.receive())

        nursery.start_soon(picky)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(plain)
        await trio.testing.wait_all_tasks_blocked()
        mb.send_nowait(7)
    assert [type(e) for e in errors] == [ZeroDivisionError]
    assert got == [7]


async def test_system_lane_ignores_capacity_and_comes_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[str] = Mailbox(1, "reject")
    mb.send_nowait("user")
    mb.send_system("stop")
    mb.send_system("restart")
    stats = mb.statistics()
    assert stats.queued == 3
    assert stats.dropped == 0
    assert [await mb.receive() for _ in range(3)] == ["stop", "restart", "user"]


async def test_system_message_reaches_a_parked_receiver(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[str] = Mailbox(1)
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        await park_receiver(nursery, mb, got)
        mb.send_system("ping")
    assert got == ["ping"]


async def test_close_refuses_sends_and_lets_receivers_drain(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[int] = Mailbox(4, name="m1")
    mb.send_nowait(1)
    mb.send_nowait(2)
    mb.close()
    mb.close()  # idempotent
    for send in (mb.send_nowait, mb.send_system):
        with pytest.raises(MailboxClosed, match="m1"):
            send(3)
    with pytest.raises(MailboxClosed):
        await mb.send(3)
    assert [await mb.receive(), mb.receive_nowait()] == [1, 2]
    with pytest.raises(MailboxClosed):
        await mb.receive()
    with pytest.raises(MailboxClosed):
        mb.receive_nowait()
    assert mb.statistics().closed is True


async def test_close_wakes_parked_receivers_and_senders_with_mailbox_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    full: Mailbox[int] = Mailbox(1)
    full.send_nowait(0)
    empty: Mailbox[int] = Mailbox(1)
    outcomes: list[str] = []

    async def expect_closed(fn: object, *args: object) -> None:
        with pytest.raises(MailboxClosed):
            await fn(*args)  # type: ignore[operator]
        outcomes.append("closed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(expect_closed, full.send, 1)
        nursery.start_soon(expect_closed, empty.receive)
        await trio.testing.wait_all_tasks_blocked()
        full.close()
        empty.close()
    assert outcomes == ["closed", "closed"]
    # The sender's message never got in; the queued one can still be drained.
    assert full.receive_nowait() == 0
    assert full.statistics().waiting_senders == 0


async def test_close_wakes_a_selective_receiver_even_with_other_messages_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[str] = Mailbox(4)
    mb.send_nowait("other")
    async with trio.open_nursery() as nursery:

        async def receiver() -> None:
            with pytest.raises(MailboxClosed):
                await mb.receive(match=lambda m: m == "never")

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        mb.close()
    assert mb.receive_nowait() == "other"


async def test_statistics_is_a_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    mb: Mailbox[int] = Mailbox(2, "drop_oldest")
    for i in range(3):
        mb.send_nowait(i)
    mb.send_system(99)
    stats = mb.statistics()
    assert stats.queued == 3
    assert stats.capacity == 2
    assert stats.overflow == "drop_oldest"
    assert stats.dropped == 1
    assert stats.waiting_senders == 0
    assert stats.waiting_receivers == 0
    assert stats.high_water == 2
    assert stats.closed is False
    mb.receive_nowait()
    assert stats.queued == 3  # frozen: a later change does not show in an old snapshot
    assert len(mb) == 2


async def test_receive_nowait_on_an_empty_mailbox_would_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[int] = Mailbox(1)
    with pytest.raises(trio.WouldBlock):
        mb.receive_nowait()


async def test_cancelled_sender_leaves_no_trace(autojump_clock: trio.testing.MockClock) -> None:
    mb: Mailbox[str] = Mailbox(1)
    mb.send_nowait("queued")
    with trio.move_on_after(1) as scope:
        await mb.send("cancelled")
    assert scope.cancelled_caught
    assert mb.statistics().waiting_senders == 0
    assert mb.receive_nowait() == "queued"
    with pytest.raises(trio.WouldBlock):
        mb.receive_nowait()


async def test_cancelled_receiver_leaves_no_trace(autojump_clock: trio.testing.MockClock) -> None:
    mb: Mailbox[str] = Mailbox(1)
    with trio.move_on_after(1) as scope:
        await mb.receive(match=lambda m: True)
    assert scope.cancelled_caught
    assert mb.statistics().waiting_receivers == 0
    mb.send_nowait("later")
    assert mb.statistics().queued == 1
    assert mb.receive_nowait() == "later"


async def test_a_cancelled_send_does_not_send_and_a_cancelled_receive_does_not_take(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[int] = Mailbox(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await mb.send(1)
    assert len(mb) == 0
    mb.send_nowait(2)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await mb.receive()
    assert len(mb) == 1


async def test_take_all_empties_the_mailbox_and_admits_parked_senders(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mb: Mailbox[int] = Mailbox(1)
    mb.send_nowait(1)
    mb.send_system(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mb.send, 2)
        await trio.testing.wait_all_tasks_blocked()
        assert mb.take_all() == [0, 1]
    assert mb.receive_nowait() == 2


async def test_repr_names_the_mailbox(autojump_clock: trio.testing.MockClock) -> None:
    mb: Mailbox[int] = Mailbox(3, name="inbox")
    mb.send_nowait(1)
    assert repr(mb) == "<Mailbox inbox 1/3>"
    assert mb.capacity == 3
    assert mb.overflow.value == "block"
    assert mb.closed is False
