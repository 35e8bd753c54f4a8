"""Session types added to a running hub with ``register_session_type``."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe import NotFoundError, ProtocolError
from troupe.model import Envelope
from troupe.session_types import ConversationState, ConversationType

from ..harness import HubPair


class Chat(ConversationType):
    name = "chat"


class PoliteChat(Chat):
    """A later version of chat that refuses texts without a "please"."""

    version = 2

    def check_turn(self, metadata: object, envelope: Envelope, state: object) -> None:
        if "please" not in (envelope.text or ""):
            raise ProtocolError("say please")


async def test_a_type_registered_at_runtime_opens_sessions_from_then_on(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    with pytest.raises(NotFoundError, match=r"no session type registered for chat@v1"):
        await h.hub.create_session(creator_id=alice.id, manifest_type="chat", participants=[bob.id])
    h.hub.register_session_type(Chat())
    h.hub.register_session_type(PoliteChat())
    v1 = await h.session("chat", alice, bob)
    v2 = await h.session("chat", alice, bob, manifest_version=2)
    assert (v1.manifest_version, v2.manifest_version) == (1, 2)
    await h.say(v1, alice, "hi")
    with pytest.raises(ProtocolError, match="say please"):
        await h.say(v2, alice, "hi")
    await h.say(v2, alice, "hi, please")
    for md in (v1, v2):
        state = h.hub.session_state(md.session_id)
        assert isinstance(state, ConversationState)
        assert state.turn_count == 1
