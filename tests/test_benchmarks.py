"""The benchmarks still run (at a tiny size) and their runner finds them."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from benchmarks import bench_kernel
from benchmarks.__main__ import available, run


def test_every_bench_module_is_found() -> None:
    assert {"kernel", "store"} <= set(available())


def test_an_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["no-such-bench"]) == 2
    assert "unknown benchmark(s): no-such-bench" in capsys.readouterr().out


def test_the_kernel_benchmark_measures_and_reports() -> None:
    figures = bench_kernel.measure(tell_n=200, ask_n=100, idle_n=20, repeats=1)
    assert [f.name for f in figures] == ["tell", "ask", "idle actor"]
    assert all(f.troupe > 0 and f.bare > 0 for f in figures)
    table = bench_kernel.report(figures, repeats=1)
    assert "tell" in table
    assert "idle actor" in table


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        (["kernel", "--repeats", "1"], "the kernel benchmark takes no options; got --repeats 1"),
        (["kernel", "sim", "--agents", "1"], "options go after the one benchmark they are for"),
        (["--agents", "1", "sim"], "options go after the one benchmark they are for"),
    ],
)
def test_options_go_to_the_one_benchmark_that_takes_them(
    capsys: pytest.CaptureFixture[str], args: list[str], refusal: str
) -> None:
    assert run(args) == 2
    assert refusal in capsys.readouterr().out


def test_options_after_a_name_reach_its_main(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import bench_sim

    seen: list[Sequence[str] | None] = []
    monkeypatch.setattr(bench_sim, "main", lambda argv=None: seen.append(argv))
    assert run(["sim", "--sessions-passivated", "1000000"]) == 0
    assert seen == [["--sessions-passivated", "1000000"]]
