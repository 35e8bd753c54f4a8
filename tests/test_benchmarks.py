"""The benchmarks still run (at a tiny size) and their runner finds them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from benchmarks import bench_cluster, bench_hub, bench_kernel, bench_store, bench_turns
from benchmarks.__main__ import available, run
from troupe import InboxBlock, LimitsBlock, MemoryStore, Rule


def test_every_bench_module_is_found() -> None:
    assert {"kernel", "store", "hub", "turns", "cluster"} <= set(available())


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


def test_the_kernel_benchmark_interleaves_troupe_and_bare_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order: list[str] = []

    async def ours(n: int) -> float:
        order.append("troupe")
        return 1.0

    async def theirs(n: int) -> float:
        order.append("bare")
        return 2.0

    assert bench_kernel._interleaved(ours, theirs, 1, 3) == (1.0, 2.0)
    assert order == ["troupe", "bare"] * 3


def test_the_hub_benchmark_runs_every_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_hub, "ENDPOINT_POSTS", 5)
    tiny = ["--posts", "3", "--flood-posts", "4", "--sessions", "2", "--repeats", "1"]
    bench_hub.main([*tiny, "--every-endpoint-engine"])
    out = capsys.readouterr().out
    assert "agent path: 2 conversations" in out
    assert "raw trio skeleton" in out
    assert "AgentClients, memory" in out
    assert "AgentClients, sqlite FULL" in out
    assert "us CPU/envelope" in out
    assert "x raw (target 0.3x" in out
    assert "flood: 2 people x 4 posts" in out
    assert "acking endpoints" in out
    assert "endpoints, sqlite FULL, cur50" in out


async def test_the_agent_path_and_its_raw_skeleton_answer_every_post() -> None:
    run = await bench_hub.agent_run(MemoryStore(), posts=3, sessions=2)
    assert run.turns_per_s > 0
    assert run.cpu_us_per_envelope > 0
    for turn_taking in (True, False):
        raw = await bench_hub.raw_path_run(3, turn_taking=turn_taking, sessions=2)
        assert raw.turns_per_s > 0


async def test_a_flood_past_the_inbox_cap_is_reported_not_raised() -> None:
    # Small, with a tiny cap and overflow="reject": the refusal is the outcome.
    capped = Rule(limits=LimitsBlock(inbox=InboxBlock(max_pending=2, overflow="reject")))
    run = await bench_hub.agent_flood(posts=50, sessions=2, rule=capped)
    assert not run.completed
    assert run.ending is not None
    assert run.ending.startswith("InboxFull")
    assert run.posts_accepted < 100


async def test_a_flood_past_a_blocking_cap_completes() -> None:
    # The default overflow ("block"): the people wait for room, every post is answered.
    capped = Rule(limits=LimitsBlock(inbox=InboxBlock(max_pending=2)))
    run = await bench_hub.agent_flood(posts=50, sessions=2, rule=capped)
    assert run.ending is None
    assert (run.posts_accepted, run.answers_received) == (100, 100)


async def test_a_flood_within_the_cap_completes() -> None:
    run = await bench_hub.agent_flood(posts=5, sessions=2)
    assert run.completed
    assert (run.posts_accepted, run.answers_received) == (10, 10)


def test_the_turns_benchmark_reports_both_windows_and_their_ratio(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench_turns.main(["--low", "5", "--high", "20", "--window", "3"])
    out = capsys.readouterr().out
    assert "turn at seq      5:" in out
    assert "turn at seq     20:" in out
    assert "ratio seq 20 / seq 5:" in out


def test_the_store_replay_baseline_reads_the_same_rows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(bench_store, "REPLAY", 2000)
    path = tmp_path / "replay.db"
    bench_store.fill(path, "big")
    assert bench_store.replay_raw(path, "big") > 0
    assert bench_store.replay_troupe(path, "big") > 0


@pytest.mark.slow
def test_the_cluster_benchmark_posts_through_every_set_up(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TROUPE_BENCH_POSTGRES", raising=False)
    monkeypatch.setenv("TROUPE_TEST_POSTGRES", pg_dsn)
    bench_cluster.main(["--posters", "3", "--posts", "2", "--repeats", "1", "--kills", "0"])
    out = capsys.readouterr().out
    for setup in ("1 node(s), PostgreSQL", "3 node(s), PostgreSQL", "1 node, SQLite"):
        assert f"posts/s  {setup}" in out
    assert "xids/post" in out


def test_the_cluster_report_gives_ratios_to_one_node_and_the_takeover_spread() -> None:
    one = bench_cluster.SetUp("1 node(s), PostgreSQL", [], rates=[100.0, 200.0, 300.0])
    one.xids = [0.5, 0.25, 1.0]
    lite = bench_cluster.SetUp("1 node, SQLite", [], rates=[400.0, 400.0, 400.0])
    lines = bench_cluster.report([one, lite], [6.0, 7.0, 6.5], posters=2, posts=3)
    assert "200  (1.00x one PostgreSQL node)  xids/post 0.50" in lines[1]
    assert "400  (2.00x one PostgreSQL node)  xids/post -" in lines[2]
    assert "min 6.00 s, median 6.50 s, max 7.00 s (bound lease + tick + 1 s = 8.0 s)" in lines[3]


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
