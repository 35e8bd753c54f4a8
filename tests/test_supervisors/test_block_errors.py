"""What leaves a supervisor's block: the body's own error, not a group trio wrapped it in."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
import trio
import trio.testing

from troupe.supervisors import Supervisor, open_dynamic_supervisor, open_supervisor

from ._children import Log, worker

OPENERS: list[Callable[[], AbstractAsyncContextManager[Supervisor]]] = [
    open_supervisor,
    open_dynamic_supervisor,
]


def body_fails() -> None:
    raise ValueError("mine")


@pytest.mark.parametrize("opener", OPENERS)
async def test_a_body_error_leaves_the_block_bare(
    opener: Callable[[], AbstractAsyncContextManager[Supervisor]],
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()

    async def run() -> None:
        async with opener() as sup:
            await sup.start_child(worker("a", log))
            body_fails()

    # pytest.raises, not RaisesGroup: the error must come out bare, not in an ExceptionGroup.
    with pytest.raises(ValueError, match="mine") as caught:
        await run()
    assert type(caught.value) is ValueError
    assert log == ["start a", "stop a"]
    # Its traceback still reaches the line that raised it.
    frames = [f.name for f in traceback.extract_tb(caught.value.__traceback__)]
    assert frames[-1] == "body_fails"


@pytest.mark.parametrize("opener", OPENERS)
async def test_a_bare_body_error_keeps_its_cause_and_context(
    opener: Callable[[], AbstractAsyncContextManager[Supervisor]],
    autojump_clock: trio.testing.MockClock,
) -> None:
    cause = KeyError("cause")
    context = LookupError("context")

    async def run() -> None:
        async with opener():
            try:
                raise context
            except LookupError:
                raise ValueError("mine") from cause

    with pytest.raises(ValueError, match="mine") as caught:
        await run()
    assert caught.value.__cause__ is cause
    assert caught.value.__context__ is context
    assert caught.value.__suppress_context__


@pytest.mark.parametrize("opener", OPENERS)
async def test_a_group_the_body_raised_leaves_as_it_is(
    opener: Callable[[], AbstractAsyncContextManager[Supervisor]],
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.RaisesGroup(ValueError, KeyError):
        async with opener():
            raise ExceptionGroup("two", [ValueError("a"), KeyError("b")])
    # A group of one that the body raised itself is the body's: not unwrapped either.
    with pytest.RaisesGroup(ValueError, match="one"):
        async with opener():
            raise ExceptionGroup("one", [ValueError("a")])
