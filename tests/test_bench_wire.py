"""The wire benchmark runs (at a tiny size) and prints both transports and their ratio."""

from __future__ import annotations

import pytest

from benchmarks import bench_wire
from benchmarks.__main__ import available


def test_it_is_found_by_the_runner() -> None:
    assert "wire" in available()


def test_a_tiny_run_prints_rates_and_ratios(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_wire, "REPEATS", 1)
    monkeypatch.setattr(bench_wire, "POSTERS", 2)
    monkeypatch.setattr(bench_wire, "POSTS", 5)
    monkeypatch.setattr(bench_wire, "ROUND_TRIPS", 3)
    bench_wire.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("stream: 2 posters -> 1 sink, 10 texts")
    assert lines[2].startswith("echo: 3 ask/answer round trips")
    for line in lines[1:]:
        assert "LocalLink" in line
        assert "WebSocket" in line
        assert "ratio ws/local" in line
