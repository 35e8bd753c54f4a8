"""The wire benchmark runs (at a tiny size) and prints both transports and their ratio."""

from __future__ import annotations

import functools

import pytest
import trio

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
    for line in lines[1:4]:
        assert "LocalLink" in line
        assert "WebSocket" in line
        assert "ratio ws/local" in line
    # The raw trio-websocket floor is measured in the same run, next to stream and rpc.
    assert "raw trio-websocket pipelined floor" in lines[1]
    assert "raw trio-websocket rpc floor" in lines[3]
    assert "ratio ws/floor" in lines[3]
    # The stream through a troupe serve process against in process, both on SQLite.
    assert lines[4].startswith("serve: the stream on SQLite")
    assert "ratio serve/in-process" in lines[4]
    # Both floors again through a trio driver of websockets' sans-I/O protocol.
    assert lines[5].startswith("driver rpc")
    assert lines[6].startswith("driver pipelined")
    for line in lines[5:]:
        assert "ratio websockets/trio-websocket" in line


async def test_the_raw_floor_answers_every_message() -> None:
    assert await bench_wire.raw_floor("rpc", 3) > 0


@pytest.mark.parametrize("kind", ["rpc", "pipelined"])
async def test_the_sans_io_driver_answers_every_message(kind: str) -> None:
    assert await bench_wire.raw_floor_sans_io(kind, 5) > 0  # type: ignore[arg-type]


async def test_the_sans_io_driver_reassembles_fragments_and_answers_pings() -> None:
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, bench_wire._answer_each_sans_io, 0, host="127.0.0.1")
        )
        ws = await bench_wire.SansIOWebSocket.connect("127.0.0.1", listener.socket.getsockname()[1])
        ws.protocol.send_text(b"hel", fin=False)
        ws.protocol.send_continuation(b"lo", fin=True)
        ws.protocol.send_ping(b"are you there")
        await ws._write()
        with trio.fail_after(5):
            assert await ws.get_message() == "hello"
        await trio.aclose_forcefully(ws.stream)
        nursery.cancel_scope.cancel()
    assert await bench_wire.raw_floor("pipelined", 5) > 0
