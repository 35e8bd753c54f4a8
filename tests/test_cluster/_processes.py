"""Real ``troupe serve --store`` processes on the test PostgreSQL, and what they left there.

A node is started with ``--port 0`` and found by the ``listening on`` line it prints; its
log goes to a file. The cluster's state is read by SQL (the coordinator's own queries).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from troupe import EV_TEXT, Envelope, Passport
from troupe.cluster import ClusterConfig, ClusterMember, PostgresCoordinator
from troupe.hub import Hub, open_hub
from troupe.model import EV_CHANNEL_INVITE_ACK
from troupe.store import PostgresStore
from troupe.testing import seeded_ids

from ..test_transport._wire import wait_until

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(rb"listening on ws://127\.0\.0\.1:(\d+)")


@attrs.define(eq=False)
class NodeProcess:
    """One ``troupe serve --store`` process."""

    node_id: str
    process: trio.Process
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def application_name(self) -> str:
        """What its PostgreSQL connections call themselves (``PostgresStore.connect``)."""
        return f"troupe pid {self.pid} on "

    async def stop(self) -> int:
        """SIGTERM (a clean drain), then its exit status."""
        self.process.send_signal(signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)
        return await self.process.wait()

    async def discard(self) -> None:
        """Make sure it is gone (a test's ``finally``)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        await self.process.wait()
        if self.process.stdout is not None:
            await self.process.stdout.aclose()


async def spawn_node(
    dsn: str, schema: str, node_id: str, log_dir: Path, *options: str
) -> NodeProcess:
    """Start a node and wait (20 s at most) until it listens."""
    log = log_dir / f"{node_id}.log"
    args = ["--store", dsn, "--schema", schema, "--node-id", node_id, *options]
    with log.open("ab") as err:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "troupe", "serve", *args, "--port", "0"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    listening = False
    try:
        assert process.stdout is not None
        printed = b""
        with trio.fail_after(20):
            while (found := LISTENING.search(printed)) is None:
                chunk = await process.stdout.receive_some()
                assert chunk, f"troupe serve exited: {log.read_text()}"
                printed += chunk
        listening = True
    finally:
        if not listening:  # whatever stopped the wait: no process is left behind
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    return NodeProcess(node_id, process, f"ws://127.0.0.1:{int(found.group(1))}", log)


async def owners(coordinator: PostgresCoordinator) -> dict[int, tuple[str, str]]:
    """``{shard: (owner, its advertised address)}`` for the shards whose lease runs now."""
    addresses = {n.node_id: n.address for n in await coordinator.nodes()}
    return {
        s.shard: (s.owner, addresses.get(s.owner, ""))
        for s in await coordinator.shard_map()
        if s.owner is not None and s.lease_left_s > 0
    }


@asynccontextmanager
async def boot_node(
    dsn: str,
    schema: str,
    *,
    shards: int,
    timing: tuple[float, float, float],
    seed: int,
    node_id: str = "boot",
    address: str | None = None,
) -> AsyncIterator[Hub]:
    """An in-process node of the cluster in ``schema`` (created if need be), on its own
    PostgresStore fenced by its coordinator; it leaves when the block ends (hands its shards
    over). The first one holds every shard: a test registers agents and opens sessions on
    it before the real nodes start. ``timing``: lease, tick, margin; ``address``: what it
    advertises (``ws://<node_id>`` by default)."""
    lease_s, tick_s, margin_s = timing
    async with PostgresCoordinator(dsn, schema=schema) as coordinator:
        config = ClusterConfig(
            node_id=node_id,
            address=f"ws://{node_id}" if address is None else address,
            shards=shards,
            lease_s=lease_s,
            tick_s=tick_s,
            margin_s=margin_s,
        )
        member = ClusterMember(config, coordinator)
        fence = coordinator.fence(node_id, shards, member.claimed)
        store = PostgresStore(dsn, schema=schema, exclusive=False, fence=fence)
        async with open_hub(
            store,
            cluster=member,
            ttl_sweep_interval=0,
            expectation_sweep_interval=0,
            new_id=seeded_ids(seed),
        ) as hub:
            yield hub


async def open_acked(hub: Hub, creator: str, invitee: str, manifest_type: str) -> str:
    """A session of ``manifest_type`` from ``creator`` to ``invitee``, whose invite is
    acked here (nobody is connected to ack it); its id once it is ACTIVE."""
    before = set(hub.core.directory.sessions)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: hub.create_session(
                creator_id=creator, manifest_type=manifest_type, participants=[invitee]
            )
        )
        with trio.fail_after(10):
            await wait_until(lambda: bool(set(hub.core.directory.sessions) - before))
        (sid,) = set(hub.core.directory.sessions) - before
        with trio.fail_after(10):
            await wait_until(lambda: invitee in hub.core.directory.get(sid).metadata.pending_acks)
        await hub.post(
            Envelope(session_id=sid, sender_id=invitee, event_type=EV_CHANNEL_INVITE_ACK)
        )
    return sid


async def ann_and_bob(
    dsn: str,
    schema: str,
    *,
    shards: int,
    timing: tuple[float, float, float],
    seed: int,
    manifest_type: str,
) -> tuple[str, str, str]:
    """Register ann and bob and open ann's ``manifest_type`` session with bob (his invite
    acked here) on a :func:`boot_node`; their ids and the session's."""
    async with boot_node(dsn, schema, shards=shards, timing=timing, seed=seed) as hub:
        ann = (await hub.register(Passport(name="ann", kind="human"))).agent_id
        bob = (await hub.register(Passport(name="bob", kind="human"))).agent_id
        assert ann is not None
        assert bob is not None
        sid = await open_acked(hub, ann, bob, manifest_type)
    return ann, bob, sid


def keyed_text(sid: str, sender: str, body: str) -> Envelope:
    """A text whose idempotency key is its body: posted again (a retry), it lands once."""
    return Envelope(
        session_id=sid,
        sender_id=sender,
        event_type=EV_TEXT,
        event_data={"text": body},
        idempotency_key=body,
    )
