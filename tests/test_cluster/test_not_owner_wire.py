"""``not_owner`` over a real WebSocket: the owner's node id and address reach the client.

Two nodes of one cluster on the test PostgreSQL, each served on 127.0.0.1 and advertising
the URL it bound. A client of the node that does not own a session posts to it: the answer
is ``not_owner`` (not a plain ``store_error``) carrying the shard, the owner and the owner's
address, raised client-side as ``NotOwner`` with those fields; the client goes to that
address and posts again with the same idempotency key, and the post lands once.
"""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

from troupe import EV_TEXT, Envelope, HubClient, NotOwner, Passport
from troupe.client._remote import error_from
from troupe.cluster import ClusterMember, shard_of
from troupe.hub import Hub
from troupe.model import ErrorFrame, SendFrame
from troupe.transport import WsLink, serve_ws

from .._postgres import new_schema
from ..test_transport._wire import QUIET, raw, wait_until
from ._processes import boot_node, open_acked
from .test_postgres_nodes import SHARDS, TIMING, held


@asynccontextmanager
async def served_node(
    dsn: str, schema: str, node_id: str, seed: int
) -> AsyncIterator[tuple[Hub, ClusterMember, str]]:
    """A node served on 127.0.0.1; it advertises the URL it bound (from its next tick)."""
    async with (
        boot_node(
            dsn, schema, shards=SHARDS, timing=TIMING, seed=seed, node_id=node_id, address=""
        ) as hub,
        trio.open_nursery() as nursery,
    ):
        member = hub.core.cluster
        assert isinstance(member, ClusterMember)
        server = await nursery.start(
            lambda task_status: serve_ws(
                hub,
                "127.0.0.1",
                0,
                ping_interval=QUIET,
                ping_timeout=QUIET,
                task_status=task_status,
            )
        )
        url = f"ws://127.0.0.1:{server.port}"
        member.config = attrs.evolve(member.config, address=url)
        yield hub, member, url
        nursery.cancel_scope.cancel()


def text(sid: str, sender: str, body: str, key: str) -> Envelope:
    return Envelope(
        session_id=sid,
        sender_id=sender,
        event_type=EV_TEXT,
        event_data={"text": body},
        idempotency_key=key,
    )


async def test_a_client_of_another_node_is_told_the_owner_and_its_address(
    pg_dsn: str, pg_schemas: list[str]
) -> None:
    schema = new_schema(pg_schemas)
    async with served_node(pg_dsn, schema, "a", 1) as (a, member_a, url_a):
        ann = (await a.register(Passport(name="ann", kind="human"))).agent_id
        bob = (await a.register(Passport(name="bob", kind="human"))).agent_id
        assert ann is not None
        assert bob is not None
        sid = await open_acked(a, ann, bob, "broadcast")
        async with served_node(pg_dsn, schema, "b", 2) as (b, member_b, url_b):
            with trio.fail_after(15):
                await wait_until(lambda: len(held(b)) == SHARDS // 2)
                # Each has read the other's advertised address (a tick after binding).
                await wait_until(
                    lambda: member_a.address_of("b") == url_b and member_b.address_of("a") == url_a
                )
            if shard_of(sid, SHARDS) in held(a):
                owner, owner_url, other_url = "a", url_a, url_b
            else:
                owner, owner_url, other_url = "b", url_b, url_a
            shard = shard_of(sid, SHARDS)

            with trio.fail_after(10):
                # The frame as it travels: code not_owner, the details beside the message.
                async with raw(other_url) as conn:
                    await conn.hello("ann")
                    await conn.send(SendFrame(envelope=text(sid, ann, "x", "k0"), request_id="1"))
                    refused = await conn.receive_kind(ErrorFrame)
                assert refused.code == "not_owner"
                assert refused.details["owner"] == owner
                assert refused.details["address"] == owner_url
                assert refused.details["shard"] == shard
                assert refused.details["epoch"] >= 1

                # A client raises NotOwner with those fields; at the address it lands once.
                async with HubClient(WsLink(other_url, ping_interval=QUIET)) as hc:
                    me = await hc.attach(None, "ann")
                    with pytest.raises(NotOwner) as caught:
                        await me.post_envelope(text(sid, ann, "hello", "k1"))
                assert (caught.value.owner, caught.value.address) == (owner, owner_url)
                assert caught.value.shard == shard
                assert caught.value.epoch >= 1
                assert caught.value.address is not None
                async with HubClient(WsLink(caught.value.address, ping_interval=QUIET)) as hc:
                    me = await hc.attach(None, "ann")
                    first = await me.post_envelope(text(sid, ann, "hello", "k1"))
                    again = await me.post_envelope(text(sid, ann, "hello", "k1"))
                assert first == again
            wal = await (a if owner == "a" else b).core.store.read(sid)
            assert [e.text for e in wal if e.event_type == EV_TEXT] == ["hello"]


@pytest.mark.parametrize(
    ("details", "fields"),
    [
        (
            {"shard": 3, "owner": "b", "epoch": 7, "address": "ws://b:1"},
            (3, "b", 7, "ws://b:1"),
        ),
        (None, (-1, None, 0, None)),
        ({"shard": "3", "owner": 5, "epoch": True, "address": ["x"]}, (-1, None, 0, None)),
    ],
)
def test_a_not_owner_answer_becomes_not_owner_keeping_only_well_typed_fields(
    details: dict[str, object] | None, fields: tuple[object, ...]
) -> None:
    exc = error_from("not_owner", "shard 3 is b's", details)
    assert isinstance(exc, NotOwner)
    assert (exc.shard, exc.owner, exc.epoch, exc.address) == fields
    assert str(exc) == "shard 3 is b's"
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.shard, copy.owner, copy.epoch, copy.address) == fields
