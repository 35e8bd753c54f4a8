"""The reconnect loop's schedule: exponential backoff with full jitter, within a deadline."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing

from troupe import HubClient
from troupe.transport import WsLink


class RefusingLink:
    """A link whose first ``refusals`` connects fail; it notes when each attempt came."""

    def __init__(self, refusals: int | None) -> None:
        self.refusals = refusals
        self.attempts: list[float] = []

    async def connect(self, nursery: trio.Nursery) -> Any:
        self.attempts.append(trio.current_time())
        if self.refusals is None or len(self.attempts) <= self.refusals:
            raise OSError("connection refused")
        return "connected"


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_attempts_back_off_exponentially_with_full_jitter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = HubClient(WsLink("ws://127.0.0.1:9"), reconnect_within=600.0)
    links = [RefusingLink(refusals=9) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        for link in links:
            connected: object = await client._connect(link, nursery)  # type: ignore[arg-type]
            assert connected == "connected"
    for link in links:
        assert len(link.attempts) == 10
        # The n-th wait is drawn from [0, 0.05 s * 2**n], capped at 5 s.
        for n, gap in enumerate(gaps(link.attempts), start=1):
            assert 0 <= gap <= min(5.0, 0.05 * 2**n) + 1e-9, (n, gap)
    # Full jitter: clients dropped together do not retry in step.
    assert len({tuple(gaps(link.attempts)) for link in links}) == 3


async def test_it_gives_up_after_reconnect_within(autojump_clock: trio.testing.MockClock) -> None:
    client = HubClient(WsLink("ws://127.0.0.1:9"), reconnect_within=30.0)
    link = RefusingLink(refusals=None)
    async with trio.open_nursery() as nursery:
        # Out of time, it raises what the last attempt ran into (not a bare TooSlowError).
        with pytest.raises(OSError, match="connection refused"):
            await client._connect(link, nursery)  # type: ignore[arg-type]
    assert trio.current_time() == pytest.approx(30.0)
    assert len(link.attempts) > 6  # it kept trying until the deadline
    assert max(gaps(link.attempts)) <= 5.0 + 1e-9
