"""Hub benchmark: ``post_envelope`` throughput through 16 concurrent sessions.

``python -m benchmarks hub``. Sixteen conversation sessions, one poster per session posting
texts one after the other; each post is delivered to the other participant's connection,
which acks it with a ``ReceiptFrame``. The same run measures a raw-trio skeleton of that
path: poster → session task (a memory channel) → a reply to the poster plus a delivery to a
consumer task. Prints posts/s as the median of several repeats, and the ratio hub / raw.

Targets (issue 4): at least 0.3x raw on MemoryStore and 0.15x on SQLite (group commit).
The last row runs SQLite FULL with ``cursor_flush_interval=0.05`` (off by default): the hub's
lever on the number of commits per post.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import trio
import trio.lowlevel

from troupe.hub import Hub, open_hub
from troupe.model import (
    EV_CHANNEL_INVITE,
    EV_CHANNEL_INVITE_ACK,
    EV_TEXT,
    Envelope,
    Frame,
    NotifyFrame,
    Passport,
    ReceiptFrame,
)
from troupe.store import MemoryStore, SQLiteStore, Store

SESSIONS = 16
POSTS = 1000  # per poster, per run
REPEATS = 5


class AckingEndpoint:
    """A client that acks every notify at once, and acks invites."""

    def __init__(self, endpoint_id: str, hub: Hub, nursery: trio.Nursery) -> None:
        self.endpoint_id = endpoint_id
        self._hub = hub
        self._nursery = nursery
        self._send, self._recv = trio.open_memory_channel[Frame](math.inf)
        self.notified = 0

    alive = True

    def encode(self, frame: Frame) -> Frame:
        return frame

    async def send_frame(self, frame: Frame | str) -> None:
        if not isinstance(frame, NotifyFrame):
            return
        env = frame.envelope
        self.notified += 1
        if env.event_type == EV_CHANNEL_INVITE:
            ack = Envelope(
                session_id=env.session_id,
                sender_id=frame.recipient_id,
                event_type=EV_CHANNEL_INVITE_ACK,
                causation_id=env.envelope_id,
            )
            self._nursery.start_soon(self._hub.post_envelope, ack)
        self._send.send_nowait(
            ReceiptFrame(
                envelope_id=env.envelope_id,
                recipient_id=frame.recipient_id,
                session_id=env.session_id,
                seq=env.seq,
            )
        )

    def frames(self) -> trio.MemoryReceiveChannel[Frame]:
        return self._recv

    async def aclose(self) -> None:
        self._send.close()
        await trio.lowlevel.checkpoint()


@attrs.frozen
class HubRun:
    posts_per_s: float
    #: Store commits (fsyncs at synchronous=FULL) per post, for SQLite.
    commits_per_post: float | None


def commits(store: Store) -> int:
    return store.statistics().batches if isinstance(store, SQLiteStore) else 0


async def hub_run(store: Store, cursor_flush_interval: float = 0.0) -> HubRun:
    """Posts/s through the hub on ``store``."""
    async with (
        open_hub(store, ttl_sweep_interval=0, cursor_flush_interval=cursor_flush_interval) as hub,
        trio.open_nursery() as nursery,
    ):
        sessions = []
        endpoints = []
        for n in range(SESSIONS):
            poster = await hub.register(Passport(name=f"poster-{n}"))
            reader = await hub.register(Passport(name=f"reader-{n}"))
            assert poster.agent_id is not None
            assert reader.agent_id is not None
            for name, agent_id in ((poster.name, poster.agent_id), (reader.name, reader.agent_id)):
                endpoint = AckingEndpoint(f"ep-{name}", hub, nursery)
                endpoints.append(endpoint)
                await hub.attach_endpoint(endpoint)
                await hub.bind_endpoint(endpoint.endpoint_id, agent_id)
            md = await hub.create_session(
                creator_id=poster.agent_id,
                manifest_type="conversation",
                participants=[reader.agent_id],
                knobs={"max_turns": None},  # a benchmark posts past the default cap
            )
            sessions.append((md.session_id, poster.agent_id))

        async def post_all(session_id: str, sender_id: str) -> None:
            for i in range(POSTS):
                await hub.post_envelope(
                    Envelope(
                        session_id=session_id,
                        sender_id=sender_id,
                        event_type=EV_TEXT,
                        event_data={"text": f"message {i}"},
                    )
                )

        before = sum(e.notified for e in endpoints)
        commits_before = commits(store)
        start = time.perf_counter()
        async with trio.open_nursery() as posters:
            for session_id, sender_id in sessions:
                posters.start_soon(post_all, session_id, sender_id)
        # Every post was delivered (and acked) before the clock stops.
        while sum(e.notified for e in endpoints) - before < SESSIONS * POSTS:
            await trio.lowlevel.checkpoint()
        elapsed = time.perf_counter() - start
        committed = commits(store) - commits_before
        nursery.cancel_scope.cancel()
    return HubRun(
        SESSIONS * POSTS / elapsed,
        committed / (SESSIONS * POSTS) if isinstance(store, SQLiteStore) else None,
    )


@attrs.frozen
class RawPost:
    envelope: Envelope
    reply: trio.MemorySendChannel[str]


async def raw_run() -> float:
    """Posts/s through the skeleton: one task per session, memory channels in between."""
    done = trio.Event()
    delivered = 0

    async def consumer(inbox: trio.MemoryReceiveChannel[Envelope]) -> None:
        nonlocal delivered
        async for _ in inbox:
            delivered += 1
            if delivered == SESSIONS * POSTS:
                done.set()

    async def session(
        mailbox: trio.MemoryReceiveChannel[RawPost], out: trio.MemorySendChannel[Envelope]
    ) -> None:
        wal: list[Envelope] = []
        async for post in mailbox:
            stamped = attrs.evolve(post.envelope, envelope_id=f"{len(wal):x}", seq=len(wal) + 1)
            wal.append(stamped)
            await post.reply.send(stamped.envelope_id)
            await out.send(stamped)

    async def poster(mailbox: trio.MemorySendChannel[RawPost], session_id: str) -> None:
        reply_send, reply_recv = trio.open_memory_channel[str](1)
        for i in range(POSTS):
            env = Envelope(
                session_id=session_id,
                sender_id="poster",
                event_type=EV_TEXT,
                event_data={"text": f"message {i}"},
            )
            await mailbox.send(RawPost(env, reply_send))
            await reply_recv.receive()

    async with trio.open_nursery() as nursery:
        mailboxes = []
        for n in range(SESSIONS):
            send, recv = trio.open_memory_channel[RawPost](1024)
            out_send, out_recv = trio.open_memory_channel[Envelope](1024)
            nursery.start_soon(session, recv, out_send)
            nursery.start_soon(consumer, out_recv)
            mailboxes.append((send, f"s{n}"))
        start = time.perf_counter()
        async with trio.open_nursery() as posters:
            for send, sid in mailboxes:
                posters.start_soon(poster, send, sid)
        await done.wait()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return SESSIONS * POSTS / elapsed


def sqlite(synchronous: str) -> Callable[[Path], Store]:
    return lambda d: SQLiteStore(d / f"{time.monotonic_ns()}.db", synchronous=synchronous)


def main() -> None:
    # name -> (store factory, target ratio, cursor_flush_interval)
    engines: dict[str, tuple[Callable[[Path], Store], float, float]] = {
        "memory": (lambda _: MemoryStore(), 0.3, 0.0),
        "sqlite FULL": (sqlite("FULL"), 0.15, 0.0),
        "sqlite NORMAL": (sqlite("NORMAL"), 0.15, 0.0),
        # The lever the hub has on SQLite: acks coalesced for 50 ms share a cursor write.
        "sqlite FULL, cur50": (sqlite("FULL"), 0.15, 0.05),
    }
    raw: list[float] = []
    hub: dict[str, list[HubRun]] = {name: [] for name in engines}
    # Interleaved, so a change in the machine's load hits both sides of each ratio alike.
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for _ in range(REPEATS):
            raw.append(trio.run(raw_run))
            for name, (make, _target, interval) in engines.items():
                hub[name].append(trio.run(hub_run, make(directory), interval))
    print(f"{SESSIONS} sessions x {POSTS} posts; medians of {REPEATS} interleaved runs")
    print(f"  {'raw trio skeleton':<24} {statistics.median(raw):>8,.0f} posts/s")
    for name, (_make, target, _interval) in engines.items():
        runs = hub[name]
        rate = statistics.median(run.posts_per_s for run in runs)
        ratio = statistics.median(run.posts_per_s / r for run, r in zip(runs, raw, strict=True))
        verdict = "ok" if ratio >= target else "MISSED"
        line = (
            f"  {'hub, ' + name:<24} {rate:>8,.0f} posts/s   {ratio:.2f}x raw "
            f"(target {target}x: {verdict})"
        )
        per_post = [run.commits_per_post for run in runs if run.commits_per_post is not None]
        if per_post:
            line += f"   {statistics.median(per_post):.3f} commits/post"
        print(line)
