"""The new session types driven by agents through the default turn handler."""

from __future__ import annotations

from typing import Any

import attrs
import trio
import trio.testing

from tests.harness import HubPair, open_hub_pair
from troupe import (
    EV_PACKET,
    EV_SESSION_CLOSED,
    EV_TEXT,
    AgentClient,
    Envelope,
    Handoff,
    Passport,
    Reply,
    Turn,
)
from troupe.session_types import select_winner
from troupe.workflow import (
    AgentTarget,
    ContextEquals,
    FromSpeaker,
    TerminateTarget,
    Transition,
    TransitionGraph,
    sequence,
)


@attrs.define
class Scripted:
    """Answers every turn with ``answer(turn)`` and remembers what it was asked."""

    answer: Any
    asked: list[str] = attrs.Factory(list)

    async def respond(self, turn: Turn) -> Any:
        self.asked.append(turn.text)
        return self.answer(turn) if callable(self.answer) else self.answer


async def agent(net: HubPair, name: str, answer: Any) -> tuple[AgentClient, Scripted]:
    script = Scripted(answer)
    return await net.hc.register(script, Passport(name=name)), script


async def closed(net: HubPair, sid: str) -> list[Envelope]:
    """Wait until the session is closed; return its WAL."""
    entry = net.hub.core.directory.get(sid)
    with trio.fail_after(5):
        await entry.wait_for(lambda md: md.state.terminal)
    return await net.hub.read_wal(sid)


async def test_a_pipeline_of_agents_runs_to_sequence_complete() -> None:
    async with open_hub_pair() as net:
        [me] = await net.people("me")
        writer, w = await agent(net, "writer", lambda t: f"draft about {t.text}")
        editor, e = await agent(net, "editor", lambda t: t.text.upper())
        steps = [me.agent_id, writer.agent_id, editor.agent_id]
        ch = await me.open(
            type="workflow", target=steps[1:], knobs={"graph": sequence(steps).to_dict()}
        )
        await me.send(ch.session_id, "otters")
        wal = await closed(net, ch.session_id)
        packets = [x for x in wal if x.event_type == EV_PACKET]
        assert [p.event_data["body"] for p in packets] == [
            "draft about otters",
            "DRAFT ABOUT OTTERS",
        ]
        assert [p.sender_id for p in packets] == steps[1:]
        assert packets[1].causation_id == packets[0].envelope_id
        assert (w.asked, e.asked) == (["otters"], ["draft about otters"])
        assert wal[-1].event_data["reason"] == "sequence_complete"


async def test_agents_hand_off_and_set_context() -> None:
    async with open_hub_pair() as net:
        [me] = await net.people("me")
        billing, b = await agent(net, "billing", Reply("refund sent", context={"resolved": True}))
        triage, t = await agent(net, "triage", Handoff(billing.agent_id, reason="a refund"))
        graph = TransitionGraph(
            me.agent_id,
            [
                Transition(ContextEquals("resolved", True), TerminateTarget("resolved")),
                Transition(FromSpeaker(me.agent_id), AgentTarget(triage.agent_id)),
            ],
        )
        ch = await me.open(
            type="workflow",
            target=[triage.agent_id, billing.agent_id],
            knobs={"graph": graph.to_dict()},
        )
        await me.send(ch.session_id, "my parcel never came")
        wal = await closed(net, ch.session_id)
        handoff, answer = [x for x in wal if x.event_type == EV_PACKET]
        assert handoff.event_data["routing"] == {
            "kind": "handoff",
            "target": billing.agent_id,
            "reason": "a refund",
        }
        assert b.asked == ["[Handed off via handoff] a refund"]
        assert t.asked == ["my parcel never came"]
        assert answer.event_data["context_updates"] == {"set": {"resolved": True}, "delete": []}
        assert wal[-1].event_data["reason"] == "resolved"
        assert net.hub.session_state(ch.session_id).context_vars == {"resolved": True}


async def test_bidders_bid_and_the_winner_answers_the_selection() -> None:
    async with open_hub_pair() as net:
        [me] = await net.people("me")
        bidders = [await agent(net, n, lambda t, n=n: f"{n}: {len(n) * 10}") for n in ("ann", "bo")]
        ids = [client.agent_id for client, _ in bidders]
        ch = await me.open(type="auction", target=ids)
        sid = ch.session_id
        await me.send(sid, "paint my fence")
        for _ in ids:
            await me.wait_for_channel_event(
                channel_id=sid, predicate=lambda x: x.event_type == EV_TEXT, timeout=5
            )
        await me.post_envelope(select_winner(sid, me.agent_id, ids[1]))
        thanks = await me.wait_for_channel_event(
            channel_id=sid, predicate=lambda x: x.event_type == EV_TEXT, timeout=5
        )
        assert thanks.sender_id == ids[1]
        assert bidders[1][1].asked == ["paint my fence", f"Selected {ids[1]} as the winner."]
        assert bidders[0][1].asked == ["paint my fence"]  # the loser is not asked again


async def test_broadcast_and_notification_recipients_never_answer() -> None:
    async with open_hub_pair() as net:
        [me] = await net.people("me")
        listeners = [await agent(net, n, "should not be said") for n in ("l1", "l2")]
        seen: list[str] = []
        for client, _ in listeners:

            async def note(x: Envelope) -> None:
                if x.event_type == EV_TEXT:
                    seen.append(x.text or "")

            client.on_envelope(note)
        ids = [client.agent_id for client, _ in listeners]
        news = await me.open(type="broadcast", target=ids)
        await news.send("release at noon")
        ping = await me.open(type="notification", target=ids[0])
        await ping.send("your build is green")
        wal = await closed(net, ping.session_id)
        assert wal[-1].event_type == EV_SESSION_CLOSED
        assert wal[-1].event_data["reason"] == "notification_done"
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(seen) == ["release at noon", "release at noon", "your build is green"]
        assert all(script.asked == [] for _, script in listeners)
        assert [
            x.sender_id for x in await net.hub.read_wal(news.session_id) if x.event_type == EV_TEXT
        ] == [me.agent_id]
