"""Posts that wait for room (``overflow="block"``) do not hold their connection's in-flight
slots: the hub keeps reading that connection, receipts included, while they wait.

A client with several identities shares one connection. When up to ``MAX_IN_FLIGHT`` of its
posts waited for room in the inbox of an identity on that same connection, they held every
slot, the hub read none of its frames (the receipts that would have made the room among
them), and the posts ended in ``InboxFull`` after ``block_timeout`` although the recipient
was acking.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe import InboxBlock, LimitsBlock, Rule
from troupe.api import PostEnvelope
from troupe.hub import _serve
from troupe.hub._room import ConnectionSlots
from troupe.hub._serve import MAX_IN_FLIGHT
from troupe.model import (
    AcceptFrame,
    ErrorFrame,
    Frame,
    RequestFrame,
    ResponseFrame,
    SendFrame,
    unstructure,
)

from ..harness import HubPair, MiniClient, open_hub_pair, text_envelope, texts

#: A long wait for room: a post that waited that long was stuck, not slowed.
BLOCK_TIMEOUT = 60.0


def _post_frame(kind: str, envelope: object, n: int) -> Frame:
    """A post as a raw client sends it (``SendFrame``) or as HubClient does (an RPC)."""
    if kind == "send":
        return SendFrame(envelope=envelope, request_id=f"p{n}")  # type: ignore[arg-type]
    params = unstructure(PostEnvelope(envelope=envelope))  # type: ignore[arg-type]
    return RequestFrame(request_id=f"p{n}", op="post_envelope", params=params)


def _outcomes(client: MiniClient) -> tuple[list[str], list[str]]:
    """The request ids of the posts accepted, and the error messages of those refused."""
    accepted, refused = [], []
    for frame in client.frames:
        if isinstance(frame, AcceptFrame):
            accepted.append(frame.request_id)
        elif isinstance(frame, ResponseFrame):
            if frame.ok:
                accepted.append(frame.request_id)
            else:
                refused.append(frame.error_message or "")
        elif isinstance(frame, ErrorFrame):
            refused.append(frame.message)
    return accepted, refused


async def _one_connection(p: HubPair, *, max_pending: int) -> tuple[MiniClient, str, str, str]:
    """alice and bob bound to one connection (bob acks each delivery as it comes, behind
    whatever the connection sent before), in a conversation; bob's inbox holds
    ``max_pending``."""
    rule = Rule(
        limits=LimitsBlock(inbox=InboxBlock(max_pending=max_pending, block_timeout=BLOCK_TIMEOUT))
    )
    alice = await p.agent("alice", connect=False)
    bob = await p.agent("bob", connect=False, rule=rule)
    client = await p.connection("ep-shared")
    await client.bind(alice.id)
    await client.bind(bob.id)
    md = await p.session("conversation", alice, bob, knobs={"max_turns": None})
    await p.settle()
    return client, alice.id, bob.id, md.session_id


@pytest.mark.parametrize("kind", ["send", "rpc"])
async def test_posts_waiting_for_room_leave_the_connection_read(
    autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    count = 2 * MAX_IN_FLIGHT
    async with open_hub_pair() as p:
        client, alice, bob, sid = await _one_connection(p, max_pending=2)
        # All at once, as a client with many posting tasks sends them: bob's receipts for
        # what reaches him queue behind the posts still unread.
        for n in range(count):
            client.send(_post_frame(kind, text_envelope(sid, alice, f"m{n}"), n))
        await p.settle()
        at_once, _ = _outcomes(client)
        await trio.sleep(BLOCK_TIMEOUT)  # what was stuck is refused by now
        await p.settle()
        accepted, refused = _outcomes(client)
        assert refused == []
        everything = sorted(f"p{n}" for n in range(count))
        assert sorted(accepted) == everything
        # Nothing waited out a block_timeout (the clock did not move): each post went in as
        # soon as bob acked the one before.
        assert sorted(at_once) == everything
        assert sorted(texts(await p.wal(sid))) == sorted(f"m{n}" for n in range(count))
        # bob got each of them, in the WAL's order.
        wal = await p.wal(sid)
        assert texts(client.notified(bob, sid)) == texts(e for e in wal if e.sender_id == alice)
        assert p.hub.core.room.waiting() == 0


async def test_past_the_waiting_bound_a_post_is_refused_at_once_naming_it(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stopping the reader past the bound would also stop the receipts that make room (the
    # deadlock above): a post that cannot wait is refused with InboxFull, as one that
    # waited too long is.
    monkeypatch.setattr(_serve, "MAX_WAITING_POSTS", 3)
    async with open_hub_pair() as p:
        client, alice, bob, sid = await _one_connection(p, max_pending=1)
        client.receipts = False  # bob never acks: his inbox stays full
        client.send(_post_frame("rpc", text_envelope(sid, alice, "m0"), 0))  # fills it
        await p.settle()
        start = trio.current_time()
        for n in range(1, 1 + 3 + 2):  # three wait, two are refused
            client.send(_post_frame("rpc", text_envelope(sid, alice, f"m{n}"), n))
        await p.settle()
        assert trio.current_time() == start  # the refusals came at once
        accepted, refused = _outcomes(client)
        assert accepted == ["p0"]
        assert len(refused) == 2
        for message in refused:
            assert f"inbox of agent 'bob' ({bob}) is full" in message
            assert "this connection already has 3 posts waiting for room" in message
        assert p.hub.core.room.waiting() == 3
        # The three waiting ones end as any wait does: InboxFull after block_timeout.
        await trio.sleep(BLOCK_TIMEOUT)
        await p.settle()
        accepted, refused = _outcomes(client)
        assert accepted == ["p0"]
        assert len(refused) == 5
        assert p.hub.core.room.waiting() == 0


def test_a_released_request_slot_trades_and_gives_back_nothing() -> None:
    """A task started while a request was served copies its slot with its context; if it
    waits for room after the request ended, it must not trade that slot again (the
    connection would count one request fewer than it serves, and one waiting post more
    for good). And a slot is given back once (review of issue 15)."""
    slots = ConnectionSlots(in_flight=2, max_waiting=4)
    slot = slots.take_nowait()
    assert slot is not None
    assert (slots.busy, slots.waiting) == (1, 0)
    slot.release()
    slot.release()
    assert (slots.busy, slots.waiting) == (0, 0)
    assert slot.wait()  # may wait: but there is nothing left to trade
    slot.release()
    assert (slots.busy, slots.waiting) == (0, 0)
