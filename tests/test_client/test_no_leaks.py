"""Nothing outlives the hub: in-process clients' loops and turns end with its ``async with``."""

from __future__ import annotations

import trio
import trio.lowlevel
from trio.testing import MockClock

from troupe import EV_TEXT, HubClient, LocalLink, Passport, Resume, Turn, open_hub

from ..harness import WAIT, Scripted, example, hub_clock


def live_tasks() -> set[trio.lowlevel.Task]:
    """Every task of this run, walked down from the root task's nurseries."""
    found: set[trio.lowlevel.Task] = set()
    root = trio.lowlevel.current_root_task()
    assert root is not None
    stack = [root]
    while stack:
        task = stack.pop()
        found.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


class Stuck:
    """An agent whose turn never ends by itself."""

    def __init__(self) -> None:
        self.started = trio.Event()

    async def respond(self, turn: Turn) -> str:
        self.started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_hub_with_live_clients_and_turns_in_flight_leaves_no_task(
    autojump_clock: MockClock,
) -> None:
    before = live_tasks()
    stuck = Stuck()
    with trio.fail_after(WAIT):
        async with open_hub(ttl_sweep_interval=0, clock=hub_clock) as hub:
            async with HubClient(LocalLink(hub)) as first:
                await first.register(Scripted("echo"), Passport(name="echo"), Resume())
            second = HubClient(LocalLink(hub))  # never closed
            await second.register(stuck, Passport(name="stuck"), Resume())
            await second.attach(Scripted("echo"), "echo")
            third = HubClient(LocalLink(hub))  # never closed
            me = await third.register_human(Passport(name="me", kind="human"))
            for target in ("stuck", "echo"):
                ch = await me.open(type="conversation", target=target)
                await me.send(ch.session_id, "hello")
            await me.wait_for_channel_event(
                channel_id=ch.session_id,
                predicate=lambda e: e.event_type == EV_TEXT and e.sender_id != me.agent_id,
                timeout=WAIT,
            )
            await stuck.started.wait()
            assert len(live_tasks() - before) > 0
        # The turn was cancelled, the loops ended, the hub's actors stopped.
    assert live_tasks() - before == set()
    assert live_tasks() <= before


async def test_the_design_snippet_leaves_no_task(autojump_clock: MockClock) -> None:
    # examples/quickstart.py is the DESIGN.md snippet: a HubClient without ``async with``.
    before = live_tasks()
    with trio.fail_after(WAIT):
        await example("quickstart").main()
    assert live_tasks() - before == set()
