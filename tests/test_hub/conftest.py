"""Fixtures of the hub tests: a running hub on a MemoryStore (see ``helpers``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from troupe.hub import Hub

from .helpers import Harness, open_harness


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    """A hub on a fresh MemoryStore, sweeper off, with fake clients (see ``Harness``)."""
    async with open_harness() as harness:
        yield harness


@pytest.fixture
async def hub(h: Harness) -> Hub:
    """The harness's hub."""
    return h.hub
