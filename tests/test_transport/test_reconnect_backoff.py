"""The reconnect loop's schedule: exponential backoff with full jitter, within a deadline."""

from __future__ import annotations

import itertools
import re
import socket
from typing import Any

import pytest
import trio
import trio.testing

from troupe import ConnectionLost, HubClient
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
    assert trio.current_time() == pytest.approx(30.0, abs=5.0)
    assert len(link.attempts) > 6  # it kept trying until the deadline
    assert max(gaps(link.attempts)) <= 5.0 + 1e-9


async def test_a_seeded_client_backs_off_on_the_same_schedule_every_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    schedules = []
    for _ in range(2):
        client = HubClient(WsLink("ws://127.0.0.1:9"), reconnect_within=600.0, reconnect_seed=7)
        link = RefusingLink(refusals=8)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            await client._connect(link, nursery)  # type: ignore[arg-type]
        schedules.append([t - start for t in link.attempts])
    assert schedules[0] == pytest.approx(schedules[1], abs=1e-9)
    other = HubClient(WsLink("ws://127.0.0.1:9"), reconnect_within=600.0, reconnect_seed=8)
    link = RefusingLink(refusals=8)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await other._connect(link, nursery)  # type: ignore[arg-type]
    assert [t - start for t in link.attempts] != pytest.approx(schedules[0], abs=1e-9)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://127.0.0.1:8765", "a hub URL starts with ws: or wss:, got 'http://127.0.0.1:8765'"),
        ("notaurl", "a hub URL starts with ws: or wss:, got 'notaurl'"),
        ("ws://", "no host in hub URL 'ws://'"),
    ],
)
def test_a_bad_url_is_a_plain_value_error_at_once(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)) as info:
        WsLink(url)
    assert type(info.value) is ValueError  # not an ExceptionGroup wrapping it
    assert str(info.value) == complaint


async def test_the_first_connection_to_a_dead_address_fails_at_once_with_the_reason() -> None:
    # Nothing listens on a port we just had bound and closed: refused at once. Before, the
    # client retried for reconnect_within (60 s), then said "could not reach ...: ".
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"ws://127.0.0.1:{port}"
    start = trio.current_time()
    with pytest.raises(ConnectionLost) as info:
        async with HubClient(WsLink(url)):
            pass  # pragma: no cover
    assert trio.current_time() - start < 5.0
    message = str(info.value)
    assert message.startswith(f"could not reach {url}: ")
    assert message.endswith(": Connection refused)"), message  # the reason, not only "failed"
