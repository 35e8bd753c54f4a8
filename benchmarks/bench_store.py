"""Store benchmark: durable appends/s under concurrency (group commit), and WAL replay.

``python -m benchmarks store``. Prints medians over several repeats:

- SQLite appends/s with 1, 16 and 64 concurrent appenders, one ~200-byte envelope per
  append, each in its own session, at ``synchronous=FULL`` (durable) and ``NORMAL``;
- the same for PostgresStore, on the server ``TROUPE_BENCH_POSTGRES`` (else
  ``TROUPE_TEST_POSTGRES``, the tests' throwaway server) names, in a fresh schema dropped
  afterwards; its ``fsync`` and ``synchronous_commit`` are printed, since they decide what a
  commit costs (the tests' server runs with both off). Skipped, saying so, without a DSN;
- replay of 100k envelopes (read + decode into ``Envelope`` records) against raw
  ``sqlite3`` + ``orjson`` (the parser troupe uses) reading the same rows into dicts.

Targets (issue 3): 64 appenders at least 10x one; replay at least 0.5x raw and 100k
envelopes in under 1 s.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import trio

from troupe.model import Envelope, dumps
from troupe.store import PostgresStore, SQLiteStore, Store

REPEATS = 5
APPENDS = 2048  # per run, split among the appenders
REPLAY = 100_000
CONCURRENCY = (1, 16, 64)


def envelope(session_id: str, seq: int) -> Envelope:
    return Envelope(
        session_id=session_id,
        sender_id="agent-07",
        event_type="troupe.text",
        event_data={"text": f"reply {seq}"},
        envelope_id=f"{seq:032x}",
        seq=seq,
        created_at="2025-01-01T00:00:00.000000+00:00",
    )


def median_of(measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(REPEATS))


def appends_per_second(directory: Path, appenders: int, synchronous: str) -> float:
    """One SQLite run: ``appenders`` tasks append ``APPENDS`` envelopes in all."""
    path = directory / f"appends-{appenders}-{synchronous}-{time.monotonic_ns()}.db"
    return timed_appends(lambda: SQLiteStore(path, synchronous=synchronous), appenders)


def timed_appends(make: Callable[[], Store], appenders: int) -> float:
    """``appenders`` tasks append ``APPENDS`` envelopes in all, one per append: appends/s."""
    each = APPENDS // appenders

    async def run() -> float:
        async with make() as store:

            async def appender(session_id: str) -> None:
                for seq in range(1, each + 1):
                    await store.append(session_id, [envelope(session_id, seq)])

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for n in range(appenders):
                    nursery.start_soon(appender, f"session-{n:03d}")
            return appenders * each / (time.perf_counter() - start)

    return trio.run(run)


POSTGRES_ENV = ("TROUPE_BENCH_POSTGRES", "TROUPE_TEST_POSTGRES")


def postgres_rows(rates_sqlite: dict[int, float]) -> None:
    """PostgresStore appends/s at each concurrency, next to SQLite's durable figures."""
    dsn = next((os.environ[name] for name in POSTGRES_ENV if os.environ.get(name)), None)
    if dsn is None:
        print(f"appends/s  PostgresStore: skipped, no server ({' or '.join(POSTGRES_ENV)} unset)")
        return
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("fsync", "synchronous_commit")
        }
        schemas: list[str] = []

        def make() -> Store:
            schemas.append(f"bench_{len(schemas)}_{os.getpid()}")
            return PostgresStore(dsn, schema=schemas[-1])

        try:
            runs: dict[int, list[float]] = {n: [] for n in CONCURRENCY}
            for _ in range(REPEATS):
                for n in CONCURRENCY:
                    runs[n].append(timed_appends(make, n))
        finally:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    rates = {n: statistics.median(rates) for n, rates in runs.items()}
    where = ", ".join(f"{name}={value}" for name, value in settings.items())
    for n, rate in rates.items():
        print(
            f"appends/s  PostgresStore ({where}) {n:>2} appender(s): {rate:>9,.0f}"
            f"  ({rate / rates[1]:.1f}x one; {rate / rates_sqlite[n]:.2f}x SQLite FULL)"
        )


def fill(path: Path, session_id: str) -> None:
    async def run() -> None:
        async with SQLiteStore(path, synchronous="OFF") as store:
            for first in range(1, REPLAY + 1, 1000):
                await store.append(
                    session_id, [envelope(session_id, s) for s in range(first, first + 1000)]
                )

    trio.run(run)


def replay_troupe(path: Path, session_id: str) -> float:
    async def run() -> float:
        async with SQLiteStore(path) as store:
            start = time.perf_counter()
            envelopes = await store.read(session_id)
            elapsed = time.perf_counter() - start
            assert [envelopes[0].seq, envelopes[-1].seq] == [1, REPLAY]
            return elapsed

    return trio.run(run)


def replay_raw(path: Path, session_id: str) -> float:
    conn = sqlite3.connect(path)
    try:
        start = time.perf_counter()
        rows = conn.execute(
            "SELECT envelope FROM wal WHERE session_id = ? ORDER BY seq", (session_id,)
        )
        records = [orjson.loads(text) for (text,) in rows]
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    assert len(records) == REPLAY
    return elapsed


def main() -> None:
    size = len(dumps(envelope("session-000", 512)))
    print(f"envelope JSON: {size} bytes; medians of {REPEATS} runs of {APPENDS} appends")
    with tempfile.TemporaryDirectory(prefix="troupe-bench-") as tmp:
        directory = Path(tmp)
        durable: dict[int, float] = {}
        for synchronous in ("FULL", "NORMAL"):
            # Interleaved (1, 16, 64, 1, 16, 64, …) so a slow spell of the shared disk
            # weighs on every concurrency level alike and the ratios stay honest.
            runs: dict[int, list[float]] = {n: [] for n in CONCURRENCY}
            for _ in range(REPEATS):
                for n in CONCURRENCY:
                    runs[n].append(appends_per_second(directory, n, synchronous))
            rates = {n: statistics.median(rates) for n, rates in runs.items()}
            durable = durable or rates
            for n, rate in rates.items():
                print(
                    f"appends/s  synchronous={synchronous:<6} {n:>2} appender(s): {rate:>9,.0f}"
                    f"  ({rate / rates[1]:.1f}x one)"
                )
        postgres_rows(durable)
        path = directory / "replay.db"
        fill(path, "big")
        troupe_s = median_of(functools.partial(replay_troupe, path, "big"))
        raw_s = median_of(functools.partial(replay_raw, path, "big"))
        for name, seconds in (("troupe read+decode", troupe_s), ("raw sqlite3+orjson", raw_s)):
            rate = REPLAY / seconds
            print(f"replay {REPLAY:,} {name:<18}: {seconds:.3f} s = {rate:>9,.0f} records/s")
        print(f"replay ratio troupe/raw: {raw_s / troupe_s:.2f}x (target >= 0.5x; 100k in < 1 s)")


if __name__ == "__main__":
    main()
