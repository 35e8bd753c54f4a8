"""Each of HubCore's tables has one owner; the rest of the hub reads it through a view.

(docs/ARCHITECTURE.md lists the tables and their owners.)
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from troupe.hub import Hub
from troupe.hub._connection import Unbind
from troupe.model import TaskMetadata, TaskSpec, TaskState

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
