"""A workflow: a pipeline of scripted agents, each speaking once, in order.

``sequence([...])`` builds the graph: each step hands the floor to the next, and the session
closes (``sequence_complete``) after the last one. Run: ``python examples/workflow_pipeline.py``.
"""

from __future__ import annotations

import trio

from troupe import (
    EV_PACKET,
    EV_SESSION_CLOSED,
    EV_TEXT,
    HubClient,
    LocalLink,
    Passport,
    Turn,
    open_hub,
)
from troupe.workflow import sequence


class Researcher:
    async def respond(self, turn: Turn) -> str:
        return f"notes: otters hold hands while sleeping ({turn.text})"


class Writer:
    async def respond(self, turn: Turn) -> str:
        return f"draft: Did you know? {turn.text.removeprefix('notes: ')}"


class Editor:
    async def respond(self, turn: Turn) -> str:
        return turn.text.removeprefix("draft: ").replace("Did you know? ", "")


async def main() -> None:
    async with open_hub() as hub:
        hc = HubClient(LocalLink(hub))
        me = await hc.register_human(Passport(name="me", kind="human"))
        steps = [me.agent_id]
        for name, agent in (
            ("researcher", Researcher()),
            ("writer", Writer()),
            ("editor", Editor()),
        ):
            steps.append((await hc.register(agent, Passport(name=name))).agent_id)
        graph = sequence(steps)  # me -> researcher -> writer -> editor, then closed
        ch = await me.open(type="workflow", target=steps[1:], knobs={"graph": graph.to_dict()})
        await me.send(ch.session_id, "write a fun fact about otters")
        done = await me.wait_for_channel_event(
            channel_id=ch.session_id,
            predicate=lambda e: e.event_type == EV_SESSION_CLOSED,
            timeout=5,
        )
        for envelope in await hc.read_wal(ch.session_id):
            if envelope.event_type in (EV_TEXT, EV_PACKET):  # agents answer with packets
                said = envelope.text or envelope.event_data["body"]
                print(f"{hc.name_for(envelope.sender_id):>10}: {said}")
        print(f"closed: {done.event_data['reason']}")
        await hc.shutdown()


if __name__ == "__main__":
    trio.run(main)
