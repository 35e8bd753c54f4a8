"""What a caller hands the hub in process is checked before any actor sees it (issue 13).

Wrong types and values JSON cannot carry are refused at once, naming the field; the WAL does
not move, no actor crashes, and the session goes on for everyone. Durations are bounded, so
no TTL can make the hub actor write a timestamp past year 9999.
"""

from __future__ import annotations

import math
import re
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from troupe import DecodeError, NetworkError, ProtocolError
from troupe.hub import Hub, open_hub
from troupe.model import (
    MAX_ENVELOPE_BYTES,
    MAX_JSON_DEPTH,
    LimitsBlock,
    Rule,
    SessionMetadata,
    SessionState,
    TaskMetadata,
    TaskSpec,
    TaskState,
    dumps,
)
from troupe.store import MemoryStore

from ..harness import Agent, HubPair, client_of, open_hub_pair, text_envelope


def nested(depth: int) -> dict[str, Any]:
    """``{"a": {"a": ... {"a": 1}}}``, ``depth`` objects deep."""
    data: dict[str, Any] = {"a": 1}
    for _ in range(depth - 1):
        data = {"a": data}
    return data


async def healthy(h: HubPair, md: SessionMetadata, alice: Agent, bob: Agent) -> None:
    """No actor crashed, the session is ACTIVE, and a text still reaches bob."""
    await h.settle()
    stats = h.hub.statistics()
    assert stats.session_restarts == 0
    assert stats.sessions_crashed == 0
    assert stats.poison_envelopes == 0
    assert (await h.hub.get_session(md.session_id)).state is SessionState.ACTIVE
    before = len(client_of(bob).notified(bob.id, md.session_id))
    await h.say(md, alice, "still here")
    await h.settle()
    got = client_of(bob).notified(bob.id, md.session_id)
    assert [e.text for e in got[before:]] == ["still here"]
    audit = await h.hub.read_audit()
    assert not [r for r in audit if r["kind"] in ("hub_child_crashed", "session_actor_crashed")]


WRONG_FIELDS: list[tuple[dict[str, Any], str]] = [
    # Crashed the session actor twice, "rejected as poison", no field named:
    ({"event_type": None}, "event_type"),
    ({"event_type": 5}, "event_type"),
    ({"depth": "x"}, "depth"),
    ({"idempotency_key": 5}, "idempotency_key"),
    # Stored silently:
    ({"event_data": "a str"}, "event_data"),
    ({"event_data": ["a", "list"]}, "event_data"),
    ({"causation_id": {"a": "dict"}}, "causation_id"),
    ({"priority": "urgent!!"}, "priority"),
    ({"depth": -1}, "depth"),
    ({"depth": True}, "depth"),
    ({"event_type": ""}, "event_type"),
    ({"trace_id": 5}, "trace_id"),
    ({"task_id": 1.5}, "task_id"),
    ({"audience": ("bob-id", 5)}, "audience.1"),
    ({"event_data": {"x": math.nan}}, "event_data.x"),
    ({"event_data": {"x": [1, math.inf]}}, "event_data.x.1"),
    ({"event_data": {"x": -math.inf}}, "event_data.x"),
    ({"event_data": {"x": {1, 2}}}, "event_data.x"),
    ({"event_data": {"x": {1: "int key"}}}, "event_data.x"),
    ({"event_data": {"x": 1 << 64}}, "event_data.x"),
    ({"event_data": {"x": "\ud800"}}, "event_data.x"),
    ({"event_data": {"x": trio}}, "event_data.x"),
    ({"event_data": nested(MAX_JSON_DEPTH + 1)}, "event_data" + ".a" * MAX_JSON_DEPTH),
    ({"event_type": "troupe.\ud800"}, "event_type"),
]


@pytest.mark.parametrize(
    ("change", "field"), WRONG_FIELDS, ids=[f for _, f in WRONG_FIELDS[:-1]] + ["surrogate"]
)
async def test_a_wrong_field_is_refused_at_once_naming_it(
    autojump_clock: trio.testing.MockClock, h: HubPair, change: dict[str, Any], field: str
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    if "audience" in change:
        change = {"audience": (bob.id, 5)}
    bad = attrs.evolve(text_envelope(md, alice), **change)
    before = await h.hub.read_wal(md.session_id)
    # Three in a row closed the session as crashed for everyone.
    for _ in range(3):
        with pytest.raises(DecodeError) as info:
            await h.hub.post_envelope(bad)
        assert info.value.field == field
        assert f"Envelope.{field}" in str(info.value)
    assert await h.hub.read_wal(md.session_id) == before
    assert h.hub.statistics().envelopes_rejected == 3
    await healthy(h, md, alice, bob)


async def test_data_as_deep_as_the_limit_is_stored_delivered_and_read_back(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    data = {"deep": nested(MAX_JSON_DEPTH - 1), "none": None, "pi": 3.14}
    await h.hub.post_envelope(attrs.evolve(text_envelope(md, alice), event_data=data))
    await h.settle()
    assert client_of(bob).notified(bob.id, md.session_id)[-1].event_data == data
    assert (await h.hub.read_wal(md.session_id))[-1].event_data == data


async def test_the_envelope_size_limit_is_max_envelope_bytes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(max_envelope_bytes=4096) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        env = text_envelope(md, alice, "")
        fits = attrs.evolve(env, event_data={"text": "x" * (4096 - len(dumps(env)))})
        assert len(dumps(fits)) == 4096
        await h.hub.post_envelope(fits)
        over = attrs.evolve(fits, event_data={"text": fits.event_data["text"] + "x"})
        with pytest.raises(ProtocolError, match=r"4097 bytes .* exceeds max_envelope_bytes"):
            await h.hub.post_envelope(over)
        await healthy(h, md, alice, bob)


async def test_max_envelope_bytes_can_only_be_lowered() -> None:
    with pytest.raises(ValueError, match="max_envelope_bytes"):
        async with open_hub(max_envelope_bytes=MAX_ENVELOPE_BYTES + 1):
            pass


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [10**12, "99999999999d", "-1", -5, "1e3", True, 1.5])
async def test_a_ttl_out_of_range_is_the_callers_error(
    autojump_clock: trio.testing.MockClock, h: HubPair, ttl: Any
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    with pytest.raises(ProtocolError, match="ttl"):
        await h.session("conversation", alice, bob, ttl=ttl)
    assert h.hub.statistics().sessions == 0
    md = await h.session("conversation", alice, bob, ttl="1h")
    await healthy(h, md, alice, bob)


async def test_thousands_of_bad_requests_do_not_stop_the_hub(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    # Eleven of these in ten seconds crashed the hub actor past the root supervisor's
    # intensity, and the hub stopped for everyone.
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    bad_calls: list[Any] = [
        lambda: h.hub.create_session(
            creator_id=alice.id, manifest_type="conversation", participants=[bob.id], ttl=10**12
        ),
        lambda: h.hub.create_session(
            creator_id=alice.id,
            manifest_type="conversation",
            participants=[bob.id],
            required_acks="1",  # type: ignore[arg-type]
        ),
        lambda: h.hub.create_session(
            creator_id=alice.id,
            manifest_type="conversation",
            participants=[bob.id],
            knobs={"x": math.nan},
        ),
        lambda: h.hub.post_envelope(
            attrs.evolve(text_envelope(md, alice), event_type=None)  # type: ignore[arg-type]
        ),
        lambda: h.hub.set_rule(
            alice.id, Rule(limits=LimitsBlock(session_ttl_default="99999999999d"))
        ),
        lambda: h.hub.observe_task(
            TaskMetadata(task_id="t", owner_id=alice.id, spec=TaskSpec(title="t"), state="x")  # type: ignore[arg-type]
        ),
        lambda: h.hub.read_wal(md.session_id, since="0"),  # type: ignore[arg-type]
    ]
    for i in range(3000):
        with pytest.raises(NetworkError):
            await bad_calls[i % len(bad_calls)]()
    other = await h.session("conversation", alice, bob, ttl="2h")
    await healthy(h, other, alice, bob)
    await healthy(h, md, alice, bob)


async def test_a_rule_with_an_overlong_ttl_default_is_refused(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    rule = Rule(limits=LimitsBlock(session_ttl_default="99999999999d"))
    with pytest.raises(DecodeError, match="session_ttl_default") as info:
        await h.agent("alice", rule=rule)
    assert info.value.field == "limits.session_ttl_default"
    alice, bob = await h.agent("alice"), await h.agent("bob")
    with pytest.raises(DecodeError, match="task_ttl_default"):
        await h.hub.set_rule(alice.id, Rule(limits=LimitsBlock(task_ttl_default="-5m")))
    with pytest.raises(DecodeError, match="delegation_depth"):
        await h.hub.set_rule(alice.id, Rule(limits=LimitsBlock(delegation_depth="x")))  # type: ignore[arg-type]
    md = await h.session("conversation", alice, bob)
    await healthy(h, md, alice, bob)


async def test_a_stored_rule_with_an_overlong_ttl_default_does_not_crash_the_hub(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A rule saved before the hub bounded durations.
    store = MemoryStore()
    async with open_hub_pair(store) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
    long = Rule(limits=LimitsBlock(session_ttl_default="99999999999d"))
    async with store:
        await store.save_rule(alice.id, long)
    async with open_hub_pair(store) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        for _ in range(20):
            with pytest.raises(ProtocolError, match="session_ttl_default"):
                await h.session("conversation", alice, bob)
        md = await h.session("conversation", alice, bob, ttl="1h")
        await healthy(h, md, alice, bob)


# -- other requests --------------------------------------------------------------------------


async def test_wrong_values_in_other_requests_are_refused_naming_the_field(
    autojump_clock: trio.testing.MockClock, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    hub: Hub = h.hub

    async def create(**kwargs: Any) -> None:
        await hub.create_session(
            creator_id=alice.id, manifest_type="conversation", participants=[bob.id], **kwargs
        )

    cases: list[tuple[Any, str]] = [
        (create(required_acks="1"), "CreateSession.required_acks"),
        (create(knobs={"x": math.inf}), "CreateSession.knobs.x"),
        (create(knobs=nested(MAX_JSON_DEPTH + 1)), "CreateSession.knobs.a"),
        (create(labels={"k": 5}), "CreateSession.labels.k"),
        (
            hub.create_session(
                creator_id=alice.id,
                manifest_type="conversation",
                participants=[5],  # type: ignore[list-item]
            ),
            "CreateSession.participants.0",
        ),
        (
            hub.observe_task(
                TaskMetadata(task_id="t", owner_id=alice.id, spec=TaskSpec(title="t"), state="x")  # type: ignore[arg-type]
            ),
            "ObserveTask",
        ),
        (
            hub.observe_task(
                TaskMetadata(
                    task_id="t",
                    owner_id=alice.id,
                    spec=TaskSpec(title="t", payload={"p": math.nan}),
                )
            ),
            "ObserveTask.task.spec.payload.p",
        ),
        (hub.close_session(md.session_id, reason=5), "reason"),  # type: ignore[arg-type]
        (hub.checkpoint_task("t", {"s": {1, 2}}), "CheckpointTask.state.s"),
    ]
    for call, where in cases:
        with pytest.raises(DecodeError, match=re.escape(where)):
            await call
    task = TaskMetadata(task_id="t", owner_id=alice.id, spec=TaskSpec(title="t"))
    await hub.observe_task(task)
    with pytest.raises(DecodeError, match=r"UpdateTask\.result"):
        await hub.update_task("t", result={1, 2})
    with pytest.raises(DecodeError, match=r"UpdateTask\.state"):
        await hub.update_task("t", state="nope")  # type: ignore[arg-type]
    await hub.update_task("t", state=TaskState.RUNNING, result={"ok": [1, 2]})
    assert (await hub.get_task("t")).state is TaskState.RUNNING
    await healthy(h, md, alice, bob)
