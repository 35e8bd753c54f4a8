"""The seed's API over a real WebSocket: every HubClient method, used remotely."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
import trio

from troupe import (
    EV_TEXT,
    AgentClient,
    ConnectionLost,
    Envelope,
    HubClient,
    HumanClient,
    NotFoundError,
    Passport,
    ProtocolError,
    Resume,
    Rule,
    SessionState,
    TaskMetadata,
    TaskSpec,
    TaskState,
)
from troupe.model import LimitsBlock, RateBlock

from ._wire import Echo, Scripted, eventually, serving, wait_until


def _is_reply(me: HumanClient) -> Callable[[Envelope], bool]:
    return lambda e: e.event_type == EV_TEXT and e.sender_id != me.agent_id


async def test_consulting_a_remote_agent_from_another_connection() -> None:
    with trio.fail_after(5):
        async with serving() as served:
            echo = Echo()
            async with (
                HubClient(served.link()) as agents,
                HubClient(served.link()) as people,
            ):
                assert agents.remote
                assert agents.hub is None
                assert agents.endpoint_id is not None
                bot = await agents.register(
                    echo, Passport(name="echo"), Resume(claimed_capabilities=["echo"])
                )
                me = await people.register_human(Passport(name="me"))
                ch = await me.open(type="consulting", target="echo")
                assert ch.state is SessionState.ACTIVE
                await me.send(ch.session_id, "hello over the wire")
                reply = await me.wait_for_channel_event(
                    channel_id=ch.session_id, predicate=_is_reply(me), timeout=3
                )
                assert reply.text == "echo: hello over the wire"
                assert reply.sender_id == bot.agent_id
                assert echo.heard == ["hello over the wire"]
                # The reply closed the consulting session, for both sides.
                md = await people.get_session(ch.session_id)
                assert md.state is SessionState.CLOSED
                wal = await people.read_wal(ch.session_id)
                assert [e.seq for e in wal] == list(range(1, len(wal) + 1))
                assert [e.text for e in wal if e.event_type == EV_TEXT] == [
                    "hello over the wire",
                    "echo: hello over the wire",
                ]
                assert await people.read_wal(ch.session_id, since=1, until=2) == wal[1:2]
                assert await people.read_wal(ch.session_id, since=-2) == wal[-2:]
                assert await people.read_wal(ch.session_id, since=-3, until=-1) == wal[-3:-1]


async def test_a_discussion_across_three_connections() -> None:
    lines = {"ann": ["a1", "a2"], "bob": ["b1", "b2"], "cat": ["c1"]}
    with trio.fail_after(5):
        async with (
            serving() as served,
            HubClient(served.link()) as one,
            HubClient(served.link()) as two,
            HubClient(served.link()) as three,
        ):
            scripts = {name: Scripted(said) for name, said in lines.items()}
            ann = await one.register(scripts["ann"], Passport(name="ann"))
            await two.register(scripts["bob"], Passport(name="bob"))
            await three.register(scripts["cat"], Passport(name="cat"))
            table = await ann.open(type="discussion", target=["bob", "cat"])
            await table.send("opening")
            await scripts["cat"].done.wait()  # cat ran out of lines: a silent round
            wal = await one.read_wal(table.session_id)
            spoken = [(one.name_for(e.sender_id), e.text) for e in wal if e.text]
            assert spoken == [
                ("ann", "opening"),
                ("bob", "b1"),
                ("cat", "c1"),
                ("ann", "a1"),
                ("bob", "b2"),
            ]
            # Each turn carried the trigger and the discussion's view of what came before it.
            last_bob = scripts["bob"].turns[-1]
            assert last_bob.text == "a1"
            assert [h.content for h in last_bob.history] == [
                "[ann]: opening",
                "b1",  # its own line, unnamed
                "[cat]: c1",
            ]
            await table.close(reason="done")
            md = await three.get_session(table.session_id)
            assert md.state is SessionState.CLOSED


async def test_discovery_and_profile_methods() -> None:
    with trio.fail_after(5):
        async with serving() as served, HubClient(served.link()) as hc:
            bot = await hc.register(
                Echo(),
                Passport(name="echo"),
                Resume(claimed_capabilities=["echo"], summary="repeats"),
                skill_md="# echo",
            )
            await hc.register(Echo(), Passport(name="parrot"), Resume(summary="a parrot"))
            assert (await hc.get_agent("echo")).agent_id == bot.agent_id
            assert (await hc.get_agent(bot.agent_id)).name == "echo"
            assert [p.name for p in await hc.list_agents(capability="echo")] == ["echo"]
            assert {p.name for p in await hc.list_agents()} == {"echo", "parrot"}
            assert [p.name for p in await hc.list_agents(query="parr")] == ["parrot"]
            assert await hc.get_skill(bot.agent_id) == "# echo"
            assert (await hc.get_resume(bot.agent_id)).summary == "repeats"

            await hc.set_resume(bot.agent_id, Resume(claimed_capabilities=["echo", "shout"]))
            assert (await hc.get_resume(bot.agent_id)).claimed_capabilities == ("echo", "shout")
            await bot.set_resume(Resume(claimed_capabilities=["echo"], summary="again"))
            assert bot.resume.summary == "again"
            await hc.set_skill(bot.agent_id, None)
            assert await hc.get_skill(bot.agent_id) is None
            rule = Rule(limits=LimitsBlock(rate=RateBlock(per_minute=600, burst=10)))
            await hc.set_rule(bot.agent_id, rule)
            assert (await hc.get_rule(bot.agent_id)).limits.rate.per_minute == 600
            assert hc.name_for(bot.agent_id) == "echo"

            with pytest.raises(NotFoundError, match="nobody"):
                await hc.get_agent("nobody")
            with pytest.raises(NotFoundError, match="nobody"):
                await hc.get_resume("nobody")


async def test_sessions_posts_and_turn_probes() -> None:
    with trio.fail_after(5):
        async with serving() as served, HubClient(served.link()) as hc:
            a = await hc.register_human(Passport(name="a"))
            b = await hc.register_human(Passport(name="b"))
            md = await hc.create_session(
                creator_id=a.agent_id,
                manifest_type="conversation",
                participants=[b.agent_id],
                intent="chat",
                labels={"topic": "wire"},
            )
            assert md.state is SessionState.ACTIVE
            assert md.labels["topic"] == "wire"
            assert [s.session_id for s in await hc.list_sessions(agent_id=b.agent_id)] == [
                md.session_id
            ]
            assert await hc.acan_send(md.session_id, a.agent_id)
            assert await hc.acan_send(md.session_id, a.agent_id, event_type=EV_TEXT)
            with pytest.raises(RuntimeError, match="acan_send"):
                hc.can_send(md.session_id, a.agent_id)

            first = await hc.post_envelope(
                Envelope(
                    session_id=md.session_id,
                    sender_id=a.agent_id,
                    event_type=EV_TEXT,
                    event_data={"text": "one"},
                )
            )
            # A post with an idempotency key lands once however often it is sent.
            again = Envelope(
                session_id=md.session_id,
                sender_id=b.agent_id,
                event_type=EV_TEXT,
                event_data={"text": "two"},
                idempotency_key="k-two",
            )
            second = await hc.post_envelope(again)
            assert await hc.post_envelope(again) == second
            wal = await hc.read_wal(md.session_id)
            texts = [(e.envelope_id, e.text) for e in wal if e.event_type == EV_TEXT]
            assert texts == [(first, "one"), (second, "two")]
            found = await hc.find_envelope_by_causation(
                md.session_id, sender_id=a.agent_id, causation_id="nothing"
            )
            assert found is None
            assert await hc.pending_turns_for(a.agent_id) == []
            # Folded here from the WAL, it is the hub's own state of the session.
            state = await hc.adapter_state(md.session_id)
            assert state == served.hub.session_state(md.session_id)
            await hc.report_turn_failure(
                session_id=md.session_id, agent_id=a.agent_id, envelope_id=first, exc=KeyError("k")
            )
            audit = await served.hub.read_audit()
            failed = [r for r in audit if r["kind"] == "turn_failed"]
            assert [(r["envelope_id"], r["exc_type"]) for r in failed] == [(first, "KeyError")]
            await hc.learn_names([b.agent_id])
            assert hc.name_for(b.agent_id) == "b"

            # The view policy needs the session's metadata on this side.
            view = hc.default_view_policy(md.session_id, a.agent_id)
            assert view is not None
            with pytest.raises(NotFoundError, match="get_session"):
                hc.default_view_policy(uuid.uuid4().hex, a.agent_id)

            closed = await hc.close_session(md.session_id, reason="bye")
            assert closed.state is SessionState.CLOSED
            assert await hc.list_sessions(agent_id=a.agent_id) == []
            listed = await hc.list_sessions(include_terminal=True)
            assert [s.session_id for s in listed] == [md.session_id]
            with pytest.raises(ProtocolError):
                await a.send(md.session_id, "too late")
            with pytest.raises(NotFoundError):
                await hc.get_session(uuid.uuid4().hex)

            # A turn owed with no trigger is owed since the hub's clock when asked.
            opened = await hc.create_session(
                creator_id=a.agent_id, manifest_type="discussion", participants=[b.agent_id]
            )
            [turn] = await hc.pending_turns_for(a.agent_id)
            assert (turn.session_id, turn.triggering_envelope_id) == (opened.session_id, None)
            assert turn.expected_at >= opened.created_at


async def test_tasks_over_the_wire() -> None:
    with trio.fail_after(5):
        async with serving() as served, HubClient(served.link()) as hc:
            bot = await hc.register(Echo(), Passport(name="worker"))
            task = TaskMetadata(
                task_id="t-1",
                owner_id=bot.agent_id,
                spec=TaskSpec(title="count", capability="counting"),
            )
            await hc.observe_task(task)
            await hc.update_task("t-1", state=TaskState.RUNNING, progress={"done": 1})
            got = await hc.get_task("t-1")
            assert got.state is TaskState.RUNNING
            assert got.progress == {"done": 1}
            await hc.checkpoint_task("t-1", {"cursor": 7})
            assert await hc.read_task_checkpoint("t-1") == {"cursor": 7}
            await hc.update_task("t-1", state=TaskState.COMPLETED, result={"n": 3})
            assert (await hc.get_task("t-1")).result == {"n": 3}
            assert [t.task_id for t in await hc.list_tasks(agent_id=bot.agent_id)] == ["t-1"]
            assert await hc.list_tasks(state=TaskState.RUNNING) == []
            await hc.record_observation(
                owner_id=bot.agent_id,
                capability="counting",
                outcome=TaskState.COMPLETED,
                latency_ms=12,
            )
            observed = (await hc.get_resume(bot.agent_id)).observed
            assert observed["counting"].completed >= 1
            with pytest.raises(NotFoundError, match="t-404"):
                await hc.get_task("t-404")


async def test_attach_unregister_shutdown_and_close() -> None:
    with trio.fail_after(5):
        async with serving() as served:
            async with HubClient(served.link()) as first:
                bot = await first.register(Echo(), Passport(name="echo"))
                human = await first.register_human(Passport(name="me"))
            # The registry is durable: a new connection attaches by name.
            async with HubClient(served.link()) as second:
                again = await second.attach(Echo(), "echo")
                assert again.agent_id == bot.agent_id
                person = await second.attach(None, "me")
                assert isinstance(person, HumanClient)
                assert person.agent_id == human.agent_id
                with pytest.raises(ValueError, match="nothing is registered as 'stranger'"):
                    await second.attach(Echo(), "stranger")
                new = await second.attach(
                    Echo(), "stranger", passport=Passport(name="stranger"), resume=Resume()
                )
                assert (await second.get_agent("stranger")).agent_id == new.agent_id
                with pytest.raises(ValueError, match="register_human"):
                    await second.register(Echo(), Passport(name="x", kind="human"))
                assert isinstance(new, AgentClient)
                await new.unregister()
                assert new.disconnected
                with pytest.raises(NotFoundError):
                    await second.get_agent("stranger")
                await second.unregister_agent(person.agent_id)
                await second.shutdown()  # unregisters what is left: echo
                assert second.closed
                await second.close()  # idempotent
                with pytest.raises(RuntimeError, match=r"closed: cannot call register$"):
                    await second.register(Echo(), Passport(name="late"))
                with pytest.raises(RuntimeError, match=r"closed: cannot call get_agent$"):
                    await second.get_agent("echo")
            assert served.hub.find_agent_id("echo") is None
            assert served.hub.find_agent_id("me") is None


async def test_a_client_that_cannot_reach_the_hub_fails_fast() -> None:
    with trio.fail_after(5):
        async with serving() as served:
            pass
        # The server is gone; nothing listens on the port any more.
        client = HubClient(served.link(connect_timeout=0.5), reconnect_within=0.3)
        with pytest.raises(ConnectionLost, match=f"could not reach {re.escape(served.url)}"):
            async with client:
                pass
        with pytest.raises(RuntimeError, match="closed"):
            await client.register(Echo(), Passport(name="echo"))


async def test_remote_client_needs_async_with() -> None:
    async with serving() as served:
        hc = HubClient(served.link())
        with pytest.raises(RuntimeError, match="async with"):
            await hc.register(Echo(), Passport(name="echo"))


async def test_closing_while_reconnecting_does_not_wait_for_the_hub() -> None:
    with trio.fail_after(5):
        async with serving() as served:
            async with HubClient(served.link(), reconnect_within=30) as hc:
                await hc.register(Echo(), Passport(name="echo"))
                await served.stop()
                await wait_until(lambda: hc.endpoint_id is None)  # now retrying, with backoff
                closing = trio.current_time()
            assert trio.current_time() - closing < 0.5
            with pytest.raises(RuntimeError, match=r"closed: cannot call get_agent$"):
                await hc.get_agent("echo")


async def test_closing_at_once_keeps_the_receipt_of_what_a_person_took() -> None:
    # Issue 17, over the wire: a person took a reply and closed the client while a callback
    # still ran; the receipt must reach the hub (else the reply is replayed next time).
    with trio.fail_after(5):
        async with serving() as served, HubClient(served.link()) as agents:
            await agents.register(Echo(), Passport(name="echo"), Resume())
            async with HubClient(served.link()) as people:
                me = await people.register_human(Passport(name="me"))

                async def draw(envelope: Envelope) -> None:  # a UI still busy at close
                    await trio.sleep(1)

                me.on_envelope(draw)
                ch = await me.open(type="conversation", target="echo")
                await me.send(ch.session_id, "ping")
                reply = await me.wait_for_channel_event(
                    channel_id=ch.session_id, predicate=_is_reply(me), timeout=3
                )
            store = served.hub.core.store

            async def acked() -> bool:
                cursors = await store.load_cursors(me.agent_id)
                return cursors.get(ch.session_id, 0) >= reply.seq

            await eventually(acked)
