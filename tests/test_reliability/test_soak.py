"""A bounded soak: many agents and sessions, a fixed number of envelopes, random crashes.

Humans post into conversations with scripted bots, which answer every text; session actors
crash at random points of their posts. At the end every post its poster saw accepted is in
the WAL once, ``check_invariants`` holds, and the run prints its throughput and restarts.

CI runs it small. The full size: ``TROUPE_SOAK=full ./dev test -m slow -s
tests/test_reliability/test_soak.py`` (1000 agents, 500 sessions, 50 000 posts).
"""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from troupe import HubClient, LocalLink, Passport, ProtocolError
from troupe.client import HumanClient, Turn
from troupe.hub import open_hub
from troupe.testing import (
    CrashPoints,
    ScriptedAgent,
    check_invariants,
    make_store,
    no_task_leaks,
    seeded_ids,
)


@attrs.frozen
class Size:
    humans: int
    bots: int
    sessions: int
    posts: int
    crash_probability: float


SIZES = {
    "ci": Size(humans=10, bots=10, sessions=20, posts=500, crash_probability=0.005),
    "full": Size(humans=500, bots=500, sessions=500, posts=50_000, crash_probability=0.005),
}
SIZE = SIZES[os.environ.get("TROUPE_SOAK", "ci")]
POSSIBLE_REFUSALS = re.compile(r"rejected as poison|is closed \(crashed\)|crashed too often")


def answer(turn: Turn) -> str:
    return f"re: {turn.text}"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["memory", "sqlite"])
async def test_soak(engine: str, tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    rng = random.Random(7)
    crashes = CrashPoints()
    accepted: dict[str, str] = {}  # envelope id -> session id
    refused: list[str] = []
    started = time.perf_counter()
    with no_task_leaks():
        async with open_hub(
            make_store(engine, tmp_path),
            faults=crashes,
            new_id=seeded_ids(7),
            ttl_sweep_interval=0,
            snapshot_every=50,
        ) as hub:
            client = HubClient(LocalLink(hub))
            humans = [
                await client.register_human(Passport(name=f"human-{i}")) for i in range(SIZE.humans)
            ]
            for i in range(SIZE.bots):
                await client.register(
                    ScriptedAgent([answer], cycle=True), Passport(name=f"bot-{i}")
                )
            plan: list[tuple[HumanClient, str]] = []
            for i in range(SIZE.sessions):
                human = humans[i % SIZE.humans]
                channel = await human.open(type="conversation", target=f"bot-{i % SIZE.bots}")
                plan.append((human, channel.session_id))
            crashes.crash_randomly(SIZE.crash_probability, seed=7)

            async def drive(posts: list[tuple[HumanClient, str]]) -> None:
                for n, (human, sid) in enumerate(posts):
                    try:
                        with trio.fail_after(30):
                            envelope_id = await human.send(sid, f"message {n}")
                    except ProtocolError as exc:
                        refused.append(str(exc))
                    else:
                        accepted[envelope_id] = sid

            work = [plan[rng.randrange(len(plan))] for _ in range(SIZE.posts)]
            async with trio.open_nursery() as nursery:
                for lane in range(16):
                    nursery.start_soon(drive, work[lane::16])
            crashes.clear()
            await trio.testing.wait_all_tasks_blocked()
            report = await check_invariants(hub)
            stats = hub.statistics()
            for envelope_id, sid in accepted.items():
                found = [e for e in await hub.read_wal(sid) if e.envelope_id == envelope_id]
                assert len(found) == 1, f"accepted {envelope_id} is {len(found)} times in {sid}"
            await client.close()
    elapsed = time.perf_counter() - started
    print(
        f"\nsoak on {engine}: {report.envelopes} envelopes in {report.sessions} sessions, "
        f"{report.envelopes / elapsed:,.0f} envelopes/s; "
        f"{crashes.statistics().crashes} crashes injected, {stats.session_restarts} restarts, "
        f"{stats.sessions_crashed} sessions given up, {len(refused)} posts refused"
    )
    assert len(accepted) + len(refused) == SIZE.posts
    # Two crashes on one post (poison), or a session that crashed more often than its
    # restart intensity allows and was closed: nothing else may refuse a post here.
    assert [r for r in refused if not POSSIBLE_REFUSALS.search(r)] == []
    assert crashes.statistics().crashes > 0
    assert stats.session_restarts > 0
