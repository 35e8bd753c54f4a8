"""Passivation: a session idle for ``passivate_after`` seconds gives its memory back.

Rules:

- Idle means not used through the session supervisor (``SessionSupervisor.running``: posts,
  closes, invite rounds, causation look-ups) for ``passivate_after`` seconds of trio's
  clock. ``Directory.in_use`` keeps the running sessions least recently used first, so one
  sweeper task looks only at the front of it: no task or timer per session, and a
  passivated session costs no task.
- The sweeper asks the session actor to ``Passivate``. The actor declines while anything is
  queued for it. Otherwise it saves a snapshot (when snapshots are on and it is behind;
  not, for the sweeper, of a session never snapshotted whose WAL is shorter than
  ``SNAPSHOT_FROM``) and,
  in the step that answers, marks its entry's gate ``passivating``: from then on callers
  queue at the gate instead of reaching its mailbox, so the stop leaves nothing behind.
- An actor that agrees stops itself right after its answer (orderly: ``on_stop`` runs), in
  that same step; the sweeper then makes sure it stopped (``terminate_child`` finds nothing
  left to stop) and drops its ref and dedup index.
  What is left is the directory entry: metadata, the last published state (small, and what
  ``can_send`` and ``pending_turns_for`` read) and ``last_seq``.
- Once the actor is asked, the passivation ends whatever its caller does (the sweeper's batch
  or the hub may be cancelled): it is shielded, within its own bounds. It waits ``ANSWER_S``
  for the answer, then withdraws the request (an actor that sees it withdrawn declines);
  a gate the actor marked is always reopened, after the stop (``STOP_S`` more at most).
- The next caller starts the session again (rehydration): snapshot + WAL tail, as after a
  crash but without the re-dispatch. Callers that arrive meanwhile queue at the gate in
  arrival order, and each puts its message into the new mailbox before the next one is let
  through: nothing is lost or reordered.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from .._errors import ActorDead
from ._directory import SessionEntry
from ._session_parts import Passivate

if TYPE_CHECKING:
    from ..actors import ActorRef
    from ._hub import Hub

log = logging.getLogger("troupe.hub.passivation")

#: How many due sessions the sweeper passivates side by side.
BATCH = 64
#: The sweeper passivates a session that was never snapshotted and whose WAL is shorter
#: than this without a snapshot: its next start refolds those few envelopes about as fast as
#: it would read a snapshot and its activity summary, and a session created and left idle
#: costs two writes fewer (issue 15, item 6). Other passivations (a cluster node's drain,
#: a reopened store's) snapshot whatever is behind.
SNAPSHOT_FROM = 16
#: How long a passivation waits for the actor's answer (its snapshot included), even once
#: its caller is cancelled; then it is called off.
ANSWER_S = 30.0
#: How long the stop of an actor that agreed may take on top (its ``shutdown_s`` is 5 s,
#: then it is cancelled): cut short, the gate reopens while the old actor may still run.
STOP_S = 15.0


async def passivate(
    hub: Hub, entry: SessionEntry, idle_for: float = 0.0, *, snapshot_from: int = 1
) -> bool:
    """Passivate one session if it agrees and was not used in the last ``idle_for`` seconds
    (``snapshot_from``: see ``Passivate``).

    Returns:
      Whether it was passivated.
    """
    directory = hub._sessions.directory
    ref = entry.ref
    if ref is None or not ref.alive or entry.metadata.state.terminal:
        directory.release(entry)  # it ended, or its supervisor gave up on it
        await trio.lowlevel.checkpoint()
        return False
    if trio.current_time() < entry.used_at + idle_for:
        await trio.lowlevel.checkpoint()  # used since the sweeper picked it
        return False
    # Once asked, the actor may mark the gate passivating: from then on this passivation
    # must end (stop the actor, reopen the gate) or every later caller waits forever.
    with trio.CancelScope(shield=True, deadline=trio.current_time() + ANSWER_S + STOP_S):
        return await _passivate(hub, entry, ref, snapshot_from)
    return True  # the stop outlasted STOP_S; the gate was reopened all the same


async def _passivate(
    hub: Hub, entry: SessionEntry, ref: ActorRef[Any, Any], snapshot_from: int
) -> bool:
    directory = hub._sessions.directory
    request = Passivate(snapshot_from=snapshot_from)
    with trio.move_on_after(ANSWER_S):
        try:
            await ref.ask(request)
        except ActorDead:
            pass  # it crashed; its supervisor restarts it or gives up
    request.withdrawn.set()  # an actor still at it now declines: nobody would stop it
    # The actor agreed iff it marked the gate with this request (in the step that answers):
    # then this passivation owns the gate, even if the answer itself never came.
    gate = entry.gate
    if gate is None or gate.passivating is not request.stopped:
        directory.touch(entry, trio.current_time())  # look again in a while
        return False
    try:
        await hub._sessions.stop(entry)
    finally:
        gate.passivating = None
        request.stopped.set()
        if not gate.users and entry.gate is gate:
            entry.gate = None
    return True


async def sweep(hub: Hub, after: float, *, task_status: trio.TaskStatus[None]) -> None:
    """Passivate every session unused for ``after`` seconds, oldest first, forever.

    Up to ``BATCH`` due sessions are passivated side by side: each passivation is a few
    hops between tasks, and trio runs the tasks that are ready together in one batch.
    """
    directory = hub._sessions.directory
    task_status.started()
    while True:
        if not directory.in_use:
            await directory.used.wait()
            continue
        oldest = next(iter(directory.in_use.values()))
        due = oldest.used_at + after
        if trio.current_time() < due:
            await trio.sleep_until(due)
            continue
        now = trio.current_time()
        batch: list[SessionEntry] = []
        for entry in directory.in_use.values():
            # The same test as for ``due`` above, so the oldest is always in the batch.
            if now < entry.used_at + after or len(batch) == BATCH:
                break
            batch.append(entry)
        async with trio.open_nursery() as nursery:
            for entry in batch:
                nursery.start_soon(
                    partial(passivate, hub, entry, after, snapshot_from=SNAPSHOT_FROM)
                )


async def evict(hub: Hub, entry: SessionEntry) -> None:
    """Stop a session's actor now, without its consent or a snapshot (a cluster node that
    lost the session's shard: another node may be writing it already).

    The entry is left as a passivated one: a later use starts the actor again (which a
    cluster node refuses unless it holds the shard again). A passivation under way is left
    to finish: it stops the actor itself. A session given up on here is not closed after
    all: its give-up is withdrawn (the next owner starts it afresh). See
    ``SessionSupervisor.evict``; the stop is shielded, within ``STOP_S``.
    """
    with trio.CancelScope(shield=True, deadline=trio.current_time() + STOP_S):
        await hub._sessions.evict(entry)
