"""A supervisor restarts a crashing actor; the ref you hold keeps working.

Run it with ``./dev shell python examples/supervision.py`` (or ``python
examples/supervision.py`` where troupe is installed). It prints each step:
an actor under a supervisor, a crash that fails only the ask that caused it, the restart
(fresh state, same ref, queued messages kept), and a supervisor that gives up after too
many crashes in a short time.
"""

from __future__ import annotations

import logging
import sys
from typing import assert_never

import attrs
import trio

from troupe import ActorDead, RestartIntensityExceeded
from troupe.actors import Actor
from troupe.supervisors import ChildSpec, open_supervisor


@attrs.frozen
class Add:
    amount: int


@attrs.frozen
class Total:
    pass


@attrs.frozen
class Explode:
    pass


Msg = Add | Total | Explode


class Tally(Actor[Msg, int]):
    """Keeps a running total; ``Explode`` makes it crash."""

    def __init__(self) -> None:
        self.total = 0

    async def on_start(self) -> None:
        print(f"    {self.ref.name}: started with total 0")

    async def handle(self, msg: Msg) -> int:
        match msg:
            case Add(amount):
                self.total += amount
            case Total():
                pass
            case Explode():
                raise RuntimeError("tally exploded")
            case _:
                assert_never(msg)
        return self.total

    async def on_stop(self) -> None:
        print(f"    {self.ref.name}: stopped with total {self.total}")


class OneLine(logging.Formatter):
    """Log lines without tracebacks, so the demo's output stays readable."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"    log: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({record.exc_info[1]!r})"
        return text


async def main() -> None:
    # The supervisor logs every crash and restart; show them in line with the prints.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(OneLine())
    logging.basicConfig(level=logging.INFO, handlers=[handler])

    async with open_supervisor(max_restarts=3, within_s=10.0, name="demo") as sup:
        print("1. start a supervised actor and talk to it")
        tally = await sup.start_child(ChildSpec("tally", Tally))
        assert tally is not None
        await tally.tell(Add(2))
        print(f"    ask Add(3) -> {await tally.ask(Add(3))}")

        print("2. crash it: only the ask that caused the crash fails")
        try:
            await tally.ask(Explode())
        except ActorDead as exc:
            print(f"    ask Explode() -> ActorDead: {exc} (cause: {exc.__cause__!r})")

        print("3. the same ref talks to the restarted actor (its state starts over)")
        print(f"    ask Total() -> {await tally.ask(Total())}")

        print("4. messages queued behind a crash wait for the restart")
        tally.tell_nowait(Explode())
        tally.tell_nowait(Add(7))
        print(f"    ask Total() -> {await tally.ask(Total())}")
        print(f"    restarts so far: {sup.statistics().restarts_by_child}")
        print("5. leaving the block stops the children in reverse start order")

    print("6. too many crashes too fast: the supervisor gives up and says so")
    try:
        async with open_supervisor(max_restarts=2, within_s=1.0, name="strict") as strict:
            fragile = await strict.start_child(ChildSpec("fragile", Tally))
            assert fragile is not None
            for _ in range(3):
                fragile.tell_nowait(Explode())
            await trio.sleep_forever()
    except RestartIntensityExceeded as exc:
        print(f"    RestartIntensityExceeded: {exc} (cause: {exc.__cause__!r})")


if __name__ == "__main__":
    trio.run(main)
