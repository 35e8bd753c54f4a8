"""``troupe sim``: run a scenario with a progress bar, then print a summary table.

The progress bar goes to stderr and is redrawn from the harness's progress callback, at
most ten times a second of wall time: no thread and no task of its own, so it cannot change
the order in which a virtual-time run schedules its tasks.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ._harness import WALL_TIME_SCALE, SimOptions
from ._report import SimReport
from ._run import run_sim
from .scenarios import SCENARIOS

PHASES = {"agents": "registering agents", "sessions": "running sessions"}


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text}")
    return value


def add_parser(commands: Any) -> None:
    """Add the ``sim`` command to the ``troupe`` parser's subcommands."""
    listing = "\n".join(
        f"  {s.name:<14} {s.help} (default: {s.agents} agents, {s.sessions} sessions)"
        for s in SCENARIOS.values()
    )
    sim = commands.add_parser(
        "sim",
        help="run a simulation scenario on an embedded hub and print a summary",
        description=(
            "Run a scenario of scripted agents on an embedded hub, with a progress bar, then "
            "print a summary table. Under virtual time (the default) the run is reproducible: "
            "the same seed gives the same WAL, byte for byte (see the WAL hash), and the same "
            "counts."
        ),
        epilog=f"scenarios:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sim.add_argument("scenario", choices=list(SCENARIOS), metavar="SCENARIO", help="what to run")
    sim.add_argument(
        "--agents", type=_positive_int, metavar="N", help="agents to register (default: scenario's)"
    )
    sim.add_argument(
        "--sessions", type=_positive_int, metavar="M", help="sessions to run (default: scenario's)"
    )
    sim.add_argument(
        "--seed", type=int, default=0, metavar="S", help="fixes every random choice (default: 0)"
    )
    clock = sim.add_mutually_exclusive_group()
    clock.add_argument(
        "--virtual-time",
        dest="virtual_time",
        action="store_true",
        default=True,
        help="run on trio's MockClock, jumping over idle time; reproducible (the default)",
    )
    clock.add_argument(
        "--wall-time",
        dest="virtual_time",
        action="store_false",
        help=f"run on the real clock, simulated delays scaled by --time-scale "
        f"(default {WALL_TIME_SCALE}); not reproducible",
    )
    sim.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help="write the run to a new SQLite file (default: an in-memory store)",
    )
    sim.add_argument(
        "--time-scale",
        type=_positive_float,
        metavar="X",
        help="real seconds per simulated second (default: 1 under virtual time)",
    )
    sim.add_argument(
        "--passivate-after",
        type=_nonnegative_float,
        default=2.0,
        metavar="SECONDS",
        help="simulated seconds a session may sit unused before it is passivated "
        "(default: 2; 0 never passivates)",
    )
    sim.add_argument(
        "--concurrency",
        type=_positive_int,
        default=256,
        metavar="K",
        help="sessions under way at once (default: 256)",
    )
    sim.add_argument(
        "--log-level",
        default="critical",
        choices=["debug", "info", "warning", "error", "critical"],
        help="log records shown on stderr (default: critical; crashes are counted anyway)",
    )
    sim.set_defaults(run=run_command)


@contextmanager
def _troupe_logs_to_stderr(level: str) -> Iterator[None]:
    """Show troupe's log records of ``level`` and above on stderr, for the block only."""
    logger = logging.getLogger("troupe")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    saved = logger.level, logger.propagate
    logger.setLevel(level.upper())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def run_command(args: argparse.Namespace) -> int:
    """Run ``troupe sim`` with parsed arguments; the process exit code."""
    with _troupe_logs_to_stderr(args.log_level):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    options = SimOptions(
        scenario=args.scenario,
        agents=args.agents,
        sessions=args.sessions,
        seed=args.seed,
        virtual_time=args.virtual_time,
        db=args.db,
        time_scale=args.time_scale,
        passivate_after=args.passivate_after,
        concurrency=args.concurrency,
    )
    err = Console(stderr=True)
    columns = (
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, auto_refresh=False) as progress:
        tasks: dict[str, TaskID] = {}
        last = 0.0

        def update(phase: str, done: int, total: int) -> None:
            nonlocal last
            if phase not in tasks:
                tasks[phase] = progress.add_task(PHASES.get(phase, phase), total=total)
            progress.update(tasks[phase], completed=done, total=total)
            now = time.perf_counter()
            if now - last >= 0.1 or done == total:
                last = now
                progress.refresh()

        try:
            report = run_sim(options, update)
        except (ValueError, FileExistsError) as exc:
            err.print(f"troupe sim: {exc}")
            return 2
    out = Console()
    if not out.is_terminal:
        out = Console(width=120)  # a pipe or a file: room for the whole WAL hash on one line
    out.print(summary(report))
    return 0


def summary(report: SimReport) -> Table:
    """The summary table of a run."""
    hub = report.hub
    clock = "virtual (trio MockClock, autojump)" if report.virtual_time else "wall"
    rows: list[tuple[str, str]] = [
        ("scenario / seed", f"{report.scenario} / {report.seed}"),
        ("clock", clock),
        ("agents", f"{report.agents:,}"),
        ("sessions", f"{report.sessions:,}"),
        (
            "open / live / passivated",
            f"{hub.open_sessions:,} / {hub.live_sessions:,} / {hub.passivated_sessions:,}",
        ),
        ("envelopes", f"{report.envelopes:,}"),
        ("envelopes/s (wall)", f"{report.envelopes_per_second:,.0f}"),
        ("posts", f"{report.posts:,}"),
        ("post latency p50 / p99", f"{report.post_p50_us:,.0f} / {report.post_p99_us:,.0f} µs"),
        ("simulated / wall time", f"{report.sim_seconds:,.1f} s / {report.wall_seconds:,.2f} s"),
        ("restarts", f"{hub.session_restarts:,}"),
        ("passivations / rehydrations", f"{hub.passivations:,} / {hub.rehydrations:,}"),
        (
            "accepted / rejected / dead letters",
            f"{hub.envelopes_accepted:,} / {hub.envelopes_rejected:,} / {hub.dead_letters:,}",
        ),
        (
            "mailbox high water",
            f"hub {hub.hub_mailbox_high_water}, sessions {hub.session_mailbox_high_water}, "
            f"connections {hub.connection_mailbox_high_water}",
        ),
        ("peak RSS", f"{report.peak_rss_bytes / 2**20:,.1f} MiB"),
        *report.notes,
        ("WAL hash", report.wal_hash),
    ]
    table = Table(title=f"troupe sim {report.scenario}", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, value)
    return table
