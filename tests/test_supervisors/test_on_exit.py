"""``Supervisor.on_exit``: a child that ends without a crash and is not restarted is reported
once, from its own task, when a child with its id may be started again."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe.actors import Actor
from troupe.supervisors import ChildSpec, Supervisor, open_dynamic_supervisor, open_supervisor

from ._children import Log, Puppet, settle, start_actor, worker


async def test_an_orderly_exit_and_a_termination_are_reported_crashes_are_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    exits: list[str] = []
    async with open_dynamic_supervisor(max_restarts=5, within_s=10) as sup:
        sup.on_exit = exits.append
        quits = await start_actor(sup, worker("quits", log, restart="transient"))
        crashes = await start_actor(sup, worker("crashes", log, restart="transient"))
        await start_actor(sup, worker("terminated", log, restart="transient"))
        await quits.stop()
        await crashes.tell("crash")  # restarted: not an exit
        await settle()
        await sup.terminate_child("terminated")
        assert exits == ["quits", "terminated"]
    assert exits == ["quits", "terminated", "crashes"]  # the shutdown stopped the last one


async def test_a_permanent_child_that_exits_is_restarted_not_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    exits: list[str] = []
    perm = Puppet("perm", log)
    async with open_supervisor("one_for_one", max_restarts=5, within_s=10) as sup:
        sup.on_exit = exits.append
        await sup.start_child(perm.spec())
        perm.order("exit")
        await settle()
        assert exits == []
        assert [c.id for c in sup.which_children()] == ["perm"]


async def test_the_hook_hears_of_an_exit_once_the_id_is_free() -> None:
    """What a session's passivation needs: when an actor that stopped itself is heard of,
    its id is free already, so its next incarnation can be started at once."""
    log = Log()
    heard: list[bool] = []

    async with open_dynamic_supervisor() as sup:
        sup.on_exit = lambda child_id: heard.append(child_id in sup)
        ref = await start_actor(sup, worker("s", log, restart="transient"))
        await ref.stop()
        assert heard == [False]
        again = await start_actor(sup, worker("s", log, restart="transient"))
        assert again.alive


async def test_a_hook_that_fails_is_logged(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(child_id: str) -> None:
        raise RuntimeError("hook bug")

    sup: Supervisor
    async with open_dynamic_supervisor() as sup:
        sup.on_exit = broken
        ref = await start_actor(sup, worker("s", Log(), restart="transient"))
        await ref.stop()
        assert "s" not in sup
    assert "on_exit failed for child 's'" in caplog.text


async def test_a_sibling_restarted_with_its_group_is_not_reported_as_an_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    heard: list[tuple[str, bool]] = []
    async with open_supervisor("one_for_all", max_restarts=5, within_s=10) as sup:
        sup.on_exit = lambda cid: heard.append((cid, cid in sup))
        await start_actor(sup, worker("a", log))
        b = await start_actor(sup, worker("b", log))
        await b.tell("crash")
        await settle()
        assert [c.running for c in sup.which_children()] == [True, True]  # a restarted too
        assert heard == []  # stopped to be restarted with its group: no exit


async def test_a_transient_child_stopped_during_its_backoff_is_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    exits: list[str] = []
    async with open_supervisor(backoff=(10.0, 10.0), seed=1) as sup:
        sup.on_exit = exits.append
        ref = await start_actor(sup, worker("a", log, restart="transient"))
        await ref.tell("crash")
        await settle()
        await ref.stop()  # an orderly exit; it is not restarted
        assert "a" not in sup
        assert exits == ["a"]


class Slow(Actor[str, str]):
    async def on_start(self) -> None:
        await trio.sleep_forever()


async def test_a_start_cancelled_before_ready_is_not_reported_while_registered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    heard: list[tuple[str, bool]] = []
    async with open_dynamic_supervisor() as sup:
        sup.on_exit = lambda cid: heard.append((cid, cid in sup))
        with trio.move_on_after(1):
            await sup.start_child(ChildSpec("s", Slow, restart="transient"))
        assert "s" not in sup
        assert heard == []  # never ready: nothing ended (its starter raised)
