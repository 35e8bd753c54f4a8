"""Children for the supervisor tests: they write what happens to them into a shared log."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from troupe.actors import Actor, ActorRef
from troupe.supervisors import ChildSpec, RestartType, Supervisor


class Log(list[str]):
    """Events in the order they happened, e.g. ``"start a"``, ``"stop b"``, ``"finally c"``."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    def append(self, event: str) -> None:
        super().append(event)
        self._changed.set()
        self._changed = trio.Event()

    def since(self, mark: int) -> list[str]:
        return self[mark:]

    async def wait_for(self, event: str, count: int = 1) -> None:
        """Wait until ``event`` has been logged ``count`` times."""
        while self.count(event) < count:
            await self._changed.wait()


class Worker(Actor[str, str]):
    """An actor child: ``"crash"`` raises, ``"hang"`` never returns, anything else echoes."""

    def __init__(self, cid: str, log: Log, *, stop_takes: float = 0.0) -> None:
        self.cid = cid
        self.log = log
        self.stop_takes = stop_takes

    async def on_start(self) -> None:
        self.log.append(f"start {self.cid}")

    async def handle(self, msg: str) -> str:
        if msg == "crash":
            raise ValueError(f"{self.cid} crashed")
        if msg == "hang":
            await trio.sleep_forever()
        self.log.append(f"{self.cid} got {msg}")
        return f"{self.cid}:{msg}"

    async def on_stop(self) -> None:
        await trio.sleep(self.stop_takes)
        self.log.append(f"stop {self.cid}")


def worker(
    cid: str,
    log: Log,
    *,
    restart: RestartType = "permanent",
    shutdown_s: float = 5.0,
    stop_takes: float = 0.0,
) -> ChildSpec:
    return ChildSpec(
        cid,
        lambda: Worker(cid, log, stop_takes=stop_takes),
        restart=restart,
        shutdown_s=shutdown_s,
    )


class Puppet:
    """A function child that exits or crashes when told to (its ``finally`` is logged)."""

    def __init__(self, cid: str, log: Log) -> None:
        self.cid = cid
        self.log = log
        self._order = ""
        self._wake = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.log.append(f"start {self.cid}")
        self._wake = trio.Event()
        task_status.started()
        try:
            await self._wake.wait()
        finally:
            self.log.append(f"finally {self.cid}")
        if self._order == "crash":
            raise ValueError(f"{self.cid} crashed")

    def order(self, what: str) -> None:
        self._order = what
        self._wake.set()

    def spec(self, *, restart: RestartType = "permanent") -> ChildSpec:
        return ChildSpec(self.cid, self.run, restart=restart)


async def start_actor(sup: Supervisor, spec: ChildSpec) -> ActorRef[Any, Any]:
    """Start an actor child and return its ref (never None for an actor child)."""
    ref = await sup.start_child(spec)
    assert ref is not None
    return ref


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()
