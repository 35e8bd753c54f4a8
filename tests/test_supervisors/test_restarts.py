"""The OTP table: strategies, restart types, refs across restarts, start_child, observability."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from troupe import ActorDead
from troupe.actors import Actor, ActorRef
from troupe.mailbox import Mailbox
from troupe.supervisors import (
    ChildInfo,
    ChildSpec,
    RestartType,
    Strategy,
    Supervisor,
    open_supervisor,
)

from ._children import Log, Puppet, settle, start_actor, worker

#: OTP's restart types: is the child restarted after it exits normally or crashes?
RESTART_TYPES_TABLE = [
    ("permanent", "exit", True),
    ("permanent", "crash", True),
    ("transient", "exit", False),
    ("transient", "crash", True),
    ("temporary", "exit", False),
    ("temporary", "crash", False),
]


async def start_abc(sup: Supervisor, log: Log) -> list[ActorRef[str, str]]:
    return [await start_actor(sup, worker(cid, log)) for cid in "abc"]


@pytest.mark.parametrize(
    ("strategy", "after_b_crashes"),
    [
        ("one_for_one", ["start b"]),
        ("one_for_all", ["stop c", "stop a", "start a", "start b", "start c"]),
        ("rest_for_one", ["stop c", "start b", "start c"]),
    ],
)
async def test_strategy_restarts_these_children_in_this_order(
    strategy: Strategy, after_b_crashes: list[str], autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    async with open_supervisor(strategy) as sup:
        _, b, _ = await start_abc(sup, log)
        assert log == ["start a", "start b", "start c"]
        mark = len(log)
        await b.tell("crash")
        await settle()
        assert log.since(mark) == after_b_crashes
        assert [c.running for c in sup.which_children()] == [True, True, True]
        sup.cancel()
    assert log[-3:] == ["stop c", "stop b", "stop a"]


async def test_rest_for_one_after_the_last_child_restarts_only_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor("rest_for_one") as sup:
        *_, c = await start_abc(sup, log)
        mark = len(log)
        await c.tell("crash")
        await settle()
        assert log.since(mark) == ["start c"]


async def test_temporary_siblings_are_not_restarted_with_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor("one_for_all") as sup:
        a = await start_actor(sup, worker("a", log))
        temp = await start_actor(sup, worker("t", log, restart="temporary"))
        mark = len(log)
        await a.tell("crash")
        await settle()
        assert log.since(mark) == ["stop t", "start a"]
        assert [c.id for c in sup.which_children()] == ["a"]
        assert not temp.alive


@pytest.mark.parametrize(("restart", "how", "restarted"), RESTART_TYPES_TABLE)
async def test_restart_types_for_actor_children(
    restart: RestartType, how: str, restarted: bool, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    async with open_supervisor() as sup:
        ref = await start_actor(sup, worker("w", log, restart=restart))
        if how == "exit":
            await ref.stop()
        else:
            await ref.tell("crash")
        await settle()
        assert log.count("start w") == (2 if restarted else 1)
        assert ref.alive is restarted
        assert ("w" in sup) is restarted
        if not restarted:
            with pytest.raises(ActorDead):
                await ref.ask("anyone?")


@pytest.mark.parametrize(("restart", "how", "restarted"), RESTART_TYPES_TABLE)
async def test_restart_types_for_function_children(
    restart: RestartType, how: str, restarted: bool, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    puppet = Puppet("f", log)
    async with open_supervisor() as sup:
        assert await sup.start_child(puppet.spec(restart=restart)) is None
        puppet.order(how)
        await settle()
        assert log == ["start f", "finally f", *(["start f"] if restarted else [])]
        assert len(sup) == (1 if restarted else 0)


async def test_a_ref_stays_valid_across_restarts_and_keeps_queued_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor() as sup:
        ref = await start_actor(sup, worker("w", log))
        # Queued behind the crash: handled by the next incarnation.
        ref.tell_nowait("crash")
        ref.tell_nowait("one")
        ref.tell_nowait("two")
        await settle()
        assert log == ["start w", "start w", "w got one", "w got two"]
        assert await ref.ask("three") == "w:three"
        [info] = sup.which_children()
        assert info.ref is ref
        assert info.restarts == 1


async def test_an_ask_that_crashes_a_supervised_actor_fails_and_the_next_one_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor() as sup:
        ref = await start_actor(sup, worker("w", log))
        with pytest.raises(ActorDead) as info:
            await ref.ask("crash")
        assert isinstance(info.value.__cause__, ValueError)
        assert await ref.ask("again") == "w:again"


async def test_the_mailbox_factory_is_used_once_and_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    made: list[Mailbox[Any]] = []

    def mailbox() -> Mailbox[Any]:
        made.append(Mailbox(3, "reject"))
        return made[-1]

    log = Log()
    async with open_supervisor() as sup:
        spec = worker("w", log)
        ref = await start_actor(sup, ChildSpec("w", spec.start, mailbox=mailbox))
        await ref.tell("crash")
        await settle()
        assert len(made) == 1
        assert ref.mailbox is made[0]
        assert ref.mailbox.name == "w"


async def test_a_child_that_fails_before_it_is_ready_raises_out_of_start_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Broken(Actor[Any, Any]):
        async def on_start(self) -> None:
            raise OSError("cannot open")

    async def broken_function(*, task_status: trio.TaskStatus[None]) -> None:
        raise KeyError("missing")

    log = Log()
    async with open_supervisor() as sup:
        await sup.start_child(worker("ok", log))
        with pytest.raises(OSError, match="cannot open"):
            await sup.start_child(ChildSpec("actor", Broken))
        with pytest.raises(KeyError, match="missing"):
            await sup.start_child(ChildSpec("function", broken_function))
        assert [c.id for c in sup.which_children()] == ["ok"]
        assert sup.statistics().restarts == 0
        # The ids are free again.
        await sup.start_child(worker("actor", log))


async def test_a_start_that_makes_no_actor_is_refused_with_the_child_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def function_child(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()  # pragma: no cover

    def wrapped() -> object:
        # Hides that this is an async function: it looks like an actor factory.
        return function_child(task_status=trio.TASK_STATUS_IGNORED)

    async with open_supervisor() as sup:
        with pytest.raises(TypeError, match=r"child 'wrapped'.*not an Actor"):
            await sup.start_child(ChildSpec("wrapped", wrapped))
        with pytest.raises(TypeError, match="child 'none'"):
            await sup.start_child(ChildSpec("none", lambda: None))
        assert len(sup) == 0


async def test_duplicate_ids_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    async with open_supervisor(name="root") as sup:
        await sup.start_child(worker("a", log))
        with pytest.raises(ValueError, match="'root' already has a child 'a'"):
            await sup.start_child(worker("a", log))


async def test_which_children_and_statistics(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    puppet = Puppet("f", log)
    async with open_supervisor("one_for_one", max_restarts=10) as sup:
        a = await start_actor(sup, worker("a", log))
        await sup.start_child(puppet.spec(restart="transient"))
        await a.tell("crash")
        await settle()
        await a.tell("crash")
        puppet.order("crash")
        await settle()
        assert sup.which_children() == [
            ChildInfo(id="a", kind="actor", restart="permanent", running=True, restarts=2, ref=a),
            ChildInfo(
                id="f", kind="function", restart="transient", running=True, restarts=1, ref=None
            ),
        ]
        stats = sup.statistics()
        assert stats.strategy == "one_for_one"
        assert (stats.children, stats.running, stats.restarts) == (2, 2, 3)
        assert stats.restarts_by_child == {"a": 2, "f": 1}


async def test_crashes_and_restarts_are_logged_with_the_child_id(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="troupe.supervisors")
    log = Log()
    async with open_supervisor(name="sup") as sup:
        ref = await start_actor(sup, worker("child-7", log))
        await ref.tell("crash")
        await settle()
    records = [r for r in caplog.records if r.name == "troupe.supervisors"]
    crash = next(r for r in records if "crashed" in r.getMessage())
    assert "child-7" in crash.getMessage()
    assert crash.levelno == logging.ERROR
    assert crash.exc_info is not None
    assert isinstance(crash.exc_info[1], ValueError)
    restart = next(r for r in records if "restarting" in r.getMessage())
    assert "child-7" in restart.getMessage()
