"""A notification: one message from the initiator, and the session is closed at once.

The recipient is delivered the message (watched here with ``on_envelope``) but never
answers: the session closed (``notification_done``) as the message landed. Run:
``python examples/notification.py``.
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
    ProtocolError,
    Turn,
    open_hub,
)


class Pager:
    async def respond(self, turn: Turn) -> str:
        raise AssertionError("nobody answers a notification")


async def main() -> None:
    async with open_hub() as hub:
        hc = HubClient(LocalLink(hub))
        ci = await hc.register_human(Passport(name="ci", kind="human"))
        pager = await hc.register(Pager(), Passport(name="pager"))
        got = trio.Event()

        async def heard(envelope: Envelope) -> None:
            if envelope.event_type == EV_TEXT:
                print(f"pager got: {envelope.text}")
            elif envelope.event_type == EV_SESSION_CLOSED:
                print(f"pager saw the session close: {envelope.event_data['reason']}")
                got.set()

        pager.on_envelope(heard)
        note = await ci.open(type="notification", target="pager")
        await note.send("build 1234 is green")
        with trio.fail_after(5):
            await got.wait()
        try:
            await note.send("and another thing")
        except ProtocolError:
            print("a second message is refused: the session is closed")
        await hc.shutdown()


if __name__ == "__main__":
    trio.run(main)
