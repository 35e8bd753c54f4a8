"""Many agents in one process: idle cost, passivated sessions, wake-ups, recovery.

Issue 8's targets, each printed next to a raw-trio (or raw-SQLite) baseline measured in the
same run. Every part runs in a fresh subprocess, so its memory figures are its own:

- agents: N agents registered through one in-process HubClient (each an AgentClient with
  the default turn handler), then M two-party conversations opened (full handshake) and
  left idle until passivated. RSS per idle agent and per passivated session, peak RSS.
  Baseline: N bare trio tasks, each waiting on its own memory channel.
- wake: S sessions created (no clients, only a bare endpoint that acks the invites: the
  hub's own cost, handshake included) and passivated in waves, then
  W of them woken at random by a post. RSS per passivated session and wake-up latency
  (the post that rehydrates). Baselines: a post into a live session, and a request/reply
  between two bare trio tasks over memory channels; for the creates, the same creates and
  passivations as a raw trio + sqlite3 + orjson skeleton (``raw_create.py``), in the same
  process after the hub closed.
- recovery: one conversation of E envelopes on SQLite, passivated, then woken: the time of
  that first post with a snapshot every 1000 envelopes vs. with none (full refold).
  Baseline: reading the same rows with sqlite3 + orjson.

The hub parts run under trio's MockClock (autojump), so waiting for passivation costs no
wall time; the figures are wall-clock (``time.perf_counter``). The benchmark does not call
``gc.freeze()``: the hub keeps its long-lived bulk (agents, sessions) out of the collector's
scans itself (``open_hub(gc_freeze=True)``, issue 15, item 7). The agents part reports the
collector's pauses (timed through ``gc.callbacks``) while registering and while opening
conversations among the registered agents; ``--no-gc-freeze`` runs the hub without freezing,
as before.

``python -m benchmarks sim`` runs the default sizes; ``python -m benchmarks.bench_sim
--sessions-passivated 1000000`` (and ``--help``) changes them.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import trio
import trio.testing

from troupe import (
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_TEXT,
    Envelope,
    Hub,
    HubClient,
    LocalLink,
    Passport,
    Turn,
    open_hub,
)
from troupe.model import Frame, NotifyFrame, ReceiptFrame, is_substantive
from troupe.sim import SeededIds, draw
from troupe.store import MemoryStore, SQLiteStore

from .raw_create import CREATORS, pair, raw_create

KIB = 1024
MIB = 1024 * 1024


def rss() -> int:
    """Resident set size now, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB


def settled_rss() -> int:
    gc.collect()
    return rss()


class GcPauses:
    """The collector's pauses while the block runs, timed through ``gc.callbacks``."""

    def __init__(self) -> None:
        self._started = 0.0
        self._cpu = 0.0
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self.cpu: list[float] = []  # the same pauses in this thread's CPU seconds

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            self._cpu = time.thread_time()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))
            self.cpu.append(time.thread_time() - self._cpu)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, Any]:
        full = [s for g, s in self.pauses if g == 2]
        return {
            "collections": len(self.pauses),
            "full": len(full),
            "max_ms": max((s for _, s in self.pauses), default=0.0) * 1e3,
            "max_full_ms": max(full, default=0.0) * 1e3,
            "max_cpu_ms": max(self.cpu, default=0.0) * 1e3,
            "total_ms": sum(s for _, s in self.pauses) * 1e3,
        }


def quantiles(samples: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 of ``samples`` (seconds), in microseconds."""
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 * 1e6, p99 * 1e6


class Idle:
    """An agent that never has anything to say."""

    async def respond(self, turn: Turn) -> str | None:
        await trio.lowlevel.checkpoint()
        return None


#: The hub's periodic sweeps (TTLs, expectations) walk every session; these parts do not
#: measure them.
QUIET: dict[str, Any] = {"ttl_sweep_interval": 0, "expectation_sweep_interval": 0}


def virtual(fn: Any, *args: Any) -> Any:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


# -- baselines -----------------------------------------------------------------------------


async def _bare_tasks(n: int) -> dict[str, Any]:
    async def idle(receive: trio.MemoryReceiveChannel[int]) -> None:
        async for _ in receive:
            pass

    before = settled_rss()
    senders = []
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            send, receive = trio.open_memory_channel[int](0)
            senders.append(send)
            nursery.start_soon(idle, receive)
        await trio.testing.wait_all_tasks_blocked()
        per_task = (settled_rss() - before) / n
        # A request/reply between two bare tasks: the floor under any post latency.
        to_server, server_in = trio.open_memory_channel[int](0)
        to_client, client_in = trio.open_memory_channel[int](0)

        async def server() -> None:
            async for value in server_in:
                await to_client.send(value)

        nursery.start_soon(server)
        samples = []
        for i in range(20_000):
            start = time.perf_counter()
            await to_server.send(i)
            await client_in.receive()
            samples.append(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return {"bytes_per_task": per_task, "request_reply_us": quantiles(samples)}


# -- agents --------------------------------------------------------------------------------


async def _agents(n_agents: int, n_sessions: int, wave: int, gc_freeze: bool) -> dict[str, Any]:
    start_rss = settled_rss()
    async with (
        open_hub(
            MemoryStore(), new_id=SeededIds(1), passivate_after=1, gc_freeze=gc_freeze, **QUIET
        ) as hub,
        HubClient(LocalLink(hub)) as hc,
    ):
        base = settled_rss()
        started = time.perf_counter()
        agents = []
        with GcPauses() as registering:
            for i in range(n_agents):
                agents.append(await hc.register(Idle(), Passport(name=f"agent-{i:06d}")))
        register_s = time.perf_counter() - started
        gc.collect()
        with_agents = rss()

        ids = [a.agent_id for a in agents]
        started = time.perf_counter()

        async def opener(k: int, first: int, last: int) -> None:
            for i in range(first + k, last, 64):
                a = int(draw(1, "a", i) * n_agents)
                b = (a + 1 + int(draw(1, "b", i) * (n_agents - 1))) % n_agents
                await hc.create_session(
                    creator_id=ids[a], manifest_type="conversation", participants=[ids[a], ids[b]]
                )

        with GcPauses() as opening:
            for first in range(0, n_sessions, wave):
                async with trio.open_nursery() as nursery:
                    for k in range(64):
                        nursery.start_soon(opener, k, first, min(n_sessions, first + wave))
                await trio.sleep(2)  # virtual: this wave goes idle and is passivated
        create_s = time.perf_counter() - started
        stats = hub.statistics()
        with_sessions = settled_rss()
    # Cyclic garbage that was frozen alive and died later: collected only now that the hub
    # has unfrozen (with gc_freeze=False, what died since the last collection).
    late_garbage = gc.collect()
    return {
        "agents": n_agents,
        "sessions": n_sessions,
        "passivated": stats.passivated_sessions,
        "hub_bytes": base - start_rss,
        "bytes_per_agent": (with_agents - base) / n_agents,
        "bytes_per_session": (with_sessions - with_agents) / n_sessions,
        "peak_rss": peak_rss(),
        "register_us": register_s / n_agents * 1e6,
        "create_us": create_s / n_sessions * 1e6,
        "gc_registering": registering.summary(),
        "gc_opening": opening.summary(),
        "late_garbage": late_garbage,
    }


# -- wake-ups ------------------------------------------------------------------------------


class InviteAcker:
    """One bare endpoint for every agent: it acks their invites (a session opens only once
    its invitees consented) and sends a receipt for each substantive delivery (else their
    inboxes fill up). No client."""

    endpoint_id = "invite-acker"
    #: In process, as a LocalLink: frames travel as objects (a session's status is sent as it
    #: is, not dumped for a wire this endpoint does not have), taken without waiting.
    carries_objects = True

    def __init__(self, hub: Hub, nursery: trio.Nursery) -> None:
        self._hub = hub
        self._nursery = nursery
        self._send, self._recv = trio.open_memory_channel[Frame](math.inf)

    @classmethod
    async def serve(cls, hub: Hub, nursery: trio.Nursery, agent_ids: Sequence[str]) -> None:
        acker = cls(hub, nursery)
        await hub.attach_endpoint(acker)
        for agent_id in agent_ids:
            await hub.bind_endpoint(acker.endpoint_id, agent_id)

    @property
    def alive(self) -> bool:
        return True

    def encode(self, frame: Frame) -> Frame:
        return frame  # in process: the frame itself, never its text

    async def send_frame(self, frame: Frame | str) -> None:
        await trio.lowlevel.checkpoint()
        if isinstance(frame, NotifyFrame):
            self.send_frame_nowait(frame)

    def send_frame_nowait(self, frame: Frame) -> bool:
        """Take a frame at once, as a LocalLink's end does when its client waits for one: a
        dispatch then notifies from its own task, without a step of the connection actor."""
        if not isinstance(frame, NotifyFrame):
            return True
        env = frame.envelope
        if env.event_type == EV_CHANNEL_INVITE:
            ack = Envelope(
                session_id=env.session_id,
                sender_id=frame.recipient_id,
                event_type=EV_CHANNEL_INVITE_ACK,
                causation_id=env.envelope_id,
            )
            self._nursery.start_soon(self._hub.post_envelope, ack)
        elif is_substantive(env.event_type):
            receipt = ReceiptFrame(
                envelope_id=env.envelope_id,
                recipient_id=frame.recipient_id,
                session_id=env.session_id,
                seq=env.seq,
            )
            self._send.send_nowait(receipt)
        return True

    def frames(self) -> trio.MemoryReceiveChannel[Frame]:
        return self._recv

    async def aclose(self) -> None:
        self._send.close()
        await trio.lowlevel.checkpoint()


def _text(session_id: str, sender_id: str, text: str) -> Envelope:
    return Envelope(
        session_id=session_id, sender_id=sender_id, event_type=EV_TEXT, event_data={"text": text}
    )


async def _wake(n_sessions: int, n_woken: int, wave: int, db: Path) -> dict[str, Any]:
    store = SQLiteStore(db, synchronous="NORMAL", threaded=False)
    async with (
        # The hub's own ids (time-ordered), not SeededIds: their order is what SQLite's
        # inserts cost, and nothing here depends on their values.
        open_hub(store, passivate_after=1, **QUIET) as hub,
        trio.open_nursery() as acks,
    ):
        people = []
        for i in range(1000):
            passport = await hub.register(Passport(name=f"p{i}"))
            assert passport.agent_id is not None
            people.append(passport.agent_id)
        await InviteAcker.serve(hub, acks, people)
        before = settled_rss()
        sessions: list[tuple[str, str]] = []
        started = time.perf_counter()
        cpu_started = time.process_time()  # the machine is shared: its own CPU too

        written = store.statistics()

        async def creator(k: int, first: int, last: int) -> None:
            for i in range(first + k, last, CREATORS):
                a, b = pair(people, i)
                md = await hub.create_session(
                    creator_id=a, manifest_type="conversation", participants=[a, b]
                )
                sessions.append((md.session_id, b))

        passivating_cpu_s = 0.0
        for first in range(0, n_sessions, wave):
            async with trio.open_nursery() as nursery:
                for k in range(CREATORS):
                    nursery.start_soon(creator, k, first, min(n_sessions, first + wave))
            wave_cpu = time.process_time()
            await trio.sleep(2)  # virtual: this wave is passivated before the next
            passivating_cpu_s += time.process_time() - wave_cpu
            print(f"  created {len(sessions):,} sessions", file=sys.stderr, flush=True)
        create_s = time.perf_counter() - started
        create_cpu_s = time.process_time() - cpu_started
        now_written = store.statistics()
        commits = now_written.batches - written.batches
        writes = now_written.writes - written.writes
        gc.collect()
        passivated = rss()
        stats = hub.statistics()
        assert stats.live_sessions == 0, stats

        woken = []
        for i in range(n_woken):
            sid, sender = sessions[int(draw(3, "wake", i) * len(sessions))]
            started = time.perf_counter()
            await hub.post(_text(sid, sender, "wake up"))
            woken.append(time.perf_counter() - started)
        live = []
        # A session of its own, uncapped: W posts into one conversation would pass its
        # default max_turns (200) and be refused once it closed.
        a, sender = people[0], people[1]
        md = await hub.create_session(
            creator_id=a,
            manifest_type="conversation",
            participants=[a, sender],
            knobs={"max_turns": None},
        )
        sid = md.session_id
        for i in range(n_woken):
            started = time.perf_counter()
            await hub.post(_text(sid, sender, f"again {i}"))
            live.append(time.perf_counter() - started)
        stats = hub.statistics()
        acks.cancel_scope.cancel()
    return {
        "sessions": n_sessions,
        "woken": n_woken,
        "rehydrations": stats.rehydrations,
        "hub_rss": passivated,
        "bytes_per_session": (passivated - before) / n_sessions,
        "peak_rss": peak_rss(),
        "create_us": create_s / n_sessions * 1e6,
        "create_cpu_us": create_cpu_s / n_sessions * 1e6,
        "passivate_cpu_us": passivating_cpu_s / n_sessions * 1e6,
        "commits": commits,
        "writes": writes,
        "wake_us": quantiles(woken),
        "live_us": quantiles(live),
    }


# -- recovery ------------------------------------------------------------------------------


async def _recovery(n_envelopes: int, snapshot_every: int, db: Path) -> dict[str, Any]:
    store = SQLiteStore(db, synchronous="NORMAL", threaded=False)
    async with (
        open_hub(store, passivate_after=1, snapshot_every=snapshot_every, **QUIET) as hub,
        trio.open_nursery() as acks,
    ):
        a = (await hub.register(Passport(name="a"))).agent_id
        b = (await hub.register(Passport(name="b"))).agent_id
        assert a is not None
        assert b is not None
        await InviteAcker.serve(hub, acks, [b])
        md = await hub.create_session(
            creator_id=a,
            manifest_type="conversation",
            participants=[a, b],
            knobs={"max_turns": None},  # E envelopes, past the default cap
        )
        sid = md.session_id
        for i in range(n_envelopes):
            await hub.post(_text(sid, a if i % 2 else b, f"line {i}"))
        samples = []
        for i in range(5):
            await trio.sleep(2)  # virtual: passivated
            assert not hub.core.directory.get(sid).running
            started = time.perf_counter()
            await hub.post(_text(sid, a, f"wake {i}"))
            samples.append(time.perf_counter() - started)
        acks.cancel_scope.cancel()
    return {"envelopes": n_envelopes, "wake_s": statistics.median(samples)}


def _raw_read(db: Path) -> dict[str, Any]:
    """Read the biggest session's rows with sqlite3 + orjson: the floor under a refold."""
    conn = sqlite3.connect(db)
    (session_id,) = conn.execute(
        "SELECT session_id FROM wal GROUP BY session_id ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()
    started = time.perf_counter()
    rows = conn.execute(
        "SELECT envelope FROM wal WHERE session_id = ? ORDER BY seq", (session_id,)
    ).fetchall()
    decoded = [orjson.loads(envelope) for (envelope,) in rows]
    elapsed = time.perf_counter() - started
    conn.close()
    return {"rows": len(decoded), "read_s": elapsed}


# -- the driver ----------------------------------------------------------------------------


def _part(argv: list[str]) -> dict[str, Any]:
    """Run one part in this process (``--part``)."""
    name, *rest = argv
    values = [int(v) for v in rest if v.isdigit()]
    paths = [Path(v) for v in rest if not v.isdigit() and v != "no-gc-freeze"]
    if name == "baseline":
        result: dict[str, Any] = trio.run(_bare_tasks, values[0])
    elif name == "agents":
        result = virtual(_agents, values[0], values[1], values[2], "no-gc-freeze" not in rest)
    elif name == "wake":
        result = virtual(_wake, values[0], values[1], values[2], paths[0])
        # The creates' raw skeleton (raw_create.py), in the same process after the hub
        # closed: its own store file, the same clock.
        raw_db = paths[0].with_name(paths[0].name + ".raw")
        result["raw_create"] = virtual(raw_create, values[0], values[2], raw_db)
    elif name == "recovery":
        result = virtual(_recovery, values[0], values[1], paths[0])
        result["raw"] = _raw_read(paths[0])
    else:
        raise SystemExit(f"unknown part {name!r}")
    return result


def _spawn(*args: object) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_sim", "--part", *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_sim", description=__doc__)
    parser.add_argument("--agents", type=int, default=100_000, help="registered agents")
    parser.add_argument("--sessions", type=int, default=50_000, help="sessions among them")
    parser.add_argument(
        "--sessions-passivated", type=int, default=200_000, help="sessions to passivate and wake"
    )
    parser.add_argument("--woken", type=int, default=10_000, help="passivated sessions woken")
    parser.add_argument("--wave", type=int, default=10_000, help="sessions created per wave")
    parser.add_argument("--envelopes", type=int, default=100_000, help="envelopes to recover")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="open the agents part's hub with gc_freeze=False (the collector's pauses as before)",
    )
    parser.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args([] if argv is None else argv)
    if args.part:
        print(json.dumps(_part(args.part)))
        return

    print(f"python {sys.version.split()[0]}, trio {trio.__version__}; hub parts under MockClock")
    base = _spawn("baseline", args.agents)
    agents = _spawn(
        "agents",
        args.agents,
        args.sessions,
        args.wave,
        *(["no-gc-freeze"] if args.no_gc_freeze else []),
    )
    print(
        f"\n{args.agents:,} idle agents + {args.sessions:,} conversations (handshake, in waves "
        f"of {args.wave:,}, each passivated before the next: {agents['passivated']:,})"
    )
    per_agent, per_task = agents["bytes_per_agent"] / KIB, base["bytes_per_task"] / KIB
    print(f"  RSS per idle agent          {per_agent:8.2f} KiB   (target <= 10)")
    print(f"  bare trio task + channel    {per_task:8.2f} KiB   (baseline)")
    print(f"  RSS per passivated session  {agents['bytes_per_session'] / KIB:8.2f} KiB")
    print(
        f"  peak RSS {agents['peak_rss'] / MIB:,.0f} MiB = "
        f"{agents['peak_rss'] / args.agents / KIB:.2f} KiB per agent, all included"
    )
    print(
        f"  register {agents['register_us']:.0f} us/agent, "
        f"open {agents['create_us']:.0f} us/session (wall)"
    )
    freezing = "off" if args.no_gc_freeze else "on"
    for phase in ("registering", "opening"):
        g = agents[f"gc_{phase}"]
        print(
            f"  GC while {phase:<11} {g['full']:4d} full collections of {g['collections']:,}, "
            f"max pause {g['max_ms']:7.1f} ms ({g['max_cpu_ms']:.1f} ms CPU), "
            f"{g['total_ms'] / 1e3:.2f} s in all "
            f"(gc_freeze {freezing}; target max <= 50 ms)"
        )
    print(f"  cyclic garbage collected after the hub closed: {agents['late_garbage']:,} objects")

    with tempfile.TemporaryDirectory(prefix="troupe-bench-sim-") as tmp:
        wake = _spawn(
            "wake", args.sessions_passivated, args.woken, args.wave, Path(tmp) / "wake.db"
        )
        print(
            f"\n{wake['sessions']:,} sessions created and passivated (SQLite, waves of "
            f"{args.wave:,}), {wake['woken']:,} woken at random"
        )
        print(
            f"  RSS {wake['hub_rss'] / MIB:,.0f} MiB, "
            f"{wake['bytes_per_session'] / KIB:.2f} KiB per passivated session; "
            f"peak {wake['peak_rss'] / MIB:,.0f} MiB"
        )
        p50, p99 = wake["wake_us"]
        print(f"  wake-up post (rehydrates) p50 {p50:8.0f} us  p99 {p99:8.0f} us")
        p50, p99 = wake["live_us"]
        print(f"  post, live session        p50 {p50:8.0f} us  p99 {p99:8.0f} us   (baseline)")
        p50, p99 = base["request_reply_us"]
        print(f"  bare trio request/reply   p50 {p50:8.1f} us  p99 {p99:8.1f} us   (baseline)")
        print(
            f"  create {wake['create_us']:.0f} us/session (wall), "
            f"{wake['create_cpu_us']:.0f} us CPU (passivation included: "
            f"{wake['passivate_cpu_us']:.0f}; 1M in 5 min needs <= 300)"
        )
        raw = wake["raw_create"]
        print(
            f"  raw skeleton {raw['create_us']:.0f} us/session (wall), "
            f"{raw['create_cpu_us']:.0f} us CPU   (baseline; troupe at "
            f"{raw['create_us'] / wake['create_us']:.2f}x its speed)"
        )

        snap = _spawn("recovery", args.envelopes, 1000, Path(tmp) / "snap.db")
        full = _spawn("recovery", args.envelopes, 0, Path(tmp) / "full.db")
    print(f"\nrehydrating a session of {args.envelopes:,} envelopes (SQLite), median of 5")
    print(f"  snapshot every 1000        {snap['wake_s'] * 1e3:9.1f} ms")
    print(f"  no snapshots (full refold) {full['wake_s'] * 1e3:9.1f} ms")
    raw = full["raw"]
    print(
        f"  raw sqlite3 + orjson read  {raw['read_s'] * 1e3:9.1f} ms   "
        f"(baseline, {raw['rows']:,} rows)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
