"""Passivation: a session idle for ``passivate_after`` seconds gives its memory back.

Rules:

- Idle means not used through the session supervisor (``SessionSupervisor.running``: posts,
  closes, invite rounds, causation look-ups) for ``passivate_after`` seconds of trio's
  clock. ``Directory.in_use`` keeps the running sessions least recently used first, so one
  sweeper task looks only at the front of it: no task or timer per session, and a
  passivated session costs no task.
- The sweeper *tells* each due session's actor to ``Passivate`` and moves on: no task, no
  wait per session (issue 15, item 6: a passivation cost ~65 us of a create when each had a
  task asking and waiting). It counts as a use, so the sweeper looks at a session that
  declines again ``passivate_after`` later.
- The actor declines while anything is queued for it. Otherwise it saves a snapshot (when
  snapshots are on and it is behind; not, for the sweeper, of a session never snapshotted
  whose WAL is shorter than ``SNAPSHOT_FROM``) and, in the step that agrees, marks its
  entry's gate ``passivating``: from then on callers queue at the gate instead of reaching
  its mailbox, so the stop leaves nothing behind. It stops itself right after (orderly:
  ``on_stop`` runs).
- Its supervisor hears of the stop (``Supervisor.on_exit``) before any other task runs,
  once the actor's id is free: the session supervisor drops the ref and dedup index and
  reopens the gate (``SessionSupervisor._exited``). What is left is the directory entry:
  metadata, the last published state (small, and what ``can_send`` and
  ``pending_turns_for`` read) and ``last_seq``. An actor that crashes while it stops is
  restarted (or given up on) as any crash, and its gate reopens all the same.
- So nothing has to wait for a passivation to end, and none is left half done when its
  caller is cancelled: the actor and its supervisor finish it.
- The next caller starts the session again (rehydration): snapshot + WAL tail, as after a
  crash but without the re-dispatch. Callers that arrive meanwhile queue at the gate in
  arrival order, and each puts its message into the new mailbox before the next one is let
  through: nothing is lost or reordered.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from .._errors import ActorDead, MailboxFull
from ._directory import SessionEntry
from ._session_parts import Passivate

if TYPE_CHECKING:
    from ._hub import Hub

log = logging.getLogger("troupe.hub.passivation")

#: How many due sessions the sweeper tells to passivate before it lets them run, and how
#: many of them may save their snapshots at once.
BATCH = 64
#: The sweeper passivates a session that was never snapshotted and whose WAL is shorter
#: than this without a snapshot: its next start refolds those few envelopes about as fast as
#: it would read a snapshot and its activity summary, and a session created and left idle
#: costs two writes fewer (issue 15, item 6). Other passivations (a cluster node's drain,
#: a reopened store's) snapshot whatever is behind.
SNAPSHOT_FROM = 16
#: How long an eviction may take to stop an actor (its ``shutdown_s`` is 5 s, then it is
#: cancelled).
STOP_S = 15.0


async def passivate(hub: Hub, entry: SessionEntry, *, snapshot_from: int = 1) -> bool:
    """Passivate one session now, if it agrees (``snapshot_from``: see ``Passivate``), and
    wait until it is (a reopened store's sessions, a cluster node's drain).

    Cancelled, it stops waiting; a passivation the actor agreed to ends all the same.

    Returns:
      Whether it was passivated.
    """
    directory = hub._sessions.directory
    ref = entry.ref
    if ref is None or not ref.alive or entry.metadata.state.terminal:
        directory.release(entry)  # it ended, or its supervisor gave up on it
        await trio.lowlevel.checkpoint()
        return False
    under_way = entry.passivating
    if under_way is not None:
        await under_way.wait()  # it agreed already (told by the sweeper)
        return entry.passivated
    request = Passivate(snapshot_from=snapshot_from)
    try:
        agreed = await ref.ask(request)
    except ActorDead:
        return False  # it crashed; its supervisor restarts it or gives up
    if not agreed:
        return False
    await request.stopped.wait()
    return entry.passivated  # (not if it crashed as it stopped: restarted, or given up on)


async def sweep(hub: Hub, after: float, *, task_status: trio.TaskStatus[None]) -> None:
    """Tell every session unused for ``after`` seconds to passivate, oldest first, forever.

    Up to ``BATCH`` at a time, then a checkpoint: the actors told run in trio's next batch,
    and the sweeper does not hold the loop however many sessions are due.
    """
    directory = hub._sessions.directory
    snapshots = trio.CapacityLimiter(BATCH)
    task_status.started()
    while True:
        if not directory.in_use:
            await directory.used.wait()
            continue
        oldest = next(iter(directory.in_use.values()))
        due = oldest.used_at + after
        now = trio.current_time()
        if now < due:
            await trio.sleep_until(due)
            continue
        batch: list[SessionEntry] = []
        for entry in directory.in_use.values():
            # The same test as for ``due`` above, so the oldest is always in the batch.
            if now < entry.used_at + after or len(batch) == BATCH:
                break
            batch.append(entry)
        for entry in batch:
            ref = entry.ref
            if ref is None or not ref.alive or entry.metadata.state.terminal:
                directory.release(entry)  # it ended, or its supervisor gave up on it
                continue
            try:
                ref.tell_nowait(Passivate(snapshot_from=SNAPSHOT_FROM, limiter=snapshots))
            except (ActorDead, MailboxFull):
                pass  # it is busy (a full mailbox), or dying: in a while, again
            directory.touch(entry, now)
        await trio.lowlevel.checkpoint()


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
