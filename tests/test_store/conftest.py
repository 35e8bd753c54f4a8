"""Every behavioural store test runs against every engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from troupe.store import MemoryStore, Store

#: Makes a Store over the same data each time it is called (a hub restart on one store).
Reopen = Callable[[], Store]


@pytest.fixture(params=["memory"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Reopen:
    memory = MemoryStore()
    makers: dict[str, Reopen] = {"memory": lambda: memory}
    return makers[request.param]


@pytest.fixture
async def store(reopen: Reopen) -> AsyncIterator[Store]:
    async with reopen() as opened:
        yield opened
