"""``hub.statistics()``: exact counts after a known sequence."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe import NetworkError, NotFoundError, ProtocolError
from troupe.hub import Hub

from .helpers import Harness, text_envelope


async def test_posts_accepted_refused_and_repeated_are_counted_exactly(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: Harness
) -> None:
    alice, bob, carol = await h.agent("alice"), await h.agent("bob"), await h.agent("carol")
    md = await h.session("conversation", alice, bob)  # invite, ack, opened
    sid = md.session_id
    await h.say(md, alice, "one")
    await h.say(md, bob, "two", idempotency_key="k")
    assert (await hub.post(text_envelope(md, bob, "two", idempotency_key="k"))).duplicate
    refusals: list[tuple[str, type[NetworkError]]] = [
        (carol.id, ProtocolError),  # not a participant: the session actor refuses it
        ("ghost", NotFoundError),  # not registered: refused before the session is asked
    ]
    for sender, error in refusals:
        with pytest.raises(error):
            await hub.post_envelope(text_envelope(md, sender))
    with pytest.raises(NotFoundError):
        await hub.post_envelope(text_envelope("no-such-session", alice))
    h.faults.arm("before_append", sid, times=2)
    with pytest.raises(ProtocolError, match="poison"):
        await h.say(md, alice, "poison")  # crashed the session twice: refused once
    await hub.close_session(sid)  # the closing notice is appended too
    with pytest.raises(ProtocolError, match="closed"):
        await h.say(md, alice, "too late")  # an ended session has no actor: refused before
    stats = hub.statistics()
    assert len(await hub.read_wal(sid)) == 6
    assert (stats.envelopes_accepted, stats.envelopes_rejected, stats.duplicates) == (6, 5, 1)
    assert (stats.session_restarts, stats.poison_envelopes, stats.sessions_crashed) == (2, 1, 0)
