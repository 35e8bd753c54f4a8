"""An agent that chooses the sessions it joins, with a handler of its own.

"gate" is registered with ``auto_ack_invites=False`` and its own ``handler``: it accepts
the invites of people it knows, refuses the others (the session is then closed and the
opener gets a ``ProtocolError``), and leaves every other delivery to the default turn
handler (``client.handle``), which runs its ``respond``. It is used in ``async with``:
leaving the block unregisters it. Along the way: the session type's state of a session
(``HubClient.adapter_state``, the reference's name), since when a turn is owed
(``PendingTurn.expected_at``), and whether the hub serves (``Hub.health()``).
"""

from __future__ import annotations

import trio

from troupe import (
    EV_CHANNEL_INVITE,
    EV_TEXT,
    AgentClient,
    Envelope,
    HubClient,
    LocalLink,
    NotFoundError,
    Passport,
    ProtocolError,
    Turn,
    open_hub,
)


class Gate:
    async def respond(self, turn: Turn) -> str:
        return f"welcome, {turn.text}"


async def main() -> None:
    async with open_hub() as hub, HubClient(LocalLink(hub)) as hc:
        ada = await hc.register_human(Passport(name="ada", kind="human"))
        eve = await hc.register_human(Passport(name="eve", kind="human"))
        known = {ada.agent_id}

        async def gatekeeper(envelope: Envelope, client: AgentClient) -> None:
            if envelope.event_type == EV_CHANNEL_INVITE:
                if envelope.sender_id in known:
                    await client.accept_invite(envelope)
                else:
                    await client.reject_invite(envelope, reason="not on the list")
                return
            await client.handle(envelope)  # the default turn handler

        gate = await hc.register(
            Gate(), Passport(name="gate"), auto_ack_invites=False, handler=gatekeeper
        )
        async with gate:
            try:
                await eve.open(type="conversation", target="gate")
            except ProtocolError as exc:
                print(f"eve was refused: {'invite rejected' in str(exc)}")

            channel = await ada.open(type="discussion", target="gate")
            [turn] = await hc.pending_turns_for(ada.agent_id)
            since_open = turn.expected_at >= channel.metadata.created_at
            print(f"ada owes the first turn, since the session opened: {since_open}")
            await channel.send("ada")
            reply = await ada.wait_for_channel_event(
                channel_id=channel.session_id,
                predicate=lambda e: e.event_type == EV_TEXT and e.sender_id == gate.agent_id,
                timeout=5,
            )
            print(f"gate: {reply.text}")
            state = await hc.adapter_state(channel.session_id)
            print(f"the discussion's state: {type(state).__name__}")
            print(f"health: {await hub.health()}")
        try:
            await hc.get_agent("gate")
        except NotFoundError:
            print("gate is unregistered")


if __name__ == "__main__":
    trio.run(main)
