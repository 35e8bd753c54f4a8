"""Each of HubCore's tables has one owner; the rest of the hub reads it through a view.

(docs/ARCHITECTURE.md lists the tables and their owners.)
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe.hub import Hub
from troupe.hub._connection import Unbind
from troupe.hub._hub_messages import GainSessions
from troupe.model import (
    Participant,
    ParticipantRole,
    SessionMetadata,
    SessionState,
    TaskMetadata,
    TaskSpec,
    TaskState,
)

from ..harness import HubPair, client_of


async def test_the_task_table_is_the_hub_actors_and_read_only_elsewhere(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice", connect=False)
    task = TaskMetadata(
        task_id="t1", owner_id=alice.id, spec=TaskSpec(title="t1"), state=TaskState.RUNNING
    )
    await hub.observe_task(task)
    tasks = hub.core.tasks
    assert tasks["t1"] == await hub.get_task("t1")
    with pytest.raises(TypeError):
        tasks["t2"] = task  # type: ignore[index]
    with pytest.raises(TypeError):
        del tasks["t1"]  # type: ignore[attr-defined]
    # Writes go through the hub actor, and the view shows them at once.
    await hub.update_task("t1", state=TaskState.COMPLETED)
    assert tasks["t1"].state is TaskState.COMPLETED
    assert (await hub.get_task("t1")).state is TaskState.COMPLETED


async def test_the_directory_is_read_only_outside_its_owners(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice")
    bob = await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    directory = hub.core.directory
    entry = directory.sessions[md.session_id]
    assert directory.get(md.session_id) is entry
    assert directory.open_count == len(directory) == 1
    assert [e.session_id for e in directory.of_agent(bob.id)] == [md.session_id]
    assert md.session_id in directory.in_use
    # No writes through the view: its tables are read-only mappings, its writers absent.
    with pytest.raises(TypeError):
        directory.sessions["s2"] = entry  # type: ignore[index]
    with pytest.raises(TypeError):
        del directory.in_use[md.session_id]  # type: ignore[attr-defined]
    for writer in ("add", "ended", "touch", "release"):
        assert not hasattr(directory, writer), writer
    # The owners' writes show in the view at once: the hub actor adds, the session's
    # actor accounts for its close.
    other = await h.session("conversation", bob, alice)
    assert directory.get(other.session_id).metadata.session_id == other.session_id
    await hub.close_session(other.session_id)
    assert directory.open_count == 1


async def test_gained_sessions_are_added_by_the_hub_actor_once(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    """What a cluster member gains is added by the hub actor (``GainSessions``), which owns
    the directory's entries: each once, however often it is told."""
    alice = await h.agent("alice", connect=False)
    md = SessionMetadata(
        session_id="elsewhere",
        manifest_type="conversation",
        manifest_version=1,
        creator_id=alice.id,
        participants=(Participant(agent_id=alice.id, role=ParticipantRole.INITIATOR, order=0),),
        state=SessionState.ACTIVE,
        created_at="2026-01-01T00:00:00Z",
    )
    await h.store.save_session(md)
    assert hub.core.hub_ref is not None
    assert await hub.core.hub_ref.ask(GainSessions((md,))) == 1
    entry = hub.core.directory.get("elsewhere")
    assert entry.stype is hub.core.session_type("conversation", 1)
    assert entry.ref is None  # it starts from the store on first use
    assert await hub.core.hub_ref.ask(GainSessions((md,))) == 0
    assert hub.core.directory.get("elsewhere") is entry
    assert hub.core.directory.open_count == 1
    assert [m.session_id for m in await hub.list_sessions(agent_id=alice.id)] == ["elsewhere"]


async def test_unregistering_asks_the_connection_holding_the_identity_to_unbind_it(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice")
    bob = await h.agent("bob")
    bindings = hub.core.bindings
    bobs = bindings[bob.id]
    # An Unbind reaches only the connection holding the identity: another one leaves it be.
    bindings[alice.id].mailbox.send_system(Unbind(bob.id))
    await h.settle()
    assert bindings[bob.id] is bobs
    await hub.unregister(bob.id)
    await h.settle()
    assert bob.id not in bindings
    assert alice.id in bindings
    assert hub.core.connections[client_of(bob).endpoint.endpoint_id].ref is bobs


async def test_the_bindings_and_connections_are_the_connections_and_read_only_elsewhere(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice")
    bob = await h.agent("bob")
    bindings = hub.core.bindings
    alices = bindings[alice.id]
    with pytest.raises(TypeError):
        bindings[bob.id] = alices  # type: ignore[index]
    with pytest.raises(TypeError):
        del bindings[bob.id]  # type: ignore[attr-defined]
    connections = hub.core.connections
    conn = connections[client_of(alice).endpoint.endpoint_id]
    with pytest.raises(TypeError):
        connections["elsewhere"] = conn  # type: ignore[index]
    # The writable tables are the connections': one releases only what it holds.
    assert not conn.routes.release(bob.id, conn.ref)
    assert bob.id in bindings
    assert conn.routes.release(alice.id, conn.ref)
    assert alice.id not in bindings


async def test_the_session_supervisor_ends_sessions_past_their_ttl(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    """The TTL sweep's session ends are the session supervisor's (``expire_due``), as is
    opening a session (``open``, which ``h.session`` went through); the handle asks it."""
    alice = await h.agent("alice")
    bob = await h.agent("bob")
    md = await h.session("conversation", alice, bob, ttl=60)
    sessions = hub._sessions
    now = hub.core.now()
    await sessions.expire_due(now)
    assert hub.core.directory.get(md.session_id).metadata.state is SessionState.ACTIVE
    await sessions.expire_due(now + 61)
    ended = hub.core.directory.get(md.session_id).metadata
    assert ended.state is SessionState.EXPIRED
    assert ended.close_reason == "ttl_expired"
    assert hub.core.directory.open_count == 0
