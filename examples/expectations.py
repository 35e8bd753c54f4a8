"""Timed expectations: a discussion warns a stalled speaker, then passes the floor on.

A discussion declares ``turn_within`` 120 s -> ``warn`` and ``turn_within`` 600 s ->
``hide``. Here ``bob`` never answers: after 120 s everyone is warned, after 600 s his turn is
hidden and the floor passes to ``cy``, whose agent answers the notice. Time is virtual (a
``MockClock`` that jumps whenever everything waits), so this takes no real time. Run:
``python examples/expectations.py``.
"""

from __future__ import annotations

import trio
import trio.testing

from troupe import EV_EXPECTATION_VIOLATED, EV_TEXT, HubClient, LocalLink, Passport, Turn, open_hub


class Cy:
    async def respond(self, turn: Turn) -> str:
        return "bob seems away; I'll go: Friday works for me."


class Bob:
    async def respond(self, turn: Turn) -> None:
        return None  # silent: never takes his turn


async def main() -> None:
    async with open_hub(expectation_sweep_interval=10) as hub:
        hc = HubClient(LocalLink(hub))
        ada = await hc.register_human(Passport(name="ada", kind="human"))
        await hc.register(Bob(), Passport(name="bob"))
        await hc.register(Cy(), Passport(name="cy"))
        talk = await ada.open(type="discussion", target=["bob", "cy"])
        start = trio.current_time()
        await talk.send("When shall we meet?")
        seen = 0
        while seen < 2:
            notice = await ada.wait_for_channel_event(
                channel_id=talk.session_id,
                predicate=lambda e: e.event_type == EV_EXPECTATION_VIOLATED,
                timeout=3600,  # virtual seconds
            )
            data = notice.event_data
            who = ", ".join(hc.name_for(v) for v in data["violators"])
            elapsed = trio.current_time() - start
            print(f"after {elapsed:.0f} s: {data['expectation']} -> {data['on_violation']} ({who})")
            seen += 1
        answer = await ada.wait_for_channel_event(
            channel_id=talk.session_id, predicate=lambda e: e.event_type == EV_TEXT, timeout=60
        )
        print(f"{hc.name_for(answer.sender_id)}: {answer.text}")
        state = hub.session_state(talk.session_id)
        print(f"next to speak: {hc.name_for(state.expected_next_speaker)}")
        await hc.shutdown()


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
