"""Issue 15 item 2 over the wire: a turn asks the hub nothing before ``respond``.

Deliveries carry the session's status (its metadata and the session type's state, dumped to
JSON); the client loads it with its session type and decides the turn from it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio

from troupe import EV_TEXT, HubClient, Passport, SessionState
from troupe.api import Request
from troupe.client._remote import RemoteHub
from troupe.model import Frame, NotifyFrame

from ._wire import Echo, serving, wait_until


def _spy(hc: HubClient, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the requests ``hc`` sends over its connection, by record type."""
    api = hc._api
    assert isinstance(api, RemoteHub)
    asked: Counter[str] = Counter()
    call = api.call

    async def counted(request: Request[Any]) -> Any:
        asked[type(request).__name__] += 1
        return await call(request)

    monkeypatch.setattr(api, "call", counted)
    return asked


async def test_a_turn_over_the_wire_asks_nothing_but_to_post(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with trio.fail_after(30):
        async with (
            serving() as served,
            HubClient(served.link()) as agents,
            HubClient(served.link()) as people,
        ):
            echo = Echo()
            bob = await agents.register(echo, Passport(name="bob"))
            al = await people.register_human(Passport(name="al"))
            ch = await al.open(type="conversation", target="bob", knobs={"max_turns": None})
            # The session's opening deliveries (the first carries its metadata) reach bob's
            # client before the spy: whether they came before ``open`` returned is the
            # transport's timing, not what this test is about.
            opened = served.hub.core.directory.sessions[ch.session_id].last_seq

            def caught_up() -> bool:
                status = agents.session_status(ch.session_id)
                return status is not None and status.last_seq >= opened

            await wait_until(caught_up)
            asked = _spy(agents, monkeypatch)
            with_metadata: list[NotifyFrame] = []
            on_frame = agents._on_frame

            def seen(frame: Frame) -> None:
                if isinstance(frame, NotifyFrame) and frame.session is not None:
                    if frame.session.metadata is not None:
                        with_metadata.append(frame)
                on_frame(frame)

            monkeypatch.setattr(agents, "_on_frame", seen)
            for i in range(20):
                await al.send(ch.session_id, f"m{i}")
                await al.wait_for_channel_event(
                    channel_id=ch.session_id,
                    predicate=lambda e: e.event_type == EV_TEXT and e.sender_id == bob.agent_id,
                    timeout=10,
                )
            assert echo.heard == [f"m{i}" for i in range(20)]
            # One post per turn; the person's name was learnt once, for the history.
            assert asked - Counter({"NamesFor": 1}) == {"PostEnvelope": 20}
            status = agents.session_status(ch.session_id)
            assert status is not None
            assert status.metadata is not None
            assert status.metadata.state is SessionState.ACTIVE
            # The metadata did not change after the session opened: it was not sent again.
            assert with_metadata == []
            # Loaded with the session type (not left as the JSON it travelled as).
            assert type(status.state) is type(served.hub.session_state(ch.session_id))
