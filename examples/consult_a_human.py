"""An agent consults a person; the person answers from a push callback.

The scheduler agent opens a ``consulting`` session with the human "alice" and asks a
question. Alice's UI is a callback registered with ``on_envelope``: it sees the question and
replies with ``causation_id`` pointing at it. A consulting session allows exactly one
question and one answer, so the hub closes it (``consulting_complete``) after her reply.
"""

from __future__ import annotations

import trio

from troupe import (
    EV_SESSION_CLOSED,
    EV_TEXT,
    Envelope,
    HubClient,
    LocalLink,
    Passport,
    Resume,
    Turn,
    open_hub,
)


class Scheduler:
    """An agent that only asks (it never has the floor to answer in this example)."""

    async def respond(self, turn: Turn) -> str | None:
        return None


async def main() -> None:
    async with open_hub() as hub, HubClient(LocalLink(hub)) as hc:
        alice = await hc.register_human(Passport(name="alice", kind="human"))

        async def alice_ui(envelope: Envelope) -> None:
            if envelope.event_type == EV_TEXT and envelope.sender_id != alice.agent_id:
                print(f"alice sees: {envelope.text!r}")
                await alice.send(
                    envelope.session_id, "Tuesday at 10 works.", causation_id=envelope.envelope_id
                )

        alice.on_envelope(alice_ui)

        bot = await hc.register(
            Scheduler(), Passport(name="scheduler"), Resume(claimed_capabilities=["scheduling"])
        )
        channel = await bot.open(type="consulting", target="alice", intent="book a meeting")
        await channel.send("When can you meet next week?")
        answer = await bot.wait_for_channel_event(
            channel_id=channel.session_id,
            predicate=lambda e: e.event_type == EV_TEXT and e.sender_id == alice.agent_id,
            timeout=5,
        )
        print(f"scheduler got: {answer.text!r}")
        closed = await bot.wait_for_channel_event(
            channel_id=channel.session_id,
            predicate=lambda e: e.event_type == EV_SESSION_CLOSED,
            timeout=5,
        )
        print(f"session closed: {closed.event_data['reason']}")


if __name__ == "__main__":
    trio.run(main)
