"""Opening and closing a store, and ``open_store``."""

from __future__ import annotations

import pytest

import troupe
from troupe.store import Store

from .conftest import Reopen
from .factories import env


async def test_a_store_must_be_entered_before_use(reopen: Reopen) -> None:
    store = reopen()
    with pytest.raises(troupe.StoreError, match="not open"):
        await store.last_seq("s1")
    async with store:
        await store.append("s1", [env("s1", 1)])
    with pytest.raises(troupe.StoreError, match="not open"):
        await store.append("s1", [env("s1", 2)])


async def test_a_store_cannot_be_entered_twice_at_once(store: Store) -> None:
    with pytest.raises(troupe.StoreError, match="already open"):
        async with store:
            pass
    # The failed entry did not close the store that was open.
    await store.append("s1", [env("s1", 1)])
    assert await store.last_seq("s1") == 1


async def test_a_store_can_be_entered_again_after_leaving(reopen: Reopen) -> None:
    store = reopen()
    for seq in (1, 2, 3):
        async with store:
            await store.append("s1", [env("s1", seq)])
    async with store:
        assert [e.seq for e in await store.read("s1")] == [1, 2, 3]
