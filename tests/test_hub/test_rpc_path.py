"""The RPC path's scheduler rounds: what a request costs between the wire and the hub.

Each trip through trio's scheduler that a request's critical path takes is a run-loop round
(an epoll call, every runnable task stepped) before the answer can go: these tests count
the steps of the tasks on that path, so a checkpoint that serves nothing does not come back
unnoticed.
"""

from __future__ import annotations

import contextlib

import trio
import trio.testing

from troupe import EV_TEXT, DecodeError, Envelope
from troupe.api import FindAgentId, PostEnvelope, SetSkill
from troupe.client._remote import RemoteHub
from troupe.model import Frame, RequestFrame, ResponseFrame

from ..harness import StepCounter, open_hub_pair


def steps_of(suffix: str) -> StepCounter:
    """Counts the steps of the tasks whose name ends with ``suffix`` (once added)."""
    return StepCounter(lambda task: task.name.endswith(suffix))


async def test_the_reader_hands_a_request_on_without_a_scheduler_round_while_slots_are_free(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Taking an in-flight slot used to be an awaited acquire: a round per request before its
    # task could start. A free slot is now taken at once; the reader's one checkpoint per
    # request is reading the next frame.
    async with open_hub_pair() as h:
        bob = await h.agent("bob", connect=False)
        client = await h.connection("ep-bob")
        await client.bind(bob.id)
        await h.settle()
        reader = steps_of("ep-bob")
        trio.lowlevel.add_instrument(reader)
        count = 32
        for n in range(count):
            client.send(RequestFrame(request_id=f"r{n}", op="find_agent_id", params={"name": "x"}))
        await h.settle()
        trio.lowlevel.remove_instrument(reader)
        answered = [f.request_id for f in client.frames if isinstance(f, ResponseFrame)]
        assert sorted(answered) == sorted(f"r{n}" for n in range(count))
        assert reader.steps <= count + 2  # (was 2 per request)


async def test_a_read_over_a_connection_yields_only_sending_its_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A read handler's own checkpoint cost a scheduler round per request over a wire: the
    # request's task yields sending the answer anyway. In process a read is still a
    # schedule point, as every trio call is.
    async with open_hub_pair() as h:
        bob = await h.agent("bob", connect=False)
        client = await h.connection("ep-bob")
        await client.bind(bob.id)
        await h.settle()
        requests = steps_of("Workers._work")
        trio.lowlevel.add_instrument(requests)
        count = 8
        for n in range(count):
            client.send(RequestFrame(request_id=f"r{n}", op="find_agent_id", params={"name": "x"}))
            await h.settle()
        trio.lowlevel.remove_instrument(requests)
        answered = [f.request_id for f in client.frames if isinstance(f, ResponseFrame)]
        assert answered == [f"r{n}" for n in range(count)]
        # Its start, and after the answer's send (it was three: the handler yielded too).
        assert requests.steps == 2 * count
        with trio.testing.assert_checkpoints():
            await h.hub.call(FindAgentId(name="x"))


class AnsweringConnection:
    """A connection whose peer answers every request at once; records what was sent."""

    def __init__(self, hub: RemoteHub) -> None:
        self.hub = hub
        self.sent: list[Frame] = []
        #: The caller's steps so far, at each send.
        self.steps_at_send: list[int] = []
        self.caller = steps_of("caller")

    async def send_frame(self, frame: Frame) -> None:
        self.steps_at_send.append(self.caller.steps)
        self.sent.append(frame)
        assert isinstance(frame, RequestFrame)
        self.hub.answer(ResponseFrame(request_id=frame.request_id, ok=True))
        await trio.lowlevel.checkpoint()


async def test_a_call_on_a_ready_connection_sends_in_the_callers_first_step() -> None:
    # Waiting on the "connected" event, already set, cost a scheduler round per call.
    hub = RemoteHub()
    conn = AnsweringConnection(hub)
    hub.attach(conn)  # type: ignore[arg-type]
    hub.ready(conn)  # type: ignore[arg-type]
    trio.lowlevel.add_instrument(conn.caller)

    async def caller() -> None:
        for _ in range(3):
            await hub.call(SetSkill(agent_id="a", skill_md=None))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, name="caller")
    trio.lowlevel.remove_instrument(conn.caller)
    # The first send in the caller's first step; then two steps a call: the send's own
    # checkpoint, and taking the answer (it used to take one more each: [2, 5, 8]).
    assert conn.steps_at_send == [1, 3, 5]
    # Request ids are a counter's: unique on this client, and cheap.
    assert [f.request_id for f in conn.sent if isinstance(f, RequestFrame)] == ["1", "2", "3"]


async def test_posts_without_a_key_get_distinct_unguessable_ones() -> None:
    # A key makes a post safe to repeat after a reconnect; it was a uuid4 per post (1.9 µs),
    # now 128 random bits drawn 256 keys at a time (0.15 µs). Not a prefix and a counter:
    # keys reach every recipient, who could then post under this client's next key first.
    keys: list[str] = []
    for _ in range(2):
        hub = RemoteHub()
        conn = AnsweringConnection(hub)
        hub.attach(conn)  # type: ignore[arg-type]
        hub.ready(conn)  # type: ignore[arg-type]
        for n in range(3):
            envelope = Envelope(
                session_id="s", sender_id="a", event_type=EV_TEXT, event_data={"text": str(n)}
            )
            with contextlib.suppress(DecodeError):  # (the answer is not an Accepted)
                await hub.call(PostEnvelope(envelope=envelope))
        for frame in conn.sent:
            assert isinstance(frame, RequestFrame)
            keys.append(frame.params["envelope"]["idempotency_key"])
    assert len(set(keys)) == 6
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in keys)
    # No two share even half their digits (2^-64 a pair by chance): nothing to guess from.
    assert len({k[:16] for k in keys}) == len({k[16:] for k in keys}) == 6


class SpawnsOf(trio.abc.Instrument):
    """Counts the tasks started whose name ends with ``suffix``."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.suffix):
            self.spawned += 1


async def test_requests_are_served_by_tasks_that_wait_for_the_next_not_one_task_each(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A task per request cost its start and end (~4.5 µs of each request on the hub).
    async with open_hub_pair() as h:
        bob = await h.agent("bob", connect=False)
        client = await h.connection("ep-bob")
        await client.bind(bob.id)
        await h.settle()
        workers = SpawnsOf("Workers._work")
        trio.lowlevel.add_instrument(workers)
        for n in range(8):  # at once: served at once, by as many tasks
            client.send(RequestFrame(request_id=f"a{n}", op="find_agent_id", params={"name": "x"}))
        await h.settle()
        at_once = workers.spawned
        for n in range(16):  # one after the other: by the tasks already there
            client.send(RequestFrame(request_id=f"b{n}", op="find_agent_id", params={"name": "x"}))
            await h.settle()
        trio.lowlevel.remove_instrument(workers)
        answered = [f.request_id for f in client.frames if isinstance(f, ResponseFrame)]
        assert sorted(answered) == sorted(
            [f"a{n}" for n in range(8)] + [f"b{n}" for n in range(16)]
        )
        assert 1 <= at_once <= 8
        assert workers.spawned == at_once
