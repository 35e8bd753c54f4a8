"""Closing an in-process HubClient: nothing of it outlives its ``async with``."""

from __future__ import annotations

import trio
from trio.testing import MockClock

from troupe import HubClient, LocalLink, Passport, Resume, Turn, open_hub

from .harness import WAIT, hub_clock


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
