"""A discussion among four scripted agents, round robin, until one of them stays silent.

Each agent speaks its next line when the discussion gives it the floor and returns ``None``
(a silent round) when it has nothing left to say, which ends the rotation. Agents see the
session through the discussion's default view: the last few lines, named.
"""

from __future__ import annotations

import trio

from troupe import HubClient, LocalLink, Passport, Turn, open_hub

OPENING = "Shall we pick a name for the project?"
SCRIPTS = {
    "ada": ["Then troupe it is."],
    "brian": ["Something short.", "Agreed."],
    "chen": ["Something about actors on a stage.", "Ship it."],
    "dora": ["How about troupe?"],
}


class Scripted:
    """Says its lines in order, then stays silent."""

    def __init__(self, name: str, silent: trio.Event) -> None:
        self.name = name
        self.lines = list(SCRIPTS[name])
        self.silent = silent

    async def respond(self, turn: Turn) -> str | None:
        heard = turn.history[-1].content if turn.history else ""
        print(f"  ({self.name} has heard {len(turn.history)} line(s); last: {heard!r})")
        if not self.lines:
            print(f"{self.name} has nothing to add.")
            self.silent.set()
            return None
        line = self.lines.pop(0)
        print(f"{self.name}: {line}")
        return line


async def main() -> None:
    silent = trio.Event()
    async with open_hub() as hub, HubClient(LocalLink(hub)) as hc:
        agents = {
            name: await hc.register(Scripted(name, silent), Passport(name=name)) for name in SCRIPTS
        }
        ada = agents["ada"]
        table = await ada.open(type="discussion", target=["brian", "chen", "dora"])
        print(f"ada: {OPENING}")
        await table.send(OPENING)  # the creator opens; then the floor goes round
        with trio.fail_after(10):
            await silent.wait()
        await table.close(reason="round table over")
        wal = await hc.read_wal(table.session_id)
        spoken = [e for e in wal if e.text is not None]
        print(f"{len(spoken)} lines spoken, {len(wal)} envelopes in the WAL")


if __name__ == "__main__":
    trio.run(main)
