"""A live session keeps a bounded window of dedup keys; older ones are the store's to answer.

Issue 13 item 11: every WebSocket post carries an idempotency key, and the session actor
kept every one of them (memory and recovery time grew with the session's history).
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

from troupe import ProtocolError
from troupe.api import Accepted
from troupe.hub import Hub
from troupe.hub._directory import DedupWindow
from troupe.model import SessionMetadata
from troupe.store import MemoryStore, answer_prefix

from ..harness import Agent, HubPair, open_hub_pair, text_envelope
from .conftest import Reopen

WINDOW = 4
POSTS = 12


def window_of(hub: Hub, session_id: str) -> dict[str, tuple[str, int]]:
    entry = hub.core.directory.get(session_id)
    assert entry.dedup is not None
    return entry.dedup


async def test_a_retry_older_than_the_window_is_still_answered_once(
    autojump_clock: trio.testing.MockClock, reopen: Reopen
) -> None:
    async with open_hub_pair(reopen(), dedup_window=WINDOW) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        sid = md.session_id
        first = [await h.hub.post(text_envelope(md, alice, "m0", idempotency_key="k0"))]
        answer = await h.hub.post(
            text_envelope(md, bob, "re m0", causation_id=first[0].envelope_id)
        )
        first += [
            await h.hub.post(text_envelope(md, alice, f"m{i}", idempotency_key=f"k{i}"))
            for i in range(1, POSTS)
        ]
        assert "k:k0" not in window_of(h.hub, sid)
        assert len(window_of(h.hub, sid)) <= WINDOW
        wal = await h.hub.read_wal(sid)
        again = await h.hub.post(text_envelope(md, alice, "changed", idempotency_key="k0"))
        assert (again.envelope_id, again.seq, again.duplicate) == (
            first[0].envelope_id,
            first[0].seq,
            True,
        )
        found = await h.hub.find_envelope_by_causation(
            sid, sender_id=bob.id, causation_id=first[0].envelope_id
        )
        assert found is not None
        assert found.envelope_id == answer.envelope_id
        assert (
            await h.hub.find_envelope_by_causation(
                sid, sender_id=alice.id, causation_id=first[0].envelope_id
            )
            is None
        )
        assert await h.hub.read_wal(sid) == wal
    async with open_hub_pair(reopen(), dedup_window=WINDOW) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        for i in (0, 1, POSTS - 1):  # older than the window, and inside it
            again = await h.hub.post(text_envelope(md, alice, "again", idempotency_key=f"k{i}"))
            assert (again.envelope_id, again.seq, again.duplicate) == (
                first[i].envelope_id,
                first[i].seq,
                True,
            )
        caused = await h.hub.post(
            text_envelope(md, bob, "re m0, again", causation_id=first[0].envelope_id)
        )
        assert (caused.envelope_id, caused.duplicate) == (answer.envelope_id, True)
        assert await h.hub.read_wal(sid) == wal
        # Recovery loaded the window only, not every key the session has.
        assert len(window_of(h.hub, sid)) <= WINDOW
        fresh = await h.hub.post(text_envelope(md, alice, "new", idempotency_key="k-new"))
        assert (fresh.seq, fresh.duplicate) == (wal[-1].seq + 1, False)


async def test_a_key_the_window_missed_is_refused_by_the_store_and_answered_once(
    autojump_clock: trio.testing.MockClock, reopen: Reopen
) -> None:
    """The store keeps idempotency keys with the WAL only, and its index of them refuses a
    repeat at the append: a retry that a (re)started session's window does not know (here,
    a store that returns none of them) is answered with the original all the same."""
    async with open_hub_pair(reopen()) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        first = await h.hub.post(text_envelope(md, alice, "m0", idempotency_key="k0"))
        wal = await h.hub.read_wal(md.session_id)
    async with open_hub_pair(reopen()) as h:
        alice = await h.agent("alice")
        store = h.hub.core.store

        async def forgetful(session_id: str, since: int) -> tuple[list[Any], bool]:
            return [], False

        store.idempotency_keys = forgetful  # type: ignore[method-assign]
        stats = h.hub.statistics()
        again = await h.hub.post(text_envelope(md, alice, "changed", idempotency_key="k0"))
        assert (again.envelope_id, again.seq, again.duplicate) == (
            first.envelope_id,
            first.seq,
            True,
        )
        assert h.hub.statistics().duplicates == stats.duplicates + 1
        assert await h.hub.read_wal(md.session_id) == wal
        # Remembered now: the next retry is answered from the window.
        assert "k:k0" in window_of(h.hub, md.session_id)


async def test_another_senders_key_is_refused_not_answered_as_its_repeat(
    autojump_clock: trio.testing.MockClock, reopen: Reopen
) -> None:
    """An idempotency key is unique within its session. A post from bob under a key of
    alice's is no repeat of hers: it is refused, naming the key, wherever the key is found
    (the window, the store after the window let it go, the store's index at the append, a
    closed session). It used to be answered with alice's envelope as a "duplicate", and
    bob's post was dropped without a word."""
    taken = "idempotency key 'shared' is taken in session"

    async def refused(h: HubPair, md: SessionMetadata, sender: Agent) -> None:
        wal = await h.hub.read_wal(md.session_id)
        rejected = h.hub.statistics().envelopes_rejected
        with pytest.raises(ProtocolError, match=taken):
            await h.hub.post(text_envelope(md, sender, "mine", idempotency_key="shared"))
        assert await h.hub.read_wal(md.session_id) == wal
        assert h.hub.statistics().envelopes_rejected == rejected + 1

    async def repeated(h: HubPair, md: SessionMetadata, sender: Agent, first: Accepted) -> None:
        again = await h.hub.post(text_envelope(md, sender, "again", idempotency_key="shared"))
        assert (again.envelope_id, again.duplicate) == (first.envelope_id, True)

    async with open_hub_pair(reopen(), dedup_window=WINDOW) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        first = await h.hub.post(text_envelope(md, alice, "m0", idempotency_key="shared"))
        await refused(h, md, bob)  # from the window
        for i in range(POSTS):
            await h.hub.post(text_envelope(md, alice, f"m{i}", idempotency_key=f"k{i}"))
        assert "k:shared" not in window_of(h.hub, md.session_id)
        await refused(h, md, bob)  # from the store's index, past the window
        await repeated(h, md, alice, first)  # alice's own repeat is one
    async with open_hub_pair(reopen()) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")

        async def forgetful(session_id: str, since: int) -> tuple[list[Any], bool]:
            return [], False

        h.hub.core.store.idempotency_keys = forgetful  # type: ignore[method-assign]
        await refused(h, md, bob)  # the append's DuplicateKey
        await repeated(h, md, alice, first)
        await h.hub.close_session(md.session_id, reason="done")
        await refused(h, md, bob)  # a closed session's
        await repeated(h, md, alice, first)


async def test_the_window_stays_bounded_however_long_the_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(MemoryStore()) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        # More texts than a conversation's default turn cap (issue 18): no cap here.
        md = await h.session("conversation", alice, bob, knobs={"max_turns": None})
        keyed = text_envelope(md, alice, "x")
        default_window = h.hub.core.config.dedup_window
        posted = [
            await h.hub.post(attrs.evolve(keyed, idempotency_key=f"key-{i}"))
            for i in range(default_window * 2)
        ]
        window = window_of(h.hub, md.session_id)
        assert len(window) == default_window
        assert f"k:key-{default_window * 2 - 1}" in window
        assert "k:key-0" not in window
        stats = h.hub.statistics()
        again = await h.hub.post(attrs.evolve(keyed, idempotency_key="key-0"))
        assert (again.seq, again.duplicate) == (posted[0].seq, True)
        assert h.hub.statistics().duplicates == stats.duplicates + 1


@pytest.mark.parametrize("size", [-1, 1.5, True])
async def test_a_bad_window_is_refused(size: object) -> None:
    with pytest.raises(ValueError, match="dedup_window must be an int >= 0"):
        async with open_hub_pair(dedup_window=size):
            pass


def test_who_answered_what_is_an_index_that_forgets_with_the_window() -> None:
    window = DedupWindow(2)
    window.remember("k:one", ("e1", 1))
    window.remember(answer_prefix("bob", "e1") + "text", ("e2", 2))
    window.answered("bob", "e1", ("e2", 2))
    assert window.answer("bob", "e1") == ("e2", 2)
    assert window.answer("bob", "e9") is None
    assert window.answer("eve", "e1") is None
    window.remember(answer_prefix("bob", "e3") + "text", ("e4", 4))
    window.answered("bob", "e3", ("e4", 4))
    window.remember(answer_prefix("bob", "e5") + "text", ("e6", 6))
    window.answered("bob", "e5", ("e6", 6))
    # The index is bounded like the window; what both let go, the store answers.
    assert len(window.answers) == 2
    assert window.answer("bob", "e1") is None
    assert not window.complete


def test_answer_keys_read_back_from_the_store_are_indexed() -> None:
    window = DedupWindow(8)
    window.load(answer_prefix("bob", "e1") + "text", ("e2", 2))
    window.load("k:key", ("e3", 3))
    assert window.answer("bob", "e1") == ("e2", 2)
    # An id with a bar in it cannot be split: such a window also scans its keys.
    window.load(answer_prefix("eve", "id|with|bars") + "text", ("e4", 4))
    assert window.ambiguous
    assert window.answer("eve", "id|with|bars") == ("e4", 4)


async def test_the_hub_finds_an_answer_in_the_window_without_walking_it(
    autojump_clock: trio.testing.MockClock, reopen: Reopen
) -> None:
    async with open_hub_pair(reopen(), dedup_window=WINDOW) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        question = await h.hub.post(text_envelope(md, alice, "q"))
        answer = await h.hub.post(text_envelope(md, bob, "a", causation_id=question.envelope_id))
        window = h.hub.core.directory.get(md.session_id).dedup
        assert window is not None
        walked = 0
        items = window.items

        def counting() -> object:
            nonlocal walked
            walked += 1
            return items()

        window.items = counting  # type: ignore[method-assign,assignment]
        found = await h.hub.find_envelope_by_causation(
            md.session_id, sender_id=bob.id, causation_id=question.envelope_id
        )
        assert found is not None
        assert found.envelope_id == answer.envelope_id
        assert walked == 0
