"""Opening and closing a store, and ``open_store``."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import troupe
from troupe.hub import open_hub
from troupe.store import MemoryStore, SQLiteStore, Store, open_store
from troupe.store._open import STORE_METHODS

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


async def test_the_body_exception_comes_out_unwrapped(reopen: Reopen) -> None:
    async def fail_inside() -> None:
        async with reopen() as store:
            await store.append("s1", [env("s1", 1)])
            raise KeyError("from the body")

    # Not wrapped in an ExceptionGroup by the store's nursery.
    with pytest.raises(KeyError, match="from the body"):
        await fail_inside()
    async with reopen() as store:
        assert await store.last_seq("s1") == 1


def test_open_store_picks_the_engine(tmp_path: Path) -> None:
    assert isinstance(open_store(None), MemoryStore)
    assert open_store(None) is not open_store(None)
    by_str = open_store(str(tmp_path / "a.db"))
    assert isinstance(by_str, SQLiteStore)
    assert by_str.path == tmp_path / "a.db"
    assert by_str.synchronous == "FULL"
    assert by_str.threaded
    by_path = open_store(tmp_path / "b.db")
    assert isinstance(by_path, SQLiteStore)
    assert by_path.path == tmp_path / "b.db"
    memory = MemoryStore()
    assert open_store(memory) is memory
    sqlite = SQLiteStore(tmp_path / "c.db", threaded=False)
    assert open_store(sqlite) is sqlite


def _store_without(*lacking: str) -> object:
    """A store as one written for an older troupe: MemoryStore's methods but ``lacking``."""
    methods = {name: getattr(MemoryStore, name) for name in STORE_METHODS if name not in lacking}
    init = MemoryStore.__init__
    return type("OldStore", (), {**methods, "__init__": init})()


async def test_a_store_without_every_method_is_refused_when_the_hub_opens() -> None:
    """A store lacking methods of the protocol (``save_cursors`` and ``idempotency_keys``
    came with issue 15) is refused by name before the hub starts: it used to be taken, and
    the first actor to call one of them failed mid-run with an AttributeError."""
    old = _store_without("save_cursors", "idempotency_keys")
    expected = r"OldStore is not a troupe Store: it has no idempotency_keys, save_cursors \("
    with pytest.raises(TypeError, match=expected):
        open_store(old)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=expected):
        async with open_hub(old):  # type: ignore[arg-type]
            pass
    complete = _store_without()
    assert open_store(complete) is complete  # type: ignore[arg-type]


def test_the_engines_are_exported_at_the_top() -> None:
    assert troupe.MemoryStore is MemoryStore
    assert troupe.SQLiteStore is SQLiteStore


async def test_two_tasks_entering_at_once_one_is_refused(reopen: Reopen) -> None:
    store = reopen()
    refused, release = trio.Event(), trio.Event()
    entered: list[str] = []
    errors: list[str] = []

    async def enter(name: str) -> None:
        try:
            async with store:
                entered.append(name)
                await release.wait()
        except troupe.StoreError as exc:
            errors.append(str(exc))
            refused.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(enter, "first")
            nursery.start_soon(enter, "second")
            await refused.wait()
            release.set()
    assert len(entered) == 1
    assert len(errors) == 1
    assert "already open" in errors[0]
