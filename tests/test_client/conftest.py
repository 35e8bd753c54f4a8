"""Every client test runs on trio's MockClock with autojump: timeouts cost no real time."""

from __future__ import annotations

import pytest
import trio.testing


@pytest.fixture(autouse=True)
def _virtual_time(autojump_clock: trio.testing.MockClock) -> trio.testing.MockClock:
    return autojump_clock
