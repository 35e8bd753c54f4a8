"""Hub benchmark: the agent path, next to a raw-trio skeleton doing the same work.

``python -m benchmarks hub`` (``python -m benchmarks.bench_hub --help`` for the sizes).

**Agent path** (the path users take; issue 15): 16 conversations, each between a person
(a ``HumanClient``) and an agent (an ``AgentClient`` whose ``respond`` returns a short
text at once), both registered through ``HubClient(LocalLink(hub))``, one HubClient for the
people and one for the agents. Each person posts a text and waits for the agent's answer
before posting the next (turn-taking, as a conversation does); every delivery is handled
and acked by the client's loop. The time runs until every answer reached its person. The
same run measures a **raw trio skeleton of that work**: poster → session task (stamp,
append to a list, accept) → dispatch to the agent's task through a bounded inbox → a "turn"
that builds a reply → the reply posted back through the session task to the poster's inbox
task → acks from both recipients to the session task (a cursor per recipient). Runs are
interleaved; the table shows medians of the repeats, the median of per-pair ratios, and
CPU per envelope (``time.process_time``, every thread of the process, posts and answers
both counted as envelopes) for both.

Targets (issue 15): at least 0.3x raw on MemoryStore and 0.15x on SQLite ``FULL``.

**Flood**: 16 people x 1,500 posts into AgentClients without waiting for the answers, with
the default rules (inbox ``max_pending`` 1000, ``overflow="block"``: a poster waits for room,
as the raw skeleton's posters wait for room in its bounded inbox; before issue 15 the default
was ``"reject"`` and the flood died with ``InboxFull``). The row says whether it completed or
how it ended, never crashes. Target: completes, no ``InboxFull``.

**Acking endpoints** (the measurement before issue 15, kept as a second table): one poster
per session posts into the hub directly, and each post is delivered to an endpoint that acks
inside ``send_frame``: no client loop, no inbox, no turn. Its raw skeleton has no acks.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import trio
import trio.lowlevel
import trio.testing

from troupe import HubClient, HumanClient, LocalLink, NetworkError, Rule, Turn
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
#: Posts per conversation in a turn-taking agent-path run (each waits for its answer).
POSTS = 200
#: Posts per person in the flood run (issue 15: 16 x 1,500 died with InboxFull before).
FLOOD_POSTS = 1500
#: Give up on a flood run after this many seconds (it is reported, not raised).
FLOOD_DEADLINE_S = 60.0
#: Posts per poster in an acking-endpoint run.
ENDPOINT_POSTS = 1000
#: Runs per median (few, to keep the whole benchmark near a minute on 2 shared cores:
#: SQLite FULL turn-taking waits on an fsync per envelope).
REPEATS = 3
#: The raw skeleton's bounded inbox per agent (its posters wait for room).
RAW_INBOX = 1000


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
class EndpointRun:
    posts_per_s: float
    #: Store commits (fsyncs at synchronous=FULL) per post, for SQLite.
    commits_per_post: float | None


def commits(store: Store) -> int:
    return store.statistics().batches if isinstance(store, SQLiteStore) else 0


async def endpoint_run(store: Store, cursor_flush_interval: float = 0.0) -> EndpointRun:
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
            for i in range(ENDPOINT_POSTS):
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
        while sum(e.notified for e in endpoints) - before < SESSIONS * ENDPOINT_POSTS:
            await trio.lowlevel.checkpoint()
        elapsed = time.perf_counter() - start
        committed = commits(store) - commits_before
        nursery.cancel_scope.cancel()
    return EndpointRun(
        SESSIONS * ENDPOINT_POSTS / elapsed,
        committed / (SESSIONS * ENDPOINT_POSTS) if isinstance(store, SQLiteStore) else None,
    )


@attrs.frozen
class RawPost:
    envelope: Envelope
    reply: trio.MemorySendChannel[str]


async def endpoint_raw_run() -> float:
    """Posts/s through the endpoint row's skeleton: one task per session, no acks."""
    done = trio.Event()
    delivered = 0

    async def consumer(inbox: trio.MemoryReceiveChannel[Envelope]) -> None:
        nonlocal delivered
        async for _ in inbox:
            delivered += 1
            if delivered == SESSIONS * ENDPOINT_POSTS:
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
        for i in range(ENDPOINT_POSTS):
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
    return SESSIONS * ENDPOINT_POSTS / elapsed


# -- the agent path ---------------------------------------------------------------------------


class Cheap:
    """An agent whose turn costs next to nothing: it answers "ok" at once."""

    async def respond(self, turn: Turn) -> str:
        return "ok"


@attrs.frozen
class PathRun:
    """One run of the agent path or its raw skeleton."""

    #: Turns per second: a post delivered, a turn, its answer delivered, both acked.
    turns_per_s: float
    #: CPU (every thread of the process) per envelope, posts and answers both counted.
    cpu_us_per_envelope: float
    #: Store commits per envelope, for SQLite.
    commits_per_envelope: float | None = None


@attrs.frozen
class FloodRun:
    """How a flood ended: completed, or the first refusal and how far it got."""

    completed: bool
    posts_accepted: int
    answers_received: int
    seconds: float
    #: ``InboxFull: ...`` (the first refusal's type and message), or why it stopped.
    ending: str | None = None


Chat = tuple[HumanClient, str, trio.MemoryReceiveChannel[Envelope]]


async def _open_chats(
    people: HubClient,
    agents: HubClient,
    sessions: int,
    on_answer: Callable[[], None],
    rule: Rule | None = None,
) -> list[Chat]:
    """``sessions`` conversations person -> agent; each answer goes to the person's channel."""
    chats: list[Chat] = []
    for n in range(sessions):
        await agents.register(Cheap(), Passport(name=f"agent-{n}"), rule=rule)
        person = await people.register_human(Passport(name=f"person-{n}"))
        send, recv = trio.open_memory_channel[Envelope](math.inf)

        async def answered(
            envelope: Envelope,
            me: str = person.agent_id,
            send: trio.MemorySendChannel[Envelope] = send,
        ) -> None:
            if envelope.event_type == EV_TEXT and envelope.sender_id != me:
                send.send_nowait(envelope)
                on_answer()

        person.on_envelope(answered)
        # No max_turns cap: a run posts past the default 200 texts.
        chat = await person.open(
            type="conversation", target=f"agent-{n}", knobs={"max_turns": None}
        )
        chats.append((person, chat.session_id, recv))
    return chats


async def agent_run(store: Store, posts: int, sessions: int = SESSIONS) -> PathRun:
    """Turn-taking conversations through AgentClients on ``store``."""
    async with (
        open_hub(store, ttl_sweep_interval=0) as hub,
        HubClient(LocalLink(hub)) as people,
        HubClient(LocalLink(hub)) as agents,
    ):
        chats = await _open_chats(people, agents, sessions, lambda: None)

        async def converse(chat: Chat) -> None:
            person, session_id, answers = chat
            for i in range(posts):
                await person.send(session_id, f"message {i}")
                await answers.receive()

        commits_before = commits(store)
        cpu, start = time.process_time(), time.perf_counter()
        async with trio.open_nursery() as nursery:
            for chat in chats:
                nursery.start_soon(converse, chat)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        committed = commits(store) - commits_before
    turns = sessions * posts
    return PathRun(
        turns / elapsed,
        cpu * 1e6 / (2 * turns),
        committed / (2 * turns) if isinstance(store, SQLiteStore) else None,
    )


async def agent_flood(posts: int, sessions: int = SESSIONS, rule: Rule | None = None) -> FloodRun:
    """Every person posts ``posts`` texts without waiting, on MemoryStore; the agents have
    ``rule`` (None: the default rules)."""
    total = sessions * posts
    accepted = answers = 0
    all_answered = trio.Event()
    endings: list[str] = []

    def on_answer() -> None:
        nonlocal answers
        answers += 1
        if answers == total:
            all_answered.set()

    start = time.perf_counter()
    finished = False
    with trio.move_on_after(FLOOD_DEADLINE_S) as scope:
        async with (
            open_hub(MemoryStore(), ttl_sweep_interval=0) as hub,
            HubClient(LocalLink(hub)) as people,
            HubClient(LocalLink(hub)) as agents,
        ):
            chats = await _open_chats(people, agents, sessions, on_answer, rule)
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:

                async def flood(chat: Chat) -> None:
                    nonlocal accepted
                    person, session_id, _answers = chat
                    for i in range(posts):
                        try:
                            await person.send(session_id, f"message {i}")
                        except NetworkError as exc:  # InboxFull, RateLimited: the outcome
                            endings.append(f"{type(exc).__name__}: {exc}")
                            nursery.cancel_scope.cancel()
                            return
                        accepted += 1

                for chat in chats:
                    nursery.start_soon(flood, chat)
            if not endings:
                await all_answered.wait()
            seconds = time.perf_counter() - start
            finished = True
            # A refused flood leaves a backlog: cancel rather than let the hub work it off.
            scope.cancel()
    if not finished:
        endings.append(f"not done after {FLOOD_DEADLINE_S:.0f} s")
        seconds = time.perf_counter() - start
    return FloodRun(not endings, accepted, answers, seconds, endings[0] if endings else None)


# -- the raw skeleton of the agent path -----------------------------------------------------


@attrs.frozen
class RawAck:
    recipient_id: str
    seq: int


@attrs.frozen
class RawSubmit:
    envelope: Envelope
    accepted: trio.MemorySendChannel[str]


async def raw_path_run(posts: int, *, turn_taking: bool, sessions: int = SESSIONS) -> PathRun:
    """The agent path's work in bare trio: a session task, bounded inboxes, acks."""
    total = sessions * posts
    answered = 0
    all_answered = trio.Event()

    async def session(
        mailbox: trio.MemoryReceiveChannel[RawSubmit | RawAck],
        inboxes: dict[str, trio.MemorySendChannel[Envelope]],
    ) -> None:
        wal: list[Envelope] = []
        cursors = dict.fromkeys(inboxes, 0)
        async for msg in mailbox:
            if isinstance(msg, RawAck):
                cursors[msg.recipient_id] = max(cursors[msg.recipient_id], msg.seq)
                continue
            seq = len(wal) + 1
            stamped = attrs.evolve(msg.envelope, envelope_id=f"{seq:032x}", seq=seq)
            wal.append(stamped)
            msg.accepted.send_nowait(stamped.envelope_id)
            for recipient_id, inbox in inboxes.items():
                if recipient_id != stamped.sender_id:
                    inbox.send_nowait(stamped)  # room was reserved by the poster (slots)

    async def agent(
        me: str,
        inbox: trio.MemoryReceiveChannel[Envelope],
        mailbox: trio.MemorySendChannel[RawSubmit | RawAck],
        slots: trio.Semaphore,
    ) -> None:
        accepted_send, accepted_recv = trio.open_memory_channel[str](1)
        async for envelope in inbox:
            answer = Envelope(
                session_id=envelope.session_id,
                sender_id=me,
                event_type=EV_TEXT,
                event_data={"text": "ok"},
                causation_id=envelope.envelope_id,
            )
            await mailbox.send(RawSubmit(answer, accepted_send))
            await accepted_recv.receive()
            await mailbox.send(RawAck(me, envelope.seq))
            slots.release()

    async def person(
        me: str,
        inbox: trio.MemoryReceiveChannel[Envelope],
        mailbox: trio.MemorySendChannel[RawSubmit | RawAck],
        answers: trio.MemorySendChannel[Envelope],
    ) -> None:
        nonlocal answered
        async for envelope in inbox:
            if turn_taking:
                answers.send_nowait(envelope)
            answered += 1
            if answered == total:
                all_answered.set()
            await mailbox.send(RawAck(me, envelope.seq))

    async def poster(
        me: str,
        session_id: str,
        mailbox: trio.MemorySendChannel[RawSubmit | RawAck],
        slots: trio.Semaphore,
        answers: trio.MemoryReceiveChannel[Envelope],
    ) -> None:
        accepted_send, accepted_recv = trio.open_memory_channel[str](1)
        for i in range(posts):
            await slots.acquire()  # room in the agent's inbox: wait, never refuse
            text = Envelope(
                session_id=session_id,
                sender_id=me,
                event_type=EV_TEXT,
                event_data={"text": f"message {i}"},
            )
            await mailbox.send(RawSubmit(text, accepted_send))
            await accepted_recv.receive()
            if turn_taking:
                await answers.receive()

    async with trio.open_nursery() as nursery:
        posters = []
        for n in range(sessions):
            mailbox_send, mailbox_recv = trio.open_memory_channel[RawSubmit | RawAck](math.inf)
            agent_send, agent_recv = trio.open_memory_channel[Envelope](RAW_INBOX)
            person_send, person_recv = trio.open_memory_channel[Envelope](math.inf)
            answers_send, answers_recv = trio.open_memory_channel[Envelope](math.inf)
            slots = trio.Semaphore(RAW_INBOX)
            inboxes = {f"person-{n}": person_send, f"agent-{n}": agent_send}
            nursery.start_soon(session, mailbox_recv, inboxes)
            nursery.start_soon(agent, f"agent-{n}", agent_recv, mailbox_send, slots)
            nursery.start_soon(person, f"person-{n}", person_recv, mailbox_send, answers_send)
            posters.append((f"person-{n}", f"s{n}", mailbox_send, slots, answers_recv))
        await trio.testing.wait_all_tasks_blocked()
        cpu, start = time.process_time(), time.perf_counter()
        async with trio.open_nursery() as posting:
            for args in posters:
                posting.start_soon(poster, *args)
        await all_answered.wait()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        nursery.cancel_scope.cancel()
    return PathRun(total / elapsed, cpu * 1e6 / (2 * total))


def sqlite(synchronous: str) -> Callable[[Path], Store]:
    return lambda d: SQLiteStore(d / f"{time.monotonic_ns()}.db", synchronous=synchronous)


def _ratio_line(name: str, runs: list[PathRun], raw: list[PathRun], target: float | None) -> str:
    rate = statistics.median(run.turns_per_s for run in runs)
    cpu = statistics.median(run.cpu_us_per_envelope for run in runs)
    line = f"  {name:<30} {rate:>8,.0f} turns/s {cpu:>7.1f} us CPU/envelope"
    if target is not None:
        ratio = statistics.median(
            run.turns_per_s / r.turns_per_s for run, r in zip(runs, raw, strict=True)
        )
        verdict = "ok" if ratio >= target else "MISSED"
        line += f"   {ratio:.2f}x raw (target {target}x: {verdict})"
    per_envelope = [run.commits_per_envelope for run in runs if run.commits_per_envelope]
    if per_envelope:
        line += f"   {statistics.median(per_envelope):.3f} commits/envelope"
    return line


def agent_path(directory: Path, posts: int, repeats: int, sessions: int) -> None:
    """The agent path on MemoryStore and SQLite FULL against its raw skeleton, interleaved."""
    engines: dict[str, tuple[Callable[[Path], Store], float]] = {
        "memory": (lambda _: MemoryStore(), 0.3),
        "sqlite FULL": (sqlite("FULL"), 0.15),
    }
    raw: list[PathRun] = []
    runs: dict[str, list[PathRun]] = {name: [] for name in engines}
    for _ in range(repeats):
        raw.append(trio.run(lambda: raw_path_run(posts, turn_taking=True, sessions=sessions)))
        for name, (make, _target) in engines.items():
            runs[name].append(trio.run(agent_run, make(directory), posts, sessions))
    print(
        f"agent path: {sessions} conversations person -> AgentClient, turn-taking "
        f"(each post waits for its answer), {posts} posts each; medians of {repeats} "
        "interleaved runs"
    )
    print(_ratio_line("raw trio skeleton", raw, raw, None))
    for name, (_make, target) in engines.items():
        print(_ratio_line(f"AgentClients, {name}", runs[name], raw, target))
    cpu_raw = statistics.median(r.cpu_us_per_envelope for r in raw)
    cpu_ours = statistics.median(r.cpu_us_per_envelope for r in runs["memory"])
    print(
        f"  CPU per envelope on MemoryStore: {cpu_ours:.0f} us vs {cpu_raw:.0f} us raw "
        f"({cpu_ours / cpu_raw:.1f}x)"
    )


def flood(posts: int, sessions: int) -> None:
    """Whether ``sessions`` x ``posts`` posts into AgentClients complete (default rules)."""
    print(
        f"flood: {sessions} people x {posts:,} posts into AgentClients without waiting for "
        "answers, default rules, MemoryStore"
    )
    run = trio.run(agent_flood, posts, sessions)
    total = sessions * posts
    if run.completed:
        outcome = f"completed: {total / run.seconds:,.0f} turns/s ({run.seconds:.2f} s)"
    else:
        outcome = (
            f"did NOT complete ({run.ending}); {run.posts_accepted:,} of {total:,} posts "
            f"accepted, {run.answers_received:,} answered, after {run.seconds:.2f} s"
        )
    print(f"  {'AgentClients, memory':<30} {outcome}")
    raw = trio.run(lambda: raw_path_run(posts, turn_taking=False, sessions=sessions))
    print(
        f"  {'raw trio skeleton':<30} completed: {raw.turns_per_s:,.0f} turns/s, "
        f"{raw.cpu_us_per_envelope:.1f} us CPU/envelope (posters wait for inbox room)"
    )


def endpoints(directory: Path, repeats: int, every_engine: bool = False) -> None:
    """The acking-endpoint rows (before issue 15): posts into the hub, acked in send_frame.

    MemoryStore and SQLite FULL; ``every_engine`` adds SQLite NORMAL and FULL with
    ``cursor_flush_interval=0.05``.
    """
    # name -> (store factory, target ratio, cursor_flush_interval)
    engines: dict[str, tuple[Callable[[Path], Store], float, float]] = {
        "memory": (lambda _: MemoryStore(), 0.3, 0.0),
        "sqlite FULL": (sqlite("FULL"), 0.15, 0.0),
    }
    if every_engine:
        engines["sqlite NORMAL"] = (sqlite("NORMAL"), 0.15, 0.0)
        # The lever the hub has on SQLite: acks coalesced for 50 ms share a cursor write.
        engines["sqlite FULL, cur50"] = (sqlite("FULL"), 0.15, 0.05)
    raw: list[float] = []
    hub: dict[str, list[EndpointRun]] = {name: [] for name in engines}
    # Interleaved, so a change in the machine's load hits both sides of each ratio alike.
    for _ in range(repeats):
        raw.append(trio.run(endpoint_raw_run))
        for name, (make, _target, interval) in engines.items():
            hub[name].append(trio.run(endpoint_run, make(directory), interval))
    print(
        f"acking endpoints (no client loop, no inbox, no turn): {SESSIONS} sessions x "
        f"{ENDPOINT_POSTS} posts; medians of {repeats} interleaved runs"
    )
    print(f"  {'raw trio skeleton, no acks':<30} {statistics.median(raw):>8,.0f} posts/s")
    for name, (_make, target, _interval) in engines.items():
        runs = hub[name]
        rate = statistics.median(run.posts_per_s for run in runs)
        ratio = statistics.median(run.posts_per_s / r for run, r in zip(runs, raw, strict=True))
        verdict = "ok" if ratio >= target else "MISSED"
        line = (
            f"  {'endpoints, ' + name:<30} {rate:>8,.0f} posts/s   {ratio:.2f}x raw "
            f"(target {target}x: {verdict})"
        )
        per_post = [run.commits_per_post for run in runs if run.commits_per_post is not None]
        if per_post:
            line += f"   {statistics.median(per_post):.3f} commits/post"
        print(line)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_hub", description=__doc__)
    parser.add_argument("--posts", type=int, default=POSTS, help="turn-taking posts per chat")
    parser.add_argument("--flood-posts", type=int, default=FLOOD_POSTS, help="posts per person")
    parser.add_argument("--sessions", type=int, default=SESSIONS, help="conversations")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="runs per median")
    parser.add_argument(
        "--part",
        choices=("agent", "flood", "endpoints"),
        nargs="+",
        default=["agent", "flood", "endpoints"],
        help="which tables to print",
    )
    parser.add_argument(
        "--every-endpoint-engine",
        action="store_true",
        help="acking endpoints also on SQLite NORMAL and FULL with cursor_flush_interval=0.05",
    )
    args = parser.parse_args([] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="troupe-bench-hub-") as tmp:
        directory = Path(tmp)
        if "agent" in args.part:
            agent_path(directory, args.posts, args.repeats, args.sessions)
        if "flood" in args.part:
            flood(args.flood_posts, args.sessions)
        if "endpoints" in args.part:
            endpoints(directory, args.repeats, args.every_endpoint_engine)


if __name__ == "__main__":
    main(sys.argv[1:])
