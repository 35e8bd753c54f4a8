"""The hub's edge: every operation is one request record, implemented once, reached everywhere."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio

from troupe import (
    AccessDeniedError,
    DecodeError,
    HubClient,
    Passport,
    TaskMetadata,
    TaskSpec,
    TaskState,
)
from troupe.api import REQUESTS, ListSessions, Request, UpdateTask
from troupe.cluster import _peer
from troupe.hub import Hub
from troupe.hub._connection import Caller
from troupe.hub._hub import HANDLERS, handles

from ._wire import Scripted, converse, serving

PEER_OPS = {"peer_challenge", "peer_hello", "peer_forward", "peer_presence", "peer_hints"}


def test_every_request_has_one_handler_and_a_distinct_op() -> None:
    # 29 of troupe.api, and the 5 node-to-node ones of a cluster (known once it is loaded).
    assert len(REQUESTS) == 29 + len(PEER_OPS)
    assert {op for op, kind in REQUESTS.items() if kind.__module__ == _peer.__name__} == PEER_OPS
    assert set(HANDLERS) == set(REQUESTS.values())
    assert all(op == kind.op for op, kind in REQUESTS.items())


@pytest.mark.parametrize("kind", [REQUESTS[op] for op in sorted(REQUESTS)])
def test_declarations_name_real_fields(kind: type[Request[Any]]) -> None:
    fields = attrs.fields_dict(kind)  # type: ignore[arg-type]
    if kind.acting is not None:
        assert kind.acting.split(".")[0] in fields
    if kind.owner == "session":
        assert "session_id" in fields
    if kind.owner == "task":
        assert "task_id" in fields
    if kind.for_each_bound:
        assert kind.acting is not None
        assert "limit" in fields


def test_a_bad_value_from_python_is_the_callers_error_naming_the_field() -> None:
    with pytest.raises(DecodeError) as bad:
        ListSessions(limit=-1)
    assert bad.value.field == "limit"


async def test_an_operation_is_its_record_and_its_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What docs/ARCHITECTURE.md says: a new record and its handler are reachable in
    process, over the wire (authorised by what the record declares), nothing else."""

    @attrs.frozen(kw_only=True)
    class PingAgent(Request[bool]):
        op = "ping_agent"
        acting = "agent_id"
        agent_id: str

    monkeypatch.setitem(REQUESTS, "ping_agent", PingAgent)  # removed again after the test

    async def ping(hub: Hub, request: PingAgent, caller: Caller | None) -> bool:
        await trio.lowlevel.checkpoint()
        return hub.name_for(request.agent_id) != request.agent_id

    monkeypatch.setitem(HANDLERS, PingAgent, handles(PingAgent)(ping))
    with trio.fail_after(5):
        async with serving() as served, HubClient(served.link()) as hc:
            a, b, _ = await converse(hc, hc)
            assert await served.hub.call(PingAgent(agent_id=a.agent_id)) is True
            assert await hc.call(PingAgent(agent_id=a.agent_id)) is True
            async with HubClient(served.link()) as other:
                with pytest.raises(AccessDeniedError, match="not bound to agent"):
                    await other.call(PingAgent(agent_id=b.agent_id))
                with pytest.raises(DecodeError, match="agent_id"):
                    await other.call(PingAgent(agent_id=5))  # type: ignore[arg-type]


async def test_the_stored_owner_decides_over_the_wire() -> None:
    with trio.fail_after(5):
        async with serving() as served, HubClient(served.link()) as hc:
            a, _, _ = await converse(hc, hc)
            task = TaskMetadata(task_id="t1", owner_id=a.agent_id, spec=TaskSpec(title="t"))
            await served.hub.observe_task(task)
            async with HubClient(served.link()) as other:
                await other.register(Scripted([]), Passport(name="c"))
                with pytest.raises(AccessDeniedError, match="not bound to agent"):
                    await other.call(UpdateTask(task_id="t1", state=TaskState.RUNNING))
                with pytest.raises(AccessDeniedError):
                    await other.get_task("t1")
            await hc.call(UpdateTask(task_id="t1", state=TaskState.RUNNING))
            assert (await hc.get_task("t1")).state is TaskState.RUNNING
