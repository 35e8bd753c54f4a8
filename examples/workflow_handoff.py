"""A workflow with handoffs: a triage agent hands the customer to billing, who resolves it.

Agents hand the floor on by what ``respond`` returns: ``Handoff(target_id, reason)`` gives it
to ``target_id`` whatever the graph says; ``Reply(text, handoff=..., context={...})`` also
says something and sets workflow context variables, which ``ContextEquals`` transitions
read. Run: ``python examples/workflow_handoff.py``.
"""

from __future__ import annotations

import trio

from troupe import (
    EV_PACKET,
    EV_SESSION_CLOSED,
    EV_TEXT,
    Handoff,
    HubClient,
    LocalLink,
    Passport,
    Reply,
    Turn,
    open_hub,
)
from troupe.workflow import (
    AgentTarget,
    ContextEquals,
    FromSpeaker,
    TerminateTarget,
    Transition,
    TransitionGraph,
)


class Triage:
    def __init__(self) -> None:
        self.billing_id = ""  # known once billing is registered

    async def respond(self, turn: Turn) -> Reply:
        if "refund" in turn.text or "money" in turn.text:
            return Reply("Let me pass you to billing.", Handoff(self.billing_id, "refund request"))
        return Reply("Have you tried turning it off and on again?", context={"resolved": True})


class Billing:
    async def respond(self, turn: Turn) -> Reply:
        return Reply("Refund of 12 EUR sent.", context={"resolved": True, "refund_eur": 12})


async def main() -> None:
    async with open_hub() as hub:
        hc = HubClient(LocalLink(hub))
        me = await hc.register_human(Passport(name="customer", kind="human"))
        triage = Triage()
        triage_id = (await hc.register(triage, Passport(name="triage"))).agent_id
        triage.billing_id = (await hc.register(Billing(), Passport(name="billing"))).agent_id
        graph = TransitionGraph(
            me.agent_id,  # the customer speaks first
            [
                # Whoever sets resolved=True ends the session, with reason "resolved".
                Transition(ContextEquals("resolved", True), TerminateTarget("resolved")),
                Transition(FromSpeaker(me.agent_id), AgentTarget(triage_id)),
            ],
            max_turns=10,
        )
        ch = await me.open(
            type="workflow",
            target=[triage_id, triage.billing_id],
            knobs={"graph": graph.to_dict()},
        )
        await me.send(ch.session_id, "I want my money back")
        done = await me.wait_for_channel_event(
            channel_id=ch.session_id,
            predicate=lambda e: e.event_type == EV_SESSION_CLOSED,
            timeout=5,
        )
        for envelope in await hc.read_wal(ch.session_id):
            if envelope.event_type == EV_TEXT:
                print(f"{hc.name_for(envelope.sender_id):>8}: {envelope.text}")
            elif envelope.event_type == EV_PACKET:
                routing = envelope.event_data["routing"]
                note = ""
                if routing["kind"] == "handoff":
                    note = f"  [-> {hc.name_for(routing['target'])}: {routing['reason']}]"
                print(f"{hc.name_for(envelope.sender_id):>8}: {envelope.event_data['body']}{note}")
        print(f"context: {hub.session_state(ch.session_id).context_vars}")
        print(f"closed: {done.event_data['reason']}")
        await hc.shutdown()


if __name__ == "__main__":
    trio.run(main)
