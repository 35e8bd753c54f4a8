"""The hub keeps its long-lived bulk out of the collector's scans (issue 15, item 7).

No timing here: whether an object is frozen is read from the collector (a frozen object is
in no generation, so ``gc.get_objects()`` does not list it), and what a full collection costs
is the number of objects it has to scan, read through ``gc.callbacks`` as it starts.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from trio.testing import MockClock

from troupe import Passport, open_hub
from troupe.hub import _gc
from troupe.store import MemoryStore, SQLiteStore

from ..harness import open_hub_pair

QUIET: dict[str, Any] = {"ttl_sweep_interval": 0, "expectation_sweep_interval": 0}


@pytest.fixture(autouse=True)
def nothing_frozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def sqlite(path: Path) -> SQLiteStore:
    return SQLiteStore(path, synchronous="NORMAL", threaded=False)


def frozen(obj: object) -> bool:
    assert gc.is_tracked(obj)
    return not any(o is obj for o in gc.get_objects())


@contextmanager
def full_collections() -> Iterator[list[int]]:
    """The objects each full collection in the block had to scan, in order.

    The collector runs more often than by default (a full collection is considered every
    1,000 objects allocated and kept, not 70,000), so that a few thousand agents show what
    100k show at the default thresholds.
    """
    scanned: list[int] = []
    thresholds = gc.get_threshold()

    def started(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            scanned.append(sum(len(gc.get_objects(generation=g)) for g in range(3)))

    gc.callbacks.append(started)
    gc.set_threshold(100, 5, 2)
    try:
        yield scanned
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks.remove(started)


async def register_many(n: int, *, gc_freeze: bool) -> tuple[list[int], int]:
    """Register ``n`` agents; the full collections meanwhile, and the objects they added.

    What the test run made before is frozen first, as an application may do, so that the
    collector starts from the same (empty) oldest generation whatever ran before.
    """
    gc.collect()
    gc.freeze()
    gc.collect()
    async with open_hub(MemoryStore(), gc_freeze=gc_freeze, **QUIET) as hub:
        before = len(gc.get_objects()) + gc.get_freeze_count()
        with full_collections() as scanned:
            for i in range(n):
                await hub.register(Passport(name=f"a{i}"))
        added = len(gc.get_objects()) + gc.get_freeze_count() - before
    gc.unfreeze()
    return scanned, added


async def test_full_collections_scan_only_what_came_since_the_last_freeze(
    autojump_clock: MockClock,
) -> None:
    n = 24 * _gc.FREEZE_EVERY
    plain, added = await register_many(n, gc_freeze=False)
    freezing, _ = await register_many(n, gc_freeze=True)
    per_agent = added / n
    # Without freezing, the collections that ran walked the agents registered so far.
    assert plain, "no full collection ran: the test shows nothing"
    assert max(plain) > n / 2 * per_agent, (plain, per_agent)
    # With it, each walks at most what came since the last freeze.
    assert freezing, "no full collection ran: the test shows nothing"
    assert max(freezing) < 2 * _gc.FREEZE_EVERY * per_agent, (freezing, per_agent)


async def test_what_the_hub_loads_at_open_is_frozen(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "hub.db"
    async with open_hub(sqlite(path), **QUIET) as hub:
        ids = [(await hub.register(Passport(name=f"a{i}"))).agent_id for i in range(3)]
    assert gc.get_freeze_count() == 0  # the last hub out unfroze what it froze
    async with open_hub(sqlite(path), **QUIET) as hub:
        assert gc.get_freeze_count() > 0
        for agent_id in ids:
            assert agent_id is not None
            assert frozen(hub.core.registry.record(agent_id))
    assert gc.get_freeze_count() == 0


async def test_a_bulk_of_registrations_is_frozen(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_gc, "FREEZE_EVERY", 4)
    async with open_hub(MemoryStore(), **QUIET) as hub:
        gc.unfreeze()  # what the open froze: only the bulk below counts
        passports = [await hub.register(Passport(name=f"a{i}")) for i in range(4)]
        records = [hub.core.registry.record(p.agent_id or "") for p in passports]
        assert all(frozen(r) for r in records)
        later = await hub.register(Passport(name="later"))
        assert not frozen(hub.core.registry.record(later.agent_id or ""))


async def test_sessions_created_in_bulk_are_frozen(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_gc, "FREEZE_EVERY", 10)
    async with open_hub_pair(**QUIET) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        gc.unfreeze()
        monkeypatch.setattr(_gc, "_grown", 0)  # count from here: sessions only
        made = [await h.session("conversation", alice, bob) for _ in range(9)]
        entries = [h.hub.core.directory.get(md.session_id) for md in made]
        assert not any(frozen(e) for e in entries)
        await h.session("conversation", alice, bob)  # the tenth
        assert all(frozen(e) for e in entries)


async def test_opting_out_freezes_nothing(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_gc, "FREEZE_EVERY", 4)
    path = tmp_path / "hub.db"
    async with open_hub(sqlite(path), gc_freeze=False, **QUIET) as hub:
        for i in range(10):
            await hub.register(Passport(name=f"a{i}"))
        assert gc.get_freeze_count() == 0
    async with open_hub(sqlite(path), gc_freeze=False, **QUIET):  # a load, too
        assert gc.get_freeze_count() == 0


async def test_gc_freeze_must_be_a_bool(autojump_clock: MockClock) -> None:
    with pytest.raises(TypeError, match="gc_freeze must be a bool, got 'no'"):
        async with open_hub(MemoryStore(), gc_freeze="no", **QUIET):  # type: ignore[arg-type]
            pass


async def test_what_the_application_froze_stays_frozen(autojump_clock: MockClock) -> None:
    mine: list[list[object]] = [[]]  # a tracked object of the application's
    gc.freeze()
    count = gc.get_freeze_count()
    async with open_hub(MemoryStore(), **QUIET) as hub:
        for i in range(5):
            await hub.register(Passport(name=f"a{i}"))
        assert gc.get_freeze_count() >= count
    assert frozen(mine)
    assert gc.get_freeze_count() >= count  # the hub did not unfreeze the application's


async def test_the_last_of_two_hubs_unfreezes(autojump_clock: MockClock) -> None:
    async with open_hub(MemoryStore(), **QUIET):
        async with open_hub(MemoryStore(), **QUIET):
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() > 0  # the first is still open
    assert gc.get_freeze_count() == 0
