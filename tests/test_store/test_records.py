"""Tasks, checkpoints, delivery cursors, keyed records and the audit log, on every engine."""

from __future__ import annotations

from typing import Any

import pytest

import troupe
from troupe.model import TaskState
from troupe.store import Store

from .conftest import Reopen
from .factories import task


async def test_tasks_load_in_first_saved_order(store: Store) -> None:
    await store.save_task(task("t2"))
    await store.save_task(task("t1", result={"answer": [42]}))
    done = task("t2", state=TaskState.COMPLETED, completed_at="t9", error=None)
    await store.save_task(done)
    assert await store.load_tasks() == [done, task("t1", result={"answer": [42]})]


async def test_checkpoints_last_write_wins(store: Store) -> None:
    assert await store.load_checkpoint("t1") is None
    await store.save_checkpoint("t1", {"step": 1})
    data: dict[str, Any] = {"step": 2, "seen": ["a"]}
    await store.save_checkpoint("t1", data)
    data["seen"].append("changed after saving")
    assert await store.load_checkpoint("t1") == {"step": 2, "seen": ["a"]}
    with pytest.raises(troupe.StoreError, match="checkpoint of task 't1' is not JSON"):
        await store.save_checkpoint("t1", {"bad": object()})
    assert await store.load_checkpoint("t1") == {"step": 2, "seen": ["a"]}


async def test_cursors_never_move_back(store: Store) -> None:
    await store.save_cursors([("a", "s1", 5)])
    await store.save_cursors([("a", "s1", 3), ("a", "s2", 1), ("b", "s1", 9)])
    assert await store.load_cursors("a") == {"s1": 5, "s2": 1}
    await store.save_cursors([("a", "s1", 6)])
    assert (await store.load_cursors("a"))["s1"] == 6
    assert await store.load_cursors("nobody") == {}


async def test_cursors_saved_together_keep_each_ones_highest(store: Store) -> None:
    # One write for several cursors, the same one more than once (PostgreSQL's upsert may
    # not touch a row twice in one statement), none moving back; nothing to save is fine.
    await store.save_cursors([("a", "s1", 4)])
    await store.save_cursors([("a", "s1", 2), ("a", "s1", 7), ("a", "s1", 5), ("a", "s2", 3)])
    await store.save_cursors([])
    assert await store.load_cursors("a") == {"s1": 7, "s2": 3}


async def test_kv_namespaces(store: Store) -> None:
    await store.put_kv("dedup", "k2", {"at": 2})
    await store.put_kv("dedup", "k1", [1, "x"])
    await store.put_kv("other", "k1", None)
    await store.put_kv("dedup", "k2", "replaced")
    assert await store.load_kv("dedup") == {"k1": [1, "x"], "k2": "replaced"}
    assert list(await store.load_kv("dedup")) == ["k1", "k2"]
    await store.delete_kv("dedup", "k1")
    await store.delete_kv("dedup", "missing")
    assert await store.load_kv("dedup") == {"k2": "replaced"}
    await store.delete_kv("dedup")
    assert await store.load_kv("dedup") == {}
    assert await store.load_kv("other") == {"k1": None}
    with pytest.raises(troupe.StoreError, match="kv value 'other'/'k9' is not JSON"):
        await store.put_kv("other", "k9", 2**80)
    assert await store.load_kv("other") == {"k1": None}


async def test_audit_log_pages(store: Store) -> None:
    records = [{"at": f"t{n}", "kind": "agent_registered", "agent_id": f"a{n}"} for n in range(5)]
    await store.append_audit(records[:2])
    await store.append_audit(records[2:])
    await store.append_audit([])
    assert await store.read_audit() == records
    assert await store.read_audit(since=3) == records[3:]
    assert await store.read_audit(since=1, limit=2) == records[1:3]
    assert await store.read_audit(limit=0) == []
    assert await store.read_audit(since=10) == []


@pytest.mark.parametrize(
    "bad", [{"kind": "x"}, {"at": "t"}, ["at", "kind"], {"at": "t", "kind": "k", "x": object()}]
)
async def test_bad_audit_records_write_nothing(store: Store, bad: object) -> None:
    good = {"at": "t0", "kind": "ok"}
    with pytest.raises(troupe.StoreError, match="audit record"):
        await store.append_audit([good, bad])  # type: ignore[list-item]
    assert await store.read_audit() == []


@pytest.mark.parametrize(("since", "limit"), [(-1, None), (0, -1)])
async def test_negative_audit_windows_are_refused(
    store: Store, since: int, limit: int | None
) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        await store.read_audit(since, limit)


async def test_records_survive_a_restart(reopen: Reopen) -> None:
    async with reopen() as store:
        await store.save_task(task("t1"))
        await store.save_checkpoint("t1", {"step": 3})
        await store.save_cursors([("a", "s1", 4)])
        await store.put_kv("ns", "k", {"v": 1})
        await store.append_audit([{"at": "t0", "kind": "k"}])
    async with reopen() as store:
        assert await store.load_tasks() == [task("t1")]
        assert await store.load_checkpoint("t1") == {"step": 3}
        assert await store.load_cursors("a") == {"s1": 4}
        assert await store.load_kv("ns") == {"k": {"v": 1}}
        assert await store.read_audit() == [{"at": "t0", "kind": "k"}]
