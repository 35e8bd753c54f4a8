"""Authentication and authorisation over the wire: keys, and no acting for others."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from troupe import (
    EV_TEXT,
    AccessDeniedError,
    AgentClient,
    ApiKeyAuth,
    AuthBlock,
    AuthError,
    Envelope,
    HubClient,
    HumanClient,
    NoAuth,
    NotFoundError,
    Passport,
    Resume,
    Rule,
    TaskMetadata,
    TaskSpec,
    TaskState,
)
from troupe.model import (
    ErrorFrame,
    HelloFrame,
    ReceiptFrame,
    RequestFrame,
    ResponseFrame,
    SendFrame,
    WelcomeFrame,
    unstructure,
)

from ._wire import Echo, Served, raw, serving, wait_until

KEYS = {"echo": "k-echo", "me": "k-me", "mallory": "k-mallory"}


async def test_api_keys_let_agents_register_and_attach() -> None:
    with trio.fail_after(5):
        async with serving(auth=[ApiKeyAuth(KEYS)]) as served:
            async with HubClient(served.link(auth={"echo": "k-echo", "me": "k-me"})) as hc:
                bot = await hc.register(Echo(), Passport(name="echo"))
                me = await hc.register_human(Passport(name="me"))
                ch = await me.open(type="consulting", target="echo")
                await me.send(ch.session_id, "hi")
                reply = await me.wait_for_channel_event(
                    channel_id=ch.session_id,
                    predicate=lambda e: e.sender_id == bot.agent_id and e.event_type == EV_TEXT,
                    timeout=3,
                )
                assert reply.text == "echo: hi"
            # Attaching again later presents the key in the HelloFrame.
            async with HubClient(served.link(auth={"echo": "k-echo"})) as again:
                assert (await again.attach(Echo(), "echo")).agent_id == bot.agent_id


async def test_the_hub_neither_keeps_nor_shows_the_claim() -> None:
    with trio.fail_after(5):
        async with (
            serving(auth=[ApiKeyAuth(KEYS)]) as served,
            HubClient(served.link(auth={"echo": "k-echo"})) as hc,
        ):
            bot = await hc.register(Echo(), Passport(name="echo"))
            assert bot.passport.auth == AuthBlock(scheme="api_key")
            shown = await hc.get_agent("echo")
            assert shown.auth == AuthBlock(scheme="api_key")
            assert all(p.auth.claim == {} for p in await hc.list_agents())
            stored = await served.hub.core.store.load_agents()
            assert [r.passport.auth.claim for r in stored] == [{}]
            assert "k-echo" not in repr(stored)
            assert "k-echo" not in repr(served.hub.core.registry.resolve("echo"))


@pytest.mark.parametrize(
    ("keys", "passport", "message"),
    [
        ({"echo": "wrong"}, Passport(name="echo"), "bad api key for agent 'echo'"),
        (
            {},
            Passport(name="echo"),
            "the hub requires authentication for agent 'echo' (api_key) and none was presented; "
            "over WebSocket give the link its key: WsLink(url, auth={'echo': KEY})",
        ),
        (
            {"stranger": "k"},
            Passport(name="stranger"),
            "bad api key for agent 'stranger'",
        ),
        (
            {},
            Passport(name="echo", auth=AuthBlock(scheme="jwt", claim={"token": "x"})),
            "no auth adapter installed for scheme 'jwt' (agent 'echo'); the hub accepts api_key",
        ),
        (
            {},
            Passport(name="echo", auth=AuthBlock(scheme="api_key", claim={"token": 7})),
            "bad api key for agent 'echo'",
        ),
    ],
    ids=["wrong-key", "missing-key", "unknown-name", "unknown-scheme", "token-not-a-string"],
)
async def test_registering_with_a_bad_claim_fails(
    keys: dict[str, str], passport: Passport, message: str
) -> None:
    with trio.fail_after(5):
        async with (
            serving(auth=[ApiKeyAuth(KEYS)]) as served,
            HubClient(served.link(auth=keys)) as hc,
        ):
            with pytest.raises(AuthError, match=re.escape(message)):
                await hc.register(Echo(), passport)
            assert served.hub.find_agent_id(passport.name) is None
            # The connection keeps serving after the refusal.
            assert await hc.list_agents() == []


async def test_a_remote_agent_passport_cannot_skip_the_keys() -> None:
    """kind="remote_agent" (a federation proxy) skips registration auth in process; over
    the wire it would let anyone take a configured name without its key."""
    with trio.fail_after(5):
        async with (
            serving(auth=[ApiKeyAuth(KEYS)]) as served,
            HubClient(served.link()) as hc,
        ):
            with pytest.raises(AccessDeniedError, match="remote_agent"):
                await hc.register(Echo(), Passport(name="echo", kind="remote_agent"))
            assert served.hub.find_agent_id("echo") is None


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"echo": "wrong"}, "bad api key for agent 'echo'"),
        (
            {},
            "the hub requires authentication for agent 'echo' (api_key) and none was presented; "
            "over WebSocket give the link its key: WsLink(url, auth={'echo': KEY})",
        ),
    ],
    ids=["wrong-key", "missing-key"],
)
async def test_attaching_with_a_bad_claim_fails(keys: dict[str, str], message: str) -> None:
    with trio.fail_after(5):
        async with serving(auth=[ApiKeyAuth(KEYS)]) as served:
            async with HubClient(served.link(auth={"echo": "k-echo"})) as owner:
                bot = await owner.register(Echo(), Passport(name="echo"))
                ownership = served.hub.core.bindings[bot.agent_id]
                async with HubClient(served.link(auth=keys)) as thief:
                    with pytest.raises(AuthError, match=re.escape(message)):
                        await thief.attach(Echo(), "echo")
                    assert thief.identities() == []
                    # The owner's binding was not taken.
                    assert served.hub.core.bindings[bot.agent_id] is ownership


async def test_hello_errors_echo_the_request_id() -> None:
    with trio.fail_after(5):
        async with serving(auth=[ApiKeyAuth(KEYS)]) as served:
            async with HubClient(served.link(auth={"echo": "k-echo"})) as hc:
                await hc.register(Echo(), Passport(name="echo"))
            async with raw(served.url) as ws:
                await ws.send(HelloFrame(name="nobody", request_id="r1"))
                error = await ws.receive_kind(ErrorFrame)
                assert (error.code, error.request_id) == ("not_found", "r1")
                await ws.send(
                    HelloFrame(
                        name="echo",
                        auth_scheme="api_key",
                        auth_claim={"token": "nope"},
                        request_id="r2",
                    )
                )
                error = await ws.receive_kind(ErrorFrame)
                assert (error.code, error.request_id) == ("auth_failed", "r2")
                await ws.send(HelloFrame(name="echo", auth_scheme="jwt", request_id="r3"))
                error = await ws.receive_kind(ErrorFrame)
                assert (error.code, error.request_id) == ("auth_failed", "r3")
                assert "'jwt'" in error.message
                await ws.send(
                    HelloFrame(
                        name="echo",
                        auth_scheme="api_key",
                        auth_claim={"token": "k-echo"},
                        request_id="r4",
                    )
                )
                welcome = await ws.receive_kind(WelcomeFrame)
                assert welcome.request_id == "r4"
                assert welcome.agent_id == served.hub.find_agent_id("echo")


@attrs.define
class Two:
    """Victim and intruder on two connections of one hub."""

    served: Served
    owner: HubClient
    intruder: HubClient
    bot: AgentClient
    mallory: HumanClient
    session_id: str
    task_id: str


@asynccontextmanager
async def two_parties() -> AsyncIterator[Two]:
    async with (
        serving(auth=[NoAuth()]) as served,
        HubClient(served.link()) as owner,
        HubClient(served.link()) as intruder,
    ):
        bot = await owner.register(Echo(), Passport(name="echo"))
        friend = await owner.register_human(Passport(name="friend"))
        mallory = await intruder.register_human(Passport(name="mallory"))
        md = await owner.create_session(
            creator_id=friend.agent_id, manifest_type="conversation", participants=[bot.agent_id]
        )
        task = TaskMetadata(task_id="t-echo", owner_id=bot.agent_id, spec=TaskSpec(title="x"))
        await owner.observe_task(task)
        yield Two(served, owner, intruder, bot, mallory, md.session_id, task.task_id)


def _forged(t: Two) -> Envelope:
    return Envelope(
        session_id=t.session_id,
        sender_id=t.bot.agent_id,
        event_type=EV_TEXT,
        event_data={"text": "forged"},
    )


#: What the intruder tries to do to (or as) the agent "echo" of another connection.
ATTEMPTS: dict[str, Callable[[Two], Awaitable[Any]]] = {
    "post as": lambda t: t.intruder.post_envelope(_forged(t)),
    "read the WAL of": lambda t: t.intruder.read_wal(t.session_id),
    "get the session of": lambda t: t.intruder.get_session(t.session_id),
    "close the session of": lambda t: t.intruder.close_session(t.session_id),
    "list the sessions of": lambda t: t.intruder.list_sessions(agent_id=t.bot.agent_id),
    "set the resume of": lambda t: t.intruder.set_resume(t.bot.agent_id, Resume(summary="x")),
    "set the skill of": lambda t: t.intruder.set_skill(t.bot.agent_id, "pwned"),
    "set the rule of": lambda t: t.intruder.set_rule(t.bot.agent_id, Rule()),
    "unregister": lambda t: t.intruder.unregister_agent(t.bot.agent_id),
    "open a session as": lambda t: t.intruder.create_session(
        creator_id=t.bot.agent_id,
        manifest_type="conversation",
        participants=[t.mallory.agent_id],
    ),
    "probe a turn as": lambda t: t.intruder.acan_send(t.session_id, t.bot.agent_id),
    "look up the causation of": lambda t: t.intruder.find_envelope_by_causation(
        t.session_id, sender_id=t.bot.agent_id, causation_id="x"
    ),
    "read the pending turns of": lambda t: t.intruder.pending_turns_for(t.bot.agent_id),
    "observe a task for": lambda t: t.intruder.observe_task(
        TaskMetadata(task_id="t-forged", owner_id=t.bot.agent_id, spec=TaskSpec(title="x"))
    ),
    "read the task of": lambda t: t.intruder.get_task(t.task_id),
    "update the task of": lambda t: t.intruder.update_task(t.task_id, state=TaskState.FAILED),
    "list the tasks of": lambda t: t.intruder.list_tasks(agent_id=t.bot.agent_id),
    "checkpoint the task of": lambda t: t.intruder.checkpoint_task(t.task_id, {"x": 1}),
    "read the checkpoint of": lambda t: t.intruder.read_task_checkpoint(t.task_id),
    "record an observation for": lambda t: t.intruder.record_observation(
        owner_id=t.bot.agent_id, capability="echo", outcome=TaskState.FAILED
    ),
    "report a turn failure for": lambda t: t.intruder.report_turn_failure(
        session_id=t.session_id, agent_id=t.bot.agent_id, envelope_id="e", exc=ValueError("x")
    ),
}


@pytest.mark.parametrize("attempt", list(ATTEMPTS))
async def test_a_client_cannot_act_for_an_agent_it_is_not_bound_to(attempt: str) -> None:
    with trio.fail_after(5):
        async with two_parties() as t:
            hub = t.served.hub
            before = await hub.read_wal(t.session_id)
            with pytest.raises(AccessDeniedError, match="this connection"):
                await ATTEMPTS[attempt](t)
            # Nothing changed for the victim.
            assert await hub.read_wal(t.session_id) == before
            assert (await hub.get_resume(t.bot.agent_id)).summary == ""
            assert await hub.get_skill(t.bot.agent_id) is None
            assert (await hub.get_task(t.task_id)).state is TaskState.CREATED
            assert await hub.read_task_checkpoint(t.task_id) is None
            assert hub.find_agent_id("echo") == t.bot.agent_id
            assert (await hub.get_session(t.session_id)).state.value == "active"
            assert [t.task_id] == [task.task_id for task in await hub.list_tasks()]
            # The owner still acts for it.
            await t.owner.set_skill(t.bot.agent_id, "mine")
            assert await hub.get_skill(t.bot.agent_id) == "mine"


async def test_hand_crafted_frames_cannot_act_for_others() -> None:
    with trio.fail_after(5):
        async with two_parties() as t:
            async with raw(t.served.url) as ws:
                echo, sid = t.bot.agent_id, t.session_id
                forged = Envelope(
                    session_id=sid, sender_id=echo, event_type=EV_TEXT, event_data={"text": "x"}
                )
                await ws.send(SendFrame(envelope=forged, request_id="s1"))
                error = await ws.receive_kind(ErrorFrame)
                assert (error.code, error.request_id) == ("access_denied", "s1")
                await ws.send(
                    RequestFrame(
                        request_id="q1",
                        op="post_envelope",
                        params={"envelope": unstructure(forged)},
                    )
                )
                response = await ws.receive_kind(ResponseFrame)
                assert (response.request_id, response.ok, response.error_code) == (
                    "q1",
                    False,
                    "access_denied",
                )
                denied: list[tuple[str, dict[str, Any]]] = [
                    ("read_wal", {"session_id": sid}),
                    ("set_resume", {"agent_id": echo, "resume": {}}),
                    ("list_sessions", {"agent_id": echo}),
                    ("get_task", {"task_id": t.task_id}),
                ]
                for op, params in denied:
                    await ws.send(RequestFrame(request_id=op, op=op, params=params))
                    response = await ws.receive_kind(ResponseFrame)
                    assert (response.request_id, response.error_code) == (op, "access_denied")
                # A receipt for someone else's delivery moves nothing (a closing connection
                # flushes the cursors it moved).
                await ws.send(
                    ReceiptFrame(recipient_id=echo, session_id=sid, seq=99, envelope_id="e")
                )
            hub = t.served.hub
            await wait_until(lambda: hub.statistics().connections == 2)
            assert (await hub.core.store.load_cursors(echo)).get(sid, 0) < 99
            assert len(await hub.read_wal(sid)) == len(await t.owner.read_wal(sid))


async def test_discovery_is_public_and_unknown_ids_are_not_found() -> None:
    with trio.fail_after(5):
        async with two_parties() as t:
            hc = t.intruder
            assert (await hc.get_agent("echo")).agent_id == t.bot.agent_id
            assert (await hc.get_resume(t.bot.agent_id)).summary == ""
            assert (await hc.get_rule(t.bot.agent_id)).version >= 1
            with pytest.raises(NotFoundError, match="t-none"):
                await hc.get_task("t-none")
            with pytest.raises(NotFoundError):
                await hc.read_wal(uuid.uuid4().hex)
