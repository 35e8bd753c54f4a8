"""Run the two-process example: a hub process and two agent processes, then stop the hub.

    python examples/two_processes/run.py

It writes an API keys file and a hub database in a temporary directory, starts
``server.py`` on a free port, starts ``agents.py`` for Bob and then for Ann (each its own
process, each presenting its own key), waits for both to finish their conversation and
stops the hub with SIGINT. Every line a process prints is shown with its name.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

HERE = Path(__file__).resolve().parent
KEYS = {"ann": "k-ann", "bob": "k-bob"}


class Child:
    """A child process whose output lines are echoed as ``[name] line`` and kept."""

    def __init__(self, name: str, process: trio.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self.printed = trio.Event()  # set at its first line

    async def echo(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self.lines.append(line.decode())
                print(f"[{self.name}] {self.lines[-1]}", flush=True)
                self.printed.set()


async def start(nursery: trio.Nursery, name: str, script: str, *args: str) -> Child:
    """Start ``python script args`` (stderr into stdout) with its output echoed."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(HERE / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    child = Child(name, process)
    nursery.start_soon(child.echo)
    return child


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, trio.fail_after(60):
        keys = Path(tmp) / "keys.json"
        keys.write_text(json.dumps(KEYS))
        db = Path(tmp) / "hub.db"
        async with trio.open_nursery() as nursery:
            hub = await start(
                nursery, "hub", "server.py", "--db", str(db), "--port", "0", "--api-keys", str(keys)
            )
            await hub.printed.wait()
            found = re.search(r"ws://[\d.]+:\d+", hub.lines[0])
            if found is None:
                raise SystemExit(f"the hub did not start: {hub.lines[0]}")
            url = found.group(0)
            agents = [
                await start(nursery, name, "agents.py", url, name, "--key", KEYS[name])
                for name in ("bob", "ann")  # Ann waits for Bob, so either order works
            ]
            for agent in agents:
                if await agent.process.wait() != 0:
                    raise SystemExit(f"the {agent.name} process failed")
            hub.process.send_signal(signal.SIGINT)
            if await hub.process.wait() != 0:
                raise SystemExit("the hub did not stop cleanly")
    print("both agents are done and the hub stopped cleanly")


if __name__ == "__main__":
    trio.run(main)
