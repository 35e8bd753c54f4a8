"""The sans-IO queue: capacity, overflow policies, the system lane, selective take."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from troupe.mailbox import NOTHING, MailQueue, Overflow


def test_queue_is_fifo_within_capacity() -> None:
    q: MailQueue[int] = MailQueue(3)
    assert [q.push(i) for i in range(3)] == ["queued"] * 3
    assert [q.take() for _ in range(3)] == [0, 1, 2]
    assert q.take() is NOTHING


@pytest.mark.parametrize("policy", ["block", "reject"])
def test_block_and_reject_refuse_when_full(policy: str) -> None:
    q: MailQueue[int] = MailQueue(2, policy)  # type: ignore[arg-type]
    q.push(1)
    q.push(2)
    assert q.push(3) == "full"
    assert q.user_queued == 2
    assert q.dropped == 0


def test_drop_oldest_evicts_the_head() -> None:
    q: MailQueue[int] = MailQueue(2, "drop_oldest")
    q.push(1)
    q.push(2)
    assert q.push(3) == ("dropped", 1)
    assert [q.take(), q.take()] == [2, 3]
    assert q.dropped == 1


def test_drop_newest_discards_the_new_message() -> None:
    q: MailQueue[int] = MailQueue(2, Overflow.DROP_NEWEST)
    q.push(1)
    q.push(2)
    assert q.push(3) == ("dropped", 3)
    assert [q.take(), q.take()] == [1, 2]
    assert q.dropped == 1


def test_system_lane_is_uncounted_and_first() -> None:
    q: MailQueue[str] = MailQueue(1)
    q.push("user")
    q.push_system("sys1")
    q.push_system("sys2")
    assert q.user_queued == 1
    assert q.has_room() is False
    assert len(q) == 3
    assert [q.take(), q.take(), q.take()] == ["sys1", "sys2", "user"]


def test_selective_take_leaves_the_others_in_order() -> None:
    q: MailQueue[int] = MailQueue(10)
    for i in range(6):
        q.push(i)
    assert q.take(lambda m: m % 2 == 1) == 1
    assert q.take(lambda m: m > 10) is NOTHING
    assert q.take_all() == [0, 2, 3, 4, 5]


def test_selective_take_looks_in_the_system_lane_first() -> None:
    q: MailQueue[str] = MailQueue(4)
    q.push("u-a")
    q.push_system("s-a")
    q.push_system("s-b")
    assert q.take(lambda m: m.endswith("b")) == "s-b"
    assert q.take(lambda m: m.endswith("a")) == "s-a"
    assert q.take(lambda m: m.endswith("a")) == "u-a"


def test_withdraw_removes_one_queued_message_by_identity() -> None:
    q: MailQueue[object] = MailQueue(4)
    a, b, c = object(), object(), object()
    q.push(a)
    q.push_system(b)
    assert q.withdraw(a) is True
    assert q.withdraw(b) is True
    assert q.withdraw(c) is False
    assert len(q) == 0


def test_high_water_records_the_deepest_queue() -> None:
    q: MailQueue[int] = MailQueue(5)
    for i in range(4):
        q.push(i)
    q.take()
    q.push_unchecked(9)
    assert q.high_water == 4


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True])
def test_capacity_must_be_a_positive_int(capacity: object) -> None:
    with pytest.raises(ValueError, match="capacity"):
        MailQueue(capacity)  # type: ignore[arg-type]


def test_unknown_policy_names_the_choices() -> None:
    with pytest.raises(ValueError, match="'drop_oldest'"):
        MailQueue(1, "drop_all")  # type: ignore[arg-type]


# -- invariants -----------------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers()),
        st.tuples(st.just("system"), st.integers()),
        st.tuples(st.just("take"), st.none()),
        st.tuples(st.just("take_even"), st.none()),
    ),
    max_size=60,
)


@given(
    capacity=st.integers(min_value=1, max_value=5),
    policy=st.sampled_from(list(Overflow)),
    script=ops,
)
def test_queue_matches_a_model(
    capacity: int, policy: Overflow, script: list[tuple[str, int | None]]
) -> None:
    """Never above capacity, FIFO among user messages, every drop counted exactly."""
    q: MailQueue[int] = MailQueue(capacity, policy)
    user: deque[int] = deque()
    system: deque[int] = deque()
    dropped: list[int] = []
    for op, value in script:
        if op == "push":
            assert value is not None
            result = q.push(value)
            if len(user) < capacity:
                user.append(value)
                assert result == "queued"
            elif policy is Overflow.DROP_OLDEST:
                dropped.append(user.popleft())
                user.append(value)
                assert result == ("dropped", dropped[-1])
            elif policy is Overflow.DROP_NEWEST:
                dropped.append(value)
                assert result == ("dropped", value)
            else:
                assert result == "full"
        elif op == "system":
            assert value is not None
            q.push_system(value)
            system.append(value)
        elif op == "take":
            expected = system.popleft() if system else user.popleft() if user else NOTHING
            assert q.take() == expected
        else:
            got = q.take(lambda m: m % 2 == 0)
            want: int | object = NOTHING
            for lane in (system, user):
                hit = next((m for m in lane if m % 2 == 0), None)
                if hit is not None:
                    lane.remove(hit)
                    want = hit
                    break
            assert got == want
        assert q.user_queued <= capacity
        assert q.dropped == len(dropped)
        assert len(q) == len(user) + len(system)
    assert q.take_all() == [*system, *user]
