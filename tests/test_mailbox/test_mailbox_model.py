"""Hypothesis drives the trio mailbox with parked senders and receivers against a model."""

from __future__ import annotations

from collections import deque

import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from troupe import MailboxFull
from troupe.mailbox import DeadLetterBuffer, Mailbox, Overflow

Op = tuple[str, int]

script = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 99)),
        st.tuples(st.just("send_nowait"), st.integers(0, 99)),
        st.tuples(st.just("system"), st.integers(100, 199)),
        st.tuples(st.just("receive"), st.just(0)),
        st.tuples(st.just("receive_nowait"), st.just(0)),
        st.tuples(st.just("receive_even_nowait"), st.just(0)),
    ),
    max_size=40,
)


class Model:
    """What the mailbox must do: plain lists, with parked tasks as explicit queues."""

    def __init__(self, capacity: int, policy: Overflow) -> None:
        self.capacity = capacity
        self.policy = policy
        self.user: deque[int] = deque()
        self.system: deque[int] = deque()
        self.senders: deque[int] = deque()  # messages of parked senders, in park order
        self.receivers = 0  # parked receivers
        self.received: list[int] = []
        self.dropped: list[int] = []

    def offer(self, msg: int, *, nowait: bool) -> str:
        """Returns "ok", "full" (MailboxFull raised) or "parked"."""
        if self.receivers:
            self.receivers -= 1
            self.received.append(msg)
            return "ok"
        if len(self.user) < self.capacity:
            self.user.append(msg)
            return "ok"
        if self.policy is Overflow.DROP_OLDEST:
            self.dropped.append(self.user.popleft())
            self.user.append(msg)
            return "ok"
        if self.policy is Overflow.DROP_NEWEST:
            self.dropped.append(msg)
            return "ok"
        if self.policy is Overflow.REJECT or nowait:
            return "full"
        self.senders.append(msg)
        return "parked"

    def system_msg(self, msg: int) -> None:
        if self.receivers:
            self.receivers -= 1
            self.received.append(msg)
        else:
            self.system.append(msg)

    def take_even(self) -> int | None:
        """Selective receive: the first even message, queued first, then parked senders'."""
        for lane in (self.system, self.user, self.senders):
            msg = next((m for m in lane if m % 2 == 0), None)
            if msg is not None:
                lane.remove(msg)
                while self.senders and len(self.user) < self.capacity:
                    self.user.append(self.senders.popleft())
                self.received.append(msg)
                return msg
        return None

    def take(self) -> int | None:
        if self.system:
            msg = self.system.popleft()
        elif self.user:
            msg = self.user.popleft()
        else:
            return None
        while self.senders and len(self.user) < self.capacity:
            self.user.append(self.senders.popleft())
        self.received.append(msg)
        return msg


# The autojump clock is shared by the examples (each runs in its own trio.run): it only turns
# a hang into an immediate TooSlowError, so sharing it is harmless.
@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# A selective receive whose match is held by a sender parked on a full queue.
@example(
    capacity=1,
    policy=Overflow.BLOCK,
    ops=[("send", 1), ("send", 3), ("send", 2), ("receive_even_nowait", 0), ("receive", 0)],
)
@given(
    capacity=st.integers(min_value=1, max_value=3),
    policy=st.sampled_from(list(Overflow)),
    ops=script,
)
async def test_mailbox_matches_the_model(
    capacity: int, policy: Overflow, ops: list[Op], autojump_clock: trio.testing.MockClock
) -> None:
    letters = DeadLetterBuffer()
    mb: Mailbox[int] = Mailbox(capacity, policy, dead_letters=letters)
    model = Model(capacity, policy)
    received: list[int] = []

    async def sender(msg: int) -> None:
        await mb.send(msg)

    async def receiver() -> None:
        received.append(await mb.receive())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for op, value in ops:
                if op == "send":
                    # send is "ok" / "full" / parked; a task lets a parked one stay parked.
                    before = mb.statistics().waiting_senders
                    expect = model.offer(value, nowait=False)
                    if expect == "full":
                        try:
                            await mb.send(value)
                        except MailboxFull:
                            pass
                        else:
                            raise AssertionError("send to a full reject mailbox went through")
                    else:
                        nursery.start_soon(sender, value)
                    await trio.testing.wait_all_tasks_blocked()
                    parked = mb.statistics().waiting_senders - before
                    assert parked == (1 if expect == "parked" else 0)
                elif op == "send_nowait":
                    expect = model.offer(value, nowait=True)
                    try:
                        mb.send_nowait(value)
                    except MailboxFull:
                        assert expect == "full"
                    else:
                        assert expect == "ok"
                elif op == "system":
                    model.system_msg(value)
                    mb.send_system(value)
                elif op == "receive":
                    if model.take() is None:
                        model.receivers += 1
                    nursery.start_soon(receiver)
                else:
                    even = op == "receive_even_nowait"
                    want = model.take_even() if even else model.take()
                    try:
                        got = mb.receive_nowait(match=(lambda m: m % 2 == 0) if even else None)
                    except trio.WouldBlock:
                        assert want is None
                    else:
                        assert got == want
                        received.append(got)
                await trio.testing.wait_all_tasks_blocked()
                stats = mb.statistics()
                assert stats.queued - len(model.system) <= capacity
                assert stats.queued == len(model.user) + len(model.system)
                assert stats.waiting_senders == len(model.senders)
                assert stats.waiting_receivers == model.receivers
                assert stats.dropped == len(model.dropped)
                assert sorted(received) == sorted(model.received)
            nursery.cancel_scope.cancel()
    # FIFO among user messages: received in the model's order (parked receivers woke in order).
    assert received == model.received
    assert [letter.message for letter in letters.letters] == model.dropped
    assert mb.statistics().high_water <= capacity
