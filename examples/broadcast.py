"""A broadcast: one initiator announces, every recipient is told, nobody answers.

Recipients' turn handlers never answer in a broadcast (only the initiator may speak), so
agents here just watch their deliveries with ``on_envelope``. An explicit ``audience``
sends to some of them only. Run: ``python examples/broadcast.py``.
"""

from __future__ import annotations

import trio
import trio.testing

from troupe import EV_TEXT, Envelope, HubClient, LocalLink, Passport, ProtocolError, Turn, open_hub


class Listener:
    async def respond(self, turn: Turn) -> str:
        raise AssertionError("nobody answers a broadcast")


async def main() -> None:
    async with open_hub() as hub:
        hc = HubClient(LocalLink(hub))
        me = await hc.register_human(Passport(name="ops", kind="human"))
        crew = []
        for name in ("ada", "bob", "cy"):
            client = await hc.register(Listener(), Passport(name=name))

            async def heard(envelope: Envelope, name: str = name) -> None:
                if envelope.event_type == EV_TEXT:
                    print(f"{name} heard: {envelope.text}")

            client.on_envelope(heard)
            crew.append(client)
        news = await me.open(type="broadcast", target=[c.agent_id for c in crew])
        await news.send("deploy at noon")
        await news.send("ada: you are on call", audience=[crew[0].agent_id])
        await trio.testing.wait_all_tasks_blocked()
        try:
            await crew[1].send(news.session_id, "can I say something?")
        except ProtocolError as exc:
            print(f"refused: {exc}".replace(crew[1].agent_id, "bob").replace(me.agent_id, "ops"))
        closed = await news.close("announcement over")
        print(f"closed: {closed.close_reason}")
        await hc.shutdown()


if __name__ == "__main__":
    trio.run(main)
