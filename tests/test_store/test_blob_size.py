"""A MemoryStore keeps the JSON it stores at its own size (not orjson's output buffer)."""

from __future__ import annotations

import tracemalloc

from troupe.store import MemoryStore


async def test_audit_records_and_snapshots_cost_about_their_length() -> None:
    async with MemoryStore() as store:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(200):
                await store.append_audit([{"at": "2026-01-01T00:00:00Z", "kind": "k", "i": i}])
                await store.save_snapshot(f"s{i}", 1, {"turn_count": i})
            per_item = (tracemalloc.get_traced_memory()[0] - before) / 400
        finally:
            tracemalloc.stop()
    assert per_item < 512, f"{per_item:.0f} bytes per stored blob"
