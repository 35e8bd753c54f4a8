"""HubClient: every seed method, registration rules, close / shutdown / attach."""

from __future__ import annotations

import attrs
import pytest
import trio
from trio.testing import MockClock

from troupe import (
    EV_SESSION_CLOSED,
    EV_TEXT,
    AgentClient,
    DecodeError,
    Envelope,
    HubClient,
    HumanClient,
    LocalLink,
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
from troupe.model import LimitsBlock

from ..harness import (
    WAIT,
    Lines,
    Scripted,
    counting_steps,
    from_,
    of_type,
    open_hub_pair,
    text,
    texts,
)


async def test_register_returns_a_bound_agent_client(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bob, agent = await p.scripted("bob", capabilities=["math"])
        assert isinstance(bob, AgentClient)
        assert bob.agent is agent
        assert bob.passport.name == "bob"
        assert bob.agent_id == bob.passport.agent_id
        assert bob.resume.claimed_capabilities == ("math",)
        assert bob.rule == Rule()
        assert bob.hub_client is p.hc
        assert bob.hub is p.hub
        assert p.hc.identities() == [bob]
        assert p.hc.endpoint_id is not None
        assert p.hub.core.bindings[bob.agent_id] is p.hub.core.connections[p.hc.endpoint_id].ref


async def test_register_passes_skill_and_rule(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        rule = Rule(limits=LimitsBlock(delegation_depth=2))
        bob = await p.hc.register(
            Scripted("bob"), Passport(name="bob"), Resume(), skill_md="# bob", rule=rule
        )
        assert await p.hc.get_skill(bob.agent_id) == "# bob"
        assert (await p.hc.get_rule(bob.agent_id)).limits.delegation_depth == 2
        assert bob.rule.limits.delegation_depth == 2


async def test_register_refuses_a_human_passport(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        with pytest.raises(ValueError, match="register_human"):
            await p.hc.register(Scripted("al"), Passport(name="al", kind="human"), Resume())
        assert p.hub.find_agent_id("al") is None


async def test_register_human_refuses_another_kind(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        with pytest.raises(ValueError, match="kind='human'"):
            await p.hc.register_human(Passport(name="r2", kind="agent"))
        assert p.hub.find_agent_id("r2") is None


async def test_register_human_stamps_kind_human(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.hc.register_human(Passport(name="al"), Resume(summary="a person"))
        assert isinstance(al, HumanClient)
        assert al.passport.kind == "human"
        assert (await p.hc.get_agent("al")).kind == "human"
        assert al.resume.summary == "a person"


async def test_a_name_taken_is_a_protocol_error(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        await p.scripted("bob")
        with pytest.raises(ProtocolError, match="bob"):
            await p.scripted("bob")


async def test_exist_ok_attaches_the_identity_a_failed_run_left_registered(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        # A first run that ended without shutdown(): both stay registered.
        first = p.client()
        echo = await first.register(Scripted("echo"), Passport(name="echo"), exist_ok=True)
        me = await first.register_human(Passport(name="me", kind="human"), exist_ok=True)
        await first.close()
        # The rerun gets the same identities back, bound to its own connection, and works.
        second = p.client()
        echo2 = await second.register(Scripted("echo"), Passport(name="echo"), exist_ok=True)
        me2 = await second.register_human(Passport(name="me", kind="human"), exist_ok=True)
        assert (echo2.agent_id, me2.agent_id) == (echo.agent_id, me.agent_id)
        assert isinstance(echo2, AgentClient)
        assert isinstance(me2, HumanClient)
        ch = await me2.open(type="consulting", target="echo")
        await me2.send(ch.session_id, "hi")
        reply = await me2.wait_for_channel_event(
            channel_id=ch.session_id, predicate=from_(echo2), timeout=WAIT
        )
        assert reply.text == "echo: hi"
        await second.close()


async def test_exist_ok_does_not_attach_the_other_kind(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        await p.scripted("bob")
        await p.human("al")
        with pytest.raises(ValueError, match=r"^'al' is registered as a human: register"):
            await p.hc.register(Scripted("al"), Passport(name="al"), exist_ok=True)
        with pytest.raises(ValueError, match=r"^'bob' is registered as an agent: register_human"):
            await p.hc.register_human(Passport(name="bob"), exist_ok=True)
        with pytest.raises(ProtocolError, match="bob"):  # without exist_ok: as before
            await p.hc.register(Scripted("bob"), Passport(name="bob"))


async def test_registry_pass_throughs(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bob, _ = await p.scripted("bob", capabilities=["math"])
        carol, _ = await p.scripted("carol", capabilities=["poetry"])
        await carol.set_resume(Resume(claimed_capabilities=["poetry"], summary="Writes Sonnets"))
        assert (await p.hc.get_agent("bob")).agent_id == bob.agent_id
        assert (await p.hc.get_agent(bob.agent_id)).name == "bob"
        with pytest.raises(NotFoundError):
            await p.hc.get_agent("nobody")

        assert [a.name for a in await p.hc.list_agents(capability="math")] == ["bob"]
        assert [a.name for a in await p.hc.list_agents(query="sonnet")] == ["carol"]
        assert len(await p.hc.list_agents(limit=1)) == 1
        assert [a.name for a in await p.hc.list_agents(sort_by="name")] == ["bob", "carol"]
        assert [a.name for a in await p.hc.list_agents(kind="human")] == []
        assert {a.name for a in await p.hc.list_agents()} == {"bob", "carol"}

        await p.hc.set_resume(bob.agent_id, Resume(claimed_capabilities=["chess"]))
        assert (await p.hc.get_resume(bob.agent_id)).claimed_capabilities == ("chess",)
        assert [a.name for a in await p.hc.list_agents(capability="chess")] == ["bob"]

        assert await p.hc.get_skill(bob.agent_id) is None
        await p.hc.set_skill(bob.agent_id, "# Bob\nadds numbers")
        assert await p.hc.get_skill(bob.agent_id) == "# Bob\nadds numbers"

        await p.hc.set_rule(bob.agent_id, Rule(limits=LimitsBlock(delegation_depth=1)))
        assert (await p.hc.get_rule(bob.agent_id)).limits.delegation_depth == 1


async def test_unregister_agent_forgets_it_and_disconnects_its_client(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        bob, _ = await p.scripted("bob")
        await p.hc.unregister_agent(bob.agent_id)
        assert p.hub.find_agent_id("bob") is None
        assert bob.disconnected
        assert p.hc.identities() == []
        with pytest.raises(NotFoundError):
            await p.hc.unregister_agent(bob.agent_id)


async def test_session_pass_throughs(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bob, _ = await p.scripted("bob")
        al = await p.human("al")
        md = await p.hc.create_session(
            creator_id=al.agent_id,
            manifest_type="conversation",
            participants=[bob.agent_id],
            ttl=60,
            intent="chat",
            labels={"topic": "x"},
        )
        assert md.state is SessionState.ACTIVE
        assert md.labels["topic"] == "x"
        assert md.expires_at is not None
        assert (await p.hc.get_session(md.session_id)) == md

        assert [m.session_id for m in await p.hc.list_sessions(agent_id=bob.agent_id)] == [
            md.session_id
        ]
        assert p.hc.can_send(md.session_id, al.agent_id)
        assert not p.hc.can_send(md.session_id, "stranger")
        assert p.hc.default_view_policy(md.session_id, bob.agent_id).name == "windowed_summary"

        sent = await p.hc.post_envelope(text(md, al.agent_id, "hi"))
        reply = await al.wait_for_channel_event(
            channel_id=md.session_id, predicate=from_(bob), timeout=WAIT
        )
        wal = await p.hc.read_wal(md.session_id)
        assert [e.envelope_id for e in wal if e.event_type == EV_TEXT] == [
            sent,
            reply.envelope_id,
        ]
        last = wal[-1].seq
        assert [e.seq for e in await p.hc.read_wal(md.session_id, since=last - 1)] == [last]
        assert [e.seq for e in await p.hc.read_wal(md.session_id, since=0, until=1)] == [1]

        closed = await p.hc.close_session(md.session_id, reason="done")
        assert closed.state is SessionState.CLOSED
        assert closed.close_reason == "done"
        assert await p.hc.list_sessions(agent_id=bob.agent_id) == []
        assert [
            m.session_id
            for m in await p.hc.list_sessions(agent_id=bob.agent_id, include_terminal=True)
        ] == [md.session_id]
        assert not p.hc.can_send(md.session_id, al.agent_id)


SLICES = [(-2, None), (0, -1), (-3, -1), (1, 3), (-100, 2), (2, -100), (3, 1), (-1, 5), (9, None)]


@pytest.mark.parametrize(("since", "until"), SLICES)
async def test_read_wal_is_the_slice_wal_since_until(
    since: int, until: int | None, autojump_clock: MockClock
) -> None:
    # Issue 17: as in the seed (wal[since:until]), a negative bound counts from the end;
    # since=-2 returned the whole WAL.
    async with open_hub_pair() as p:
        await p.scripted("bob", lambda turn: None)
        al = await p.human("al")
        ch = await al.open(type="conversation", target="bob")
        for body in ("one", "two"):
            await al.send(ch.session_id, body)
        await p.settle()
        wal = await p.hc.read_wal(ch.session_id)
        assert len(wal) == 5
        got = await p.hc.read_wal(ch.session_id, since=since, until=until)
        assert got == wal[since:until]


async def test_task_pass_throughs(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bob, _ = await p.scripted("bob")
        task = TaskMetadata(
            task_id="t1",
            owner_id=bob.agent_id,
            spec=TaskSpec(title="sum", capability="math"),
            state=TaskState.RUNNING,
        )
        await p.hc.observe_task(task)
        assert (await p.hc.get_task("t1")).state is TaskState.RUNNING
        await p.hc.update_task("t1", progress={"done": 1}, error="transient hiccup")
        assert (await p.hc.get_task("t1")).error == "transient hiccup"
        assert (await p.hc.get_task("t1")).progress == {"done": 1}
        await p.hc.update_task("t1", state=TaskState.COMPLETED, result=3)
        finished = await p.hc.get_task("t1")
        assert (finished.state, finished.result) == (TaskState.COMPLETED, 3)
        # A task with a capability feeds its owner's track record when it ends.
        assert (await p.hc.get_resume(bob.agent_id)).observed["math"].completed == 1
        assert [t.task_id for t in await p.hc.list_tasks(agent_id=bob.agent_id)] == ["t1"]
        assert await p.hc.list_tasks(state=TaskState.RUNNING) == []
        with pytest.raises(NotFoundError):
            await p.hc.get_task("t2")

        await p.hc.record_observation(
            owner_id=bob.agent_id,
            capability="math",
            outcome=TaskState.COMPLETED,
            latency_ms=40,
            task_id="t9",
        )
        observed = (await p.hc.get_resume(bob.agent_id)).observed["math"]
        assert (observed.n, observed.completed) == (2, 2)


async def test_a_closed_client_refuses_work(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        await p.hc.close()
        assert p.hc.closed
        with pytest.raises(RuntimeError, match="closed"):
            await p.scripted("bob")
        with pytest.raises(RuntimeError, match="closed"):
            await p.human("al")
        with pytest.raises(RuntimeError, match="closed"):
            await p.hc.attach(Scripted("x"), "x")
        with pytest.raises(RuntimeError, match="closed"):
            await p.hc.post_envelope(text("s", "x", "hi"))


async def test_close_is_idempotent_and_identities_stay_registered(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        bob, _ = await p.scripted("bob")
        al = await p.human("al")
        await p.settle()
        assert p.hub.statistics().connections == 1
        await p.hc.close()
        await p.hc.close()
        await p.settle()
        assert bob.disconnected
        assert al.disconnected
        assert p.hub.find_agent_id("bob") == bob.agent_id
        assert p.hub.find_agent_id("al") == al.agent_id
        assert p.hub.statistics().connections == 0
        assert bob.agent_id not in p.hub.core.bindings
        with pytest.raises(RuntimeError, match="disconnected"):
            await al.send("s", "hi")


async def test_close_before_connecting_is_harmless(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        hc = p.client()
        await hc.close()
        assert hc.closed
        assert hc.endpoint_id is None


async def test_shutdown_unregisters_every_identity(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        hc = p.client()
        bob, _ = await p.scripted("bob", hc=hc)
        al = await p.human("al", hc=hc)
        await hc.shutdown()
        assert hc.closed
        assert p.hub.find_agent_id("bob") is None
        assert p.hub.find_agent_id("al") is None
        assert bob.disconnected
        assert al.disconnected
        await hc.shutdown()  # idempotent


async def test_shutdown_wakes_waiters(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        woke = trio.Event()

        async def wait() -> None:
            with pytest.raises(RuntimeError, match="disconnected"):
                await al.next_envelope()
            woke.set()

        p.nursery.start_soon(wait)
        await p.settle()
        await p.hc.shutdown()
        await p.settle()
        assert woke.is_set()


async def test_async_with_closes_and_keeps_identities(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        async with HubClient(LocalLink(p.hub)) as hc:
            bob, _ = await p.scripted("bob", hc=hc)
        assert hc.closed
        assert bob.disconnected
        assert p.hub.find_agent_id("bob") == bob.agent_id


async def test_hub_defaults_to_the_links_hub(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        assert HubClient(LocalLink(p.hub)).hub is p.hub
        assert HubClient(LocalLink(p.hub), hub=p.hub).hub is p.hub


async def test_attach_rebinds_an_existing_agent(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        first = p.client()
        bob, _ = await p.scripted("bob", hc=first)
        await first.close()
        second = p.client()
        again = await second.attach(Scripted("bob"), "bob")
        assert isinstance(again, AgentClient)
        assert again.agent_id == bob.agent_id
        assert (
            p.hub.core.bindings[bob.agent_id]
            is p.hub.core.connections[second.endpoint_id or ""].ref
        )
        await second.close()


async def test_attach_rebinds_an_existing_human(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        first = p.client()
        al = await p.human("al", hc=first)
        await first.close()
        second = p.client()
        again = await second.attach(None, "al")
        assert isinstance(again, HumanClient)
        assert again.agent_id == al.agent_id
        await second.close()


async def test_attach_registers_a_new_identity_given_passport_and_resume(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        bob = await p.hc.attach(
            Scripted("bob"), "bob", passport=Passport(name="bob"), resume=Resume()
        )
        al = await p.hc.attach(
            None, "al", passport=Passport(name="al", kind="human"), resume=Resume()
        )
        assert isinstance(bob, AgentClient)
        assert isinstance(al, HumanClient)
        assert p.hub.find_agent_id("bob") == bob.agent_id
        assert p.hub.find_agent_id("al") == al.agent_id


async def test_attach_refuses_what_it_cannot_do(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        unknown = (
            r"^nothing is registered as 'x': attach re-binds an existing identity \(give "
            r"passport= and resume= to register it when it is missing\)$"
        )
        with pytest.raises(ValueError, match=unknown):
            await p.hc.attach(Scripted("x"), "x")
        with pytest.raises(ValueError, match=unknown):
            await p.hc.attach(Scripted("x"), "x", passport=Passport(name="x"))
        with pytest.raises(ValueError, match="needs the agent"):
            await p.hc.attach(None, "x", passport=Passport(name="x"), resume=Resume())
        first = p.client()
        await p.scripted("bob", hc=first)
        await first.close()
        with pytest.raises(ValueError, match="needs the agent"):
            await p.hc.attach(None, "bob")


async def test_deliveries_to_an_unknown_identity_are_nacked(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        bob, _ = await p.scripted("bob")
        al = await p.human("al")
        ch = await al.open(type="conversation", target="bob")
        await p.settle()
        # bob is still bound to this connection, but the client forgot him.
        p.hc._clients.pop(bob.agent_id)
        await al.send(ch.session_id, "anyone?")
        await p.settle()
        nacks = await p.audit("delivery_nacked")
        assert [(n["agent_id"], n["reason"]) for n in nacks] == [
            (bob.agent_id, "no such identity on this client")
        ]


async def test_create_session_errors_surface(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        with pytest.raises(NotFoundError):
            await p.hc.create_session(
                creator_id=al.agent_id, manifest_type="consulting", participants=["ghost"]
            )
        with pytest.raises(NotFoundError):
            await p.hc.get_session("nope")
        with pytest.raises(NotFoundError):
            await p.hc.close_session("nope")


async def test_close_session_notifies_participants(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        await p.scripted("bob")
        al = await p.human("al")
        ch = await al.open(type="conversation", target="bob")
        await p.hc.close_session(ch.session_id)
        closed = await al.wait_for_channel_event(
            channel_id=ch.session_id, predicate=of_type(EV_SESSION_CLOSED), timeout=WAIT
        )
        assert closed.event_data["reason"] == "explicit_close"
        assert texts(await p.wal(ch.session_id)) == []


async def test_attaching_twice_on_one_client_disconnects_the_first_handle(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        waiting: list[BaseException] = []

        async def wait_on_old_handle() -> None:
            try:
                await al.next_envelope(timeout=WAIT)
            except RuntimeError as exc:
                waiting.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_on_old_handle)
            await p.settle()
            again = await p.hc.attach(None, "al")
        assert again is not al
        assert al.disconnected
        assert [type(e).__name__ for e in waiting] == ["Disconnected"]


async def test_a_client_forgets_the_marks_of_sessions_that_ended(
    autojump_clock: MockClock,
) -> None:
    async with open_hub_pair() as p:
        asker = await p.human("asker")
        await p.scripted("expert", lambda turn: "because")
        for n in range(3):
            channel = await asker.open(type="consulting", target="expert")
            await asker.send(channel.session_id, f"why {n}?")
            await p.settle()
            assert (await p.hub.get_session(channel.session_id)).state.terminal
        # Every identity's marks for the three ended sessions are gone from the live tables.
        assert p.hc._router.marks() == 0
        assert len(p.hc._router._ended) == 6


async def test_attaching_again_hands_queued_deliveries_to_the_new_handle(
    autojump_clock: MockClock,
) -> None:
    # bob is busy with t0 while t1 and t2 queue for him; then he is attached again. The old
    # handle used to ack t1 and t2 without handling them, and the replay was dropped.
    async with open_hub_pair(cursor_flush_interval=0) as p:  # each ack saved at once
        al = await p.human("al")
        bob, _ = await p.scripted("bob", lambda turn: None)
        chat = await al.open(type="conversation", target="bob")
        release = trio.Event()

        async def busy(envelope: Envelope) -> None:
            if envelope.event_type == EV_TEXT:
                await release.wait()

        bob.on_envelope(busy)
        for n in range(3):
            await al.send(chat.session_id, f"t{n}")
        await p.settle()
        seen: list[str] = []

        async def record(envelope: Envelope) -> None:
            if envelope.text is not None:
                seen.append(envelope.text)

        again = await p.hc.attach(Scripted("bob"), "bob")
        assert isinstance(again, AgentClient)
        again.on_envelope(record)
        release.set()
        await p.settle()
        assert {"t1", "t2"} <= set(seen)
        cursor = (await p.store.load_cursors(bob.agent_id))[chat.session_id]
        (t2,) = [e for e in await p.hub.read_wal(chat.session_id) if e.text == "t2"]
        assert cursor == t2.seq  # acked once really handled


async def test_adapter_state_is_the_session_types_state(autojump_clock: MockClock) -> None:
    async with open_hub_pair() as p:
        ada, _ = await p.scripted("ada", Lines("a1"))
        await p.scripted("bob", Lines("b1"))
        ch = await ada.open(type="discussion", target=["bob"])
        await ch.send("hello")
        await p.settle()
        state = await p.hc.adapter_state(ch.session_id)
        assert state is not None
        assert state == p.hub.session_state(ch.session_id)
        with pytest.raises(NotFoundError):
            await p.hc.adapter_state("no-such-session")


async def test_the_last_receipt_of_a_burst_costs_its_drain_no_step(
    autojump_clock: MockClock,
) -> None:
    """Issue 15, item 3: a drain that ends after a receipt sends it without a checkpoint of
    its own when the in-process connection has room; the hub still gets every receipt."""
    async with open_hub_pair(cursor_flush_interval=0) as p:  # each ack saved at once
        me = await p.human("me")
        scribe, _ = await p.scripted("scribe", lambda turn: "noted")
        channel = await me.open(type="conversation", target="scribe")
        await p.settle()
        with counting_steps(lambda task: task.name.endswith("Router._drain")) as counter:
            for n in range(10):
                await me.send(channel.session_id, f"note {n}")
                await p.settle()
        # 20 deliveries: a note's drain takes three steps (its start, the scribe's respond's
        # own checkpoint, its post's answer), an answer's one (its start). It was 60 while
        # an ask checkpointed before it waited and a turn asked for names in process (80
        # when each receipt took a step of its own).
        assert counter.steps <= 10 * (3 + 1)
        # Every receipt reached the hub: my cursor is at the last answer, the scribe's at
        # my last note (its answer is not delivered to itself).
        last = (await p.hub.read_wal(channel.session_id))[-1].seq
        sid = channel.session_id
        assert (await p.store.load_cursors(me.agent_id))[sid] == last
        assert (await p.store.load_cursors(scribe.agent_id))[sid] == last - 1


async def test_a_client_refuses_task_data_json_cannot_carry_as_the_hub_does(
    autojump_clock: MockClock,
) -> None:
    # The seed methods are declared once (HubCalls) for Hub and HubClient: a task's result
    # with a non-string key is refused through either, not silently re-keyed by one of them.
    async with open_hub_pair() as p:
        bob, _ = await p.scripted("bob")
        task = TaskMetadata(task_id="t", owner_id=bob.agent_id, spec=TaskSpec(title="t"))
        await p.hc.observe_task(task)
        for api in (p.hub, p.hc):
            with pytest.raises(DecodeError, match=r"UpdateTask\.result: keys must be strings"):
                await api.update_task("t", result={1: "one"})
            with pytest.raises(DecodeError, match=r"TaskMetadata\.result: keys must be strings"):
                await api.observe_task(attrs.evolve(task, result={2: "two"}))
        assert (await p.hc.get_task("t")).result is None
