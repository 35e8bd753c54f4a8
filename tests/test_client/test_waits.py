"""The seeds' waits: ``timeout`` values at the edges, and what a predicate leaves queued."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from troupe import EV_CHANNEL_INVITE, EV_SESSION_OPENED, EV_TEXT
from troupe.client import Channel, Disconnected, HumanClient, Identity

from ..harness import WAIT, HubPair, kinds, of_type, open_hub_pair, said, texts


async def talking(p: HubPair) -> tuple[HumanClient, HumanClient, Channel]:
    """Two people in a conversation opened by the first."""
    al = await p.human("al")
    bea = await p.human("bea")
    ch = await al.open(type="conversation", target="bea")
    await p.settle()
    return al, bea, ch


@pytest.mark.parametrize("seconds", [0.0, -1.0, -1e9])
async def test_a_timeout_of_zero_or_less_does_not_wait(
    seconds: float, autojump_clock: MockClock
) -> None:
    # As in the seed, whose deadline is then already past: TimeoutError at once, even when
    # a match is queued (never a ValueError from trio's deadline).
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        await al.send(ch.session_id, "here")
        await p.settle()
        start = trio.current_time()
        with pytest.raises(TimeoutError):
            await bea.next_envelope(predicate=said("here"), timeout=seconds)
        with pytest.raises(TimeoutError):
            await bea.wait_for_channel_event(
                channel_id=ch.session_id, predicate=said("here"), timeout=seconds
            )
        with pytest.raises(TimeoutError):
            await bea.next_envelope(predicate=said("never"), timeout=seconds)
        assert trio.current_time() == start
        # Nothing was taken.
        got = await bea.wait_for_channel_event(channel_id=ch.session_id, predicate=said("here"))
        assert got.text == "here"


async def test_next_envelope_leaves_what_its_predicate_rejects(autojump_clock: MockClock) -> None:
    # troupe's documented deviation from the seed, which dropped them: a later
    # next_envelope() (or envelopes()) still gets every envelope the predicate passed over.
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        for body in ("one", "two", "three", "four"):
            await al.send(ch.session_id, body)
        await p.settle()
        assert (await bea.next_envelope(predicate=said("three"), timeout=WAIT)).text == "three"
        with pytest.raises(TimeoutError):
            await bea.next_envelope(predicate=said("five"), timeout=WAIT)
        later = await bea.next_envelope(predicate=of_type(EV_TEXT), timeout=WAIT)
        assert later.text == "one"
        rest = [await bea.next_envelope(timeout=WAIT) for _ in range(3)]
        assert kinds(rest) == [EV_CHANNEL_INVITE, EV_SESSION_OPENED, EV_TEXT]
        assert texts(rest) == ["two"]
        await bea.disconnect()
        assert texts([e async for e in bea.envelopes()]) == ["four"]


async def test_disconnected_names_the_identity(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        _al, bea, ch = await talking(p)
        bot, _ = await p.scripted("bot")
        assert isinstance(bea, Identity)
        assert isinstance(bot, Identity)
        woken: list[Disconnected] = []

        async def pull() -> None:
            with pytest.raises(Disconnected) as caught:
                await bea.next_envelope(predicate=said("never"))
            woken.append(caught.value)

        async def wait(identity: Identity) -> None:
            with pytest.raises(Disconnected) as caught:
                await identity.wait_for_channel_event(
                    channel_id=ch.session_id, predicate=said("never"), timeout=WAIT
                )
            woken.append(caught.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pull)
            nursery.start_soon(wait, bea)
            nursery.start_soon(wait, bot)
            await p.settle()
            await p.hc.close()
        with pytest.raises(Disconnected) as caught:
            await bea.send(ch.session_id, "late")
        woken.append(caught.value)
        expected = {
            f"HumanClient 'bea' ({bea.agent_id}) is disconnected",
            f"AgentClient 'bot' ({bot.agent_id}) is disconnected",
        }
        assert {str(exc) for exc in woken} == expected
        assert len(woken) == 4


def drain(identity: Identity, session_id: str) -> None:
    """Take everything queued in ``identity``'s inbox of ``session_id`` (it is then empty)."""
    box = identity.ensure_channel_inbox(session_id)
    while len(box):
        box.receive_nowait()


async def test_staggered_waits_on_an_empty_inbox_each_get_their_envelope(
    autojump_clock: MockClock,
) -> None:
    # Issue 17: an empty inbox is falsy (a Mailbox has a length), and ensure() replaced it
    # on every call: the second wait took a new inbox, the first one waited on the old one
    # for ever although its envelope arrived.
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        drain(bea, ch.session_id)
        got: dict[str, str | None] = {}

        async def wait(body: str) -> None:
            envelope = await bea.wait_for_channel_event(
                channel_id=ch.session_id, predicate=said(body), timeout=WAIT
            )
            got[body] = envelope.text

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "one")
            await p.settle()
            await trio.sleep(1)
            nursery.start_soon(wait, "two")
            await p.settle()
            await al.send(ch.session_id, "two")
            await al.send(ch.session_id, "one")
        assert got == {"one": "one", "two": "two"}


async def test_the_inbox_of_a_session_is_one_object(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al, bea, ch = await talking(p)
        drain(bea, ch.session_id)
        box = bea.ensure_channel_inbox(ch.session_id)
        assert len(box) == 0
        assert bea.ensure_channel_inbox(ch.session_id) is box
        # A wait that ran while it was empty does not detach it from the deliveries.
        with pytest.raises(TimeoutError):
            await bea.wait_for_channel_event(
                channel_id=ch.session_id, predicate=said("never"), timeout=1
            )
        await al.send(ch.session_id, "still here")
        await p.settle()
        assert texts(box.take_all()) == ["still here"]
        # Discarding an empty inbox closes it (it was left open before).
        bea.discard_channel_inbox(ch.session_id)
        assert box.closed
