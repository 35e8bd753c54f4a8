"""Issue 13 item 8, in process: an identity is bound to one live connection at a time."""

from __future__ import annotations

import pytest
from trio.testing import MockClock

from troupe import EV_TEXT, IdentityInUse

from ..harness import from_, of_type, open_hub_pair


async def test_a_live_binding_is_not_taken_by_another_connection(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        first = p.client()
        bob = await p.human("bob", hc=first)
        ann = await p.human("ann")
        ch = await ann.open(type="conversation", target="bob")
        second = p.client()
        with pytest.raises(IdentityInUse, match=f"'bob' \\({bob.agent_id}\\) is bound to another"):
            await second.attach(None, "bob")
        assert second.identities() == []
        assert (
            p.hub.core.bindings[bob.agent_id] is p.hub.core.connections[first.endpoint_id or ""].ref
        )
        # bob's own connection still gets what is his.
        await ann.send(ch.session_id, "still yours")
        got = await bob.wait_for_channel_event(
            channel_id=ch.session_id, predicate=of_type(EV_TEXT), timeout=5
        )
        assert got.text == "still yours"
        await second.close()
        await first.close()


async def test_a_closed_connection_holds_nothing(autojump_clock: MockClock) -> None:
    # The client that closed may come back at once, before the hub has torn the old
    # connection down: its transport is closed, so it holds nothing.
    async with open_hub_pair() as p:
        first = p.client()
        bob = await p.human("bob", hc=first)
        ann = await p.human("ann")
        ch = await ann.open(type="conversation", target="bob")
        await first.close()
        second = p.client()
        again = await second.attach(None, "bob")
        await ann.send(ch.session_id, "welcome back")
        got = await again.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(ann), timeout=5
        )
        assert (got.text, again.agent_id) == ("welcome back", bob.agent_id)
        await second.close()
