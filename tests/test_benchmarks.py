"""The benchmark runner finds the benchmark modules and refuses unknown names."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import available, run


def test_every_bench_module_is_found() -> None:
    assert "store" in available()


def test_an_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["no-such-bench"]) == 2
    assert "unknown benchmark(s): no-such-bench" in capsys.readouterr().out
