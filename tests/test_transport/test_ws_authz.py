"""Issue 13 over the wire: what is stored decides (task owners, session participants), not
what a caller claims; and auth errors do not tell which names have keys."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from troupe import (
    AccessDeniedError,
    AgentClient,
    ApiKeyAuth,
    AuthError,
    HubClient,
    HumanClient,
    NoAuth,
    Passport,
    TaskMetadata,
    TaskSpec,
    TaskState,
)
from troupe.model import RequestFrame, ResponseFrame

from ._wire import Echo, Served, raw, serving


@attrs.define
class Scene:
    """bob (an agent) and his friend in a conversation, bob's running task; eve, on her own
    connection with only her own identity, outside it all."""

    served: Served
    eves: HubClient
    bob: AgentClient
    eve: HumanClient
    session_id: str
    #: Set when a hand-made connection took eve's identity from her own client.
    eve_moved: bool = False


@asynccontextmanager
async def scene() -> AsyncIterator[Scene]:
    async with (
        serving(auth=[NoAuth()]) as served,
        HubClient(served.link()) as bobs,
        HubClient(served.link()) as eves,
    ):
        bob = await bobs.register(Echo(), Passport(name="bob"))
        friend = await bobs.register_human(Passport(name="friend"))
        eve = await eves.register_human(Passport(name="eve"))
        md = await bobs.create_session(
            creator_id=friend.agent_id, manifest_type="conversation", participants=[bob.agent_id]
        )
        await bobs.observe_task(
            TaskMetadata(
                task_id="t-bob",
                owner_id=bob.agent_id,
                spec=TaskSpec(title="x", capability="echo"),
                state=TaskState.RUNNING,
                session_id=md.session_id,
            )
        )
        yield Scene(served, eves, bob, eve, md.session_id)


def _raw_op(op: str, **params: Any) -> Callable[[Scene], Awaitable[Any]]:
    """An op the client API does not expose with these parameters, sent by hand."""

    async def send(s: Scene) -> Any:
        await s.eves.close()  # eve's own connection holds her identity (issue 13 item 8)
        s.eve_moved = True
        async with raw(s.served.url) as ws:
            await ws.hello("eve")
            filled = {k: (v(s) if callable(v) else v) for k, v in params.items()}
            await ws.send(RequestFrame(request_id="r", op=op, params=filled))
            response: ResponseFrame = await ws.receive_kind(ResponseFrame)
        if response.error_code == "access_denied":
            raise AccessDeniedError(response.error_message)
        return response

    return send


#: What eve, with only her own identity, tries against bob's task and session.
ATTEMPTS: dict[str, Callable[[Scene], Awaitable[Any]]] = {
    "take over bob's task by naming herself owner": lambda s: s.eves.observe_task(
        TaskMetadata(
            task_id="t-bob",
            owner_id=s.eve.agent_id,
            spec=TaskSpec(title="x", capability="echo"),
            state=TaskState.FAILED,
            progress={"eve": "was here"},
        )
    ),
    "attach her task to bob's session": lambda s: s.eves.observe_task(
        TaskMetadata(
            task_id="t-eve",
            owner_id=s.eve.agent_id,
            spec=TaskSpec(title="x"),
            session_id=s.session_id,
        )
    ),
    "record an observation on bob's task": lambda s: s.eves.record_observation(
        owner_id=s.eve.agent_id, capability="echo", outcome=TaskState.FAILED, task_id="t-bob"
    ),
    "probe a turn in bob's session": lambda s: s.eves.acan_send(s.session_id, s.eve.agent_id),
    "look up a causation in bob's session": lambda s: s.eves.find_envelope_by_causation(
        s.session_id, sender_id=s.eve.agent_id, causation_id="x"
    ),
    "report a turn failure in bob's session": lambda s: s.eves.report_turn_failure(
        session_id=s.session_id, agent_id=s.eve.agent_id, envelope_id="e", exc=ValueError("x")
    ),
    "ask for her turns in bob's session": _raw_op(
        "pending_turns_for",
        agent_id=lambda s: s.eve.agent_id,
        session_id=lambda s: s.session_id,
    ),
}


@pytest.mark.parametrize("attempt", list(ATTEMPTS))
async def test_what_is_stored_decides_not_what_is_claimed(attempt: str) -> None:
    with trio.fail_after(5):
        async with scene() as s:
            hub = s.served.hub
            audit_before = await hub.read_audit()
            wal_before = await hub.read_wal(s.session_id)
            with pytest.raises(AccessDeniedError):
                await ATTEMPTS[attempt](s)
            task = await hub.get_task("t-bob")
            assert (task.owner_id, task.state, task.progress) == (
                s.bob.agent_id,
                TaskState.RUNNING,
                {},
            )
            assert [t.task_id for t in await hub.list_tasks()] == ["t-bob"]
            assert (await hub.get_resume(s.bob.agent_id)).observed == {}
            assert await hub.read_audit() == audit_before  # no turn_failed, no task_*
            assert await hub.read_wal(s.session_id) == wal_before
            # The connection goes on serving eve.
            if not s.eve_moved:
                assert (await s.eves.get_agent("bob")).agent_id == s.bob.agent_id


async def test_auth_errors_do_not_tell_which_names_have_keys() -> None:
    with trio.fail_after(5):
        async with serving(auth=[ApiKeyAuth({"bob": "k-bob"})]) as served:
            answers = []
            for name, keys in (("bob", {"bob": "wrong"}), ("nobody", {"nobody": "wrong"})):
                async with HubClient(served.link(auth=keys)) as hc:
                    with pytest.raises(AuthError) as caught:
                        await hc.register(Echo(), Passport(name=name))
                    answers.append(str(caught.value).replace(repr(name), "NAME"))
            assert answers[0] == answers[1]
            assert re.search(r"bad api key for agent NAME", answers[0])
