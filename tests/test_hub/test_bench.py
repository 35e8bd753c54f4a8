"""The hub benchmark's acking-endpoint rows run (tiny): every post is delivered and acked."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bench_hub
from benchmarks.__main__ import available
from troupe.store import MemoryStore, SQLiteStore


async def test_the_hub_benchmark_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "hub" in available()
    monkeypatch.setattr(bench_hub, "ENDPOINT_POSTS", 5)
    memory = await bench_hub.endpoint_run(MemoryStore())
    assert memory.posts_per_s > 0
    assert memory.commits_per_post is None
    sqlite = await bench_hub.endpoint_run(SQLiteStore(tmp_path / "bench.db", synchronous="OFF"))
    assert sqlite.commits_per_post is not None
    assert 0 < sqlite.commits_per_post <= 2
    assert await bench_hub.endpoint_raw_run() > 0
