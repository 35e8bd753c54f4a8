"""Closing an in-process HubClient: nothing of it outlives its ``async with``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import trio
from trio.testing import MockClock

from troupe import (
    EV_TEXT,
    Envelope,
    HubClient,
    LocalLink,
    Passport,
    Resume,
    Rule,
    StreamChunk,
    TaskMetadata,
    TaskSpec,
    TaskState,
    Turn,
    open_hub,
)
from troupe.api import GetAgent
from troupe.client import Disconnected
from troupe.hub import Hub
from troupe.store import MemoryStore

from ..harness import WAIT, Lines, Scripted, hub_clock, of_type, open_hub_pair, said


class Uncancellable:
    """An agent whose turn cannot be cancelled (a blocking SDK call in a worker thread)."""

    def __init__(self, log: list[str], takes: float) -> None:
        self.log = log
        self.takes = takes
        self.started = trio.Event()

    async def respond(self, turn: Turn) -> None:
        self.log.append("respond start")
        self.started.set()
        with trio.CancelScope(shield=True):
            await trio.sleep(self.takes)
        self.log.append("respond end")


async def test_async_with_waits_for_a_turn_that_cannot_be_cancelled(
    autojump_clock: MockClock,
) -> None:
    log: list[str] = []
    bot = Uncancellable(log, takes=1.0)
    with trio.fail_after(WAIT):
        async with open_hub(ttl_sweep_interval=0, clock=hub_clock, passivate_after=None) as hub:
            async with HubClient(LocalLink(hub)) as people:
                al = await people.register_human(Passport(name="al", kind="human"))
                async with HubClient(LocalLink(hub)) as bots:
                    await bots.register(bot, Passport(name="bot"), Resume())
                    ch = await al.open(type="consulting", target="bot")
                    await al.send(ch.session_id, "q")
                    await bot.started.wait()
                log.append("client block exited")
    assert log == ["respond start", "respond end", "client block exited"]


async def test_close_gives_up_on_a_turn_that_takes_too_long(autojump_clock: MockClock) -> None:
    log: list[str] = []
    bot = Uncancellable(log, takes=3600.0)
    with trio.fail_after(WAIT * 200):
        async with open_hub(ttl_sweep_interval=0, clock=hub_clock, passivate_after=None) as hub:
            async with HubClient(LocalLink(hub)) as people:
                al = await people.register_human(Passport(name="al", kind="human"))
                bots = HubClient(LocalLink(hub))
                await bots.register(bot, Passport(name="bot"), Resume())
                ch = await al.open(type="consulting", target="bot")
                await al.send(ch.session_id, "q")
                await bot.started.wait()
                began = trio.current_time()
                await bots.close()
                # Bounded: close() does not wait an hour for the turn.
                assert trio.current_time() - began < 60
                log.append("closed")
    assert log == ["respond start", "closed", "respond end"]


class ClosesItsClient:
    """An agent whose turn closes the HubClient it runs under, shielded (a cleanup path)."""

    def __init__(self) -> None:
        self.took: float | None = None

    async def respond(self, turn: Turn) -> None:
        began = trio.current_time()
        with trio.CancelScope(shield=True):
            await turn.client.hub_client.close()
        self.took = trio.current_time() - began


async def test_a_turn_closing_its_own_client_does_not_wait_for_itself(
    autojump_clock: MockClock,
) -> None:
    bot = ClosesItsClient()
    with trio.fail_after(WAIT):
        async with open_hub(ttl_sweep_interval=0, clock=hub_clock, passivate_after=None) as hub:
            async with HubClient(LocalLink(hub)) as people:
                al = await people.register_human(Passport(name="al", kind="human"))
                bots = HubClient(LocalLink(hub))
                await bots.register(bot, Passport(name="bot"), Resume())
                ch = await al.open(type="consulting", target="bot")
                await al.send(ch.session_id, "q")
                await trio.testing.wait_all_tasks_blocked()
                assert bots.closed
    assert bot.took == 0


TASK = TaskMetadata(task_id="t1", owner_id="a1", spec=TaskSpec(title="t"))
POST = Envelope(session_id="s1", sender_id="a1", event_type="text", event_data={"text": "hi"})

#: Every method of a HubClient that reaches the hub, called with plausible arguments.
CALLS: dict[str, Callable[[HubClient], object]] = {
    "register": lambda hc: hc.register(Scripted("b"), Passport(name="b")),
    "register_human": lambda hc: hc.register_human(Passport(name="h", kind="human")),
    "attach": lambda hc: hc.attach(Scripted("a"), "a"),
    "get_agent": lambda hc: hc.get_agent("a"),
    "get_resume": lambda hc: hc.get_resume("a1"),
    "get_skill": lambda hc: hc.get_skill("a1"),
    "get_rule": lambda hc: hc.get_rule("a1"),
    "list_agents": lambda hc: hc.list_agents(),
    "set_resume": lambda hc: hc.set_resume("a1", Resume()),
    "set_skill": lambda hc: hc.set_skill("a1", "# a"),
    "set_rule": lambda hc: hc.set_rule("a1", Rule()),
    "unregister_agent": lambda hc: hc.unregister_agent("a1"),
    "create_session": lambda hc: hc.create_session(
        creator_id="a1", manifest_type="conversation", participants=["a2"]
    ),
    "get_session": lambda hc: hc.get_session("s1"),
    "list_sessions": lambda hc: hc.list_sessions(),
    "close_session": lambda hc: hc.close_session("s1"),
    "post_envelope": lambda hc: hc.post_envelope(POST),
    "post": lambda hc: hc.post(POST),
    "read_wal": lambda hc: hc.read_wal("s1"),
    "stream_chunk": lambda hc: hc.stream_chunk(
        StreamChunk(session_id="s1", sender_id="a1", stream_id="x", index=0, text="t")
    ),
    "can_send": lambda hc: hc.can_send("s1", "a1"),
    "acan_send": lambda hc: hc.acan_send("s1", "a1"),
    "default_view_policy": lambda hc: hc.default_view_policy("s1", "a1"),
    "adapter_state": lambda hc: hc.adapter_state("s1"),
    "get_task": lambda hc: hc.get_task("t1"),
    "list_tasks": lambda hc: hc.list_tasks(),
    "observe_task": lambda hc: hc.observe_task(TASK),
    "update_task": lambda hc: hc.update_task("t1", state=TaskState.RUNNING),
    "record_observation": lambda hc: hc.record_observation(
        owner_id="a1", capability="c", outcome=TaskState.COMPLETED
    ),
    "checkpoint_task": lambda hc: hc.checkpoint_task("t1", {}),
    "read_task_checkpoint": lambda hc: hc.read_task_checkpoint("t1"),
    "pending_turn": lambda hc: hc.pending_turn("s1", "a1"),
    "learn_names": lambda hc: hc.learn_names(["a1"]),
    "find_envelope_by_causation": lambda hc: hc.find_envelope_by_causation(
        "s1", sender_id="a1", causation_id="e1"
    ),
    "pending_turns_for": lambda hc: hc.pending_turns_for("a1"),
    "report_turn_failure": lambda hc: hc.report_turn_failure(
        session_id="s1", agent_id="a1", envelope_id="e1", exc=ValueError()
    ),
}

#: HubClient methods that do not reach the hub: they stay usable after close().
LOCAL = {
    "register_session_type",
    "session_type_for",
    "name_for",
    "note_turn_failure",
    "turn_failure",
    "session_status",
    "has_floor",
}
#: HubClient methods about the connection itself, and the generic ``call`` (tested below).
CONNECTION = {"close", "shutdown", "identities", "call"}


def test_every_hub_call_is_listed() -> None:
    public = {
        name
        for name in dir(HubClient)  # its own methods and those of HubCalls
        if not name.startswith("_") and callable(getattr(HubClient, name))
    }
    assert public - LOCAL - CONNECTION == set(CALLS)


async def test_a_closed_client_refuses_a_generic_call_by_its_op(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        hc = p.client()
        await hc.close()
        with pytest.raises(RuntimeError, match=r"^HubClient is closed: cannot call get_agent$"):
            await hc.call(GetAgent(name_or_id="a"))


@pytest.mark.parametrize("method", sorted(CALLS))
async def test_a_closed_client_refuses_every_hub_call_by_name(
    method: str, autojump_clock: MockClock
) -> None:
    async with open_hub_pair() as p:
        hc = p.client()
        await hc.register(Scripted("a"), Passport(name="a"))
        await hc.close()

        async def call() -> None:
            result = CALLS[method](hc)
            if inspect.isawaitable(result):
                await result

        with pytest.raises(RuntimeError, match=f"^HubClient is closed: cannot call {method}$"):
            await call()


async def test_the_hub_ending_disconnects_an_open_in_process_client(
    autojump_clock: MockClock,
) -> None:
    stop_hub = trio.Event()
    woken: list[str] = []

    async def run_hub(*, task_status: trio.TaskStatus[Hub]) -> None:
        async with open_hub(ttl_sweep_interval=0, clock=hub_clock, passivate_after=None) as hub:
            task_status.started(hub)
            await stop_hub.wait()

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            hub = await nursery.start(run_hub)
            hc = HubClient(LocalLink(hub))  # left open
            al = await hc.register_human(Passport(name="al", kind="human"))
            bot = await hc.register(Scripted("bot"), Passport(name="bot"))
            ch = await al.open(type="conversation", target="bot")

            async def pull() -> None:
                with pytest.raises(Disconnected, match="'al'"):
                    await al.next_envelope(predicate=lambda e: False)
                woken.append("next_envelope")

            async def wait() -> None:
                with pytest.raises(Disconnected, match="'bot'"):
                    await bot.wait_for_channel_event(
                        channel_id=ch.session_id, predicate=lambda e: False, timeout=WAIT
                    )
                woken.append("wait_for_channel_event")

            nursery.start_soon(pull)
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            stop_hub.set()
    assert sorted(woken) == ["next_envelope", "wait_for_channel_event"]
    assert al.disconnected
    assert bot.disconnected
    with pytest.raises(Disconnected):
        await al.send(ch.session_id, "anyone?")


async def test_closing_at_once_keeps_the_receipt_of_what_was_consumed(
    autojump_clock: MockClock,
) -> None:
    # Issue 17: a human got a reply and closed the client at once; the receipt of that
    # delivery was lost, so after the hub reopened the same wait returned the old reply.
    store = MemoryStore()
    async with open_hub_pair(store) as p:
        await p.scripted("bot", Lines("pong"))
        async with HubClient(LocalLink(p.hub)) as people:
            me = await people.register_human(Passport(name="me", kind="human"))
            shown: list[str | None] = []

            async def show(envelope: Envelope) -> None:  # a UI drawing what arrives
                await trio.sleep(0.1)
                shown.append(envelope.text)

            me.on_envelope(show)
            ch = await me.open(type="conversation", target="bot")
            await me.send(ch.session_id, "ping")
            reply = await me.wait_for_channel_event(
                channel_id=ch.session_id, predicate=said("pong"), timeout=WAIT
            )
            assert reply.text == "pong"
    async with open_hub_pair(store) as p:
        await p.hc.attach(Scripted("bot", Lines("pong again")), "bot")
        _, back = await p.reattach("me")
        await back.send(ch.session_id, "ping again")
        again = await back.wait_for_channel_event(
            channel_id=ch.session_id, predicate=of_type(EV_TEXT), timeout=WAIT
        )
        assert again.text == "pong again"
