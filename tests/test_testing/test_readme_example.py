"""The README's "Testing your agents" example, run as it is written there.

``test_the_readme_shows_this_file`` keeps the two in step: the README's code block must be
this file's text between the markers.
"""

from __future__ import annotations

import re
from pathlib import Path

# --- README example start ---
from troupe import EV_TEXT, HubClient, Passport
from troupe.testing import CrashPoints, ScriptedAgent, expect_envelope


async def test_the_expert_answers_through_a_crash(
    troupe_hub_client: HubClient, troupe_crash_points: CrashPoints
) -> None:
    expert = ScriptedAgent(["Paris."])
    await troupe_hub_client.register(expert, Passport(name="expert"))
    me = await troupe_hub_client.register_human(Passport(name="me"))
    channel = await me.open(type="conversation", target="expert")

    # Crash the session actor right after the question is durable: the hub restarts it
    # from its WAL, retries the post, and the conversation goes on as if nothing happened.
    troupe_crash_points.crash_at("after_append", session_id=channel.session_id)
    await me.send(channel.session_id, "Capital of France?")
    reply = await expect_envelope(me, channel.session_id, event_type=EV_TEXT, text="Paris.")
    assert reply.causation_id is not None
    assert expert.texts == ["Capital of France?"]
    assert troupe_crash_points.statistics().crashes == 1


# --- README example end ---


def test_the_readme_shows_this_file() -> None:
    source = Path(__file__).read_text()
    example = source.split("# --- README example start ---\n")[1].split("# --- README")[0]
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Testing your agents")[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None, "the README's 'Testing your agents' section has no example"
    assert block.group(1) == example.rstrip() + "\n"
