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
    monkeypatch.setattr(bench_wire, "RPCS", 4)
    monkeypatch.setattr(bench_wire, "PIPELINED", 6)
    bench_wire.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("stream: 2 posters -> 1 sink, 10 texts")
    assert lines[2].startswith("echo: 3 ask/answer round trips")
    assert lines[3].startswith("rpc: 4 get_session calls in a row")
    for line in lines[1:]:
        assert "LocalLink" in line
        assert "WebSocket" in line
        assert "ratio ws/local" in line
    # The raw trio-websocket floor is measured in the same run, next to stream and rpc.
    assert "raw trio-websocket pipelined floor" in lines[1]
    assert "raw trio-websocket rpc floor" in lines[3]
    assert "ratio ws/floor" in lines[3]


async def test_the_raw_floor_answers_every_message() -> None:
    assert await bench_wire.raw_floor("rpc", 3) > 0
    assert await bench_wire.raw_floor("pipelined", 5) > 0
