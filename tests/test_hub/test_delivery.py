"""Delivery: notifies in WAL order, access rules, receipts and cursors, replay, catch-up."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from troupe import IdentityInUse, NotFoundError, StoreError, Turn
from troupe.client._remote import error_from
from troupe.hub import ApiKeyAuth, Hub, NoAuth
from troupe.model import (
    EV_CHANNEL_INVITE,
    EV_SESSION_OPENED,
    AcceptFrame,
    AccessBlock,
    AuthBlock,
    Envelope,
    ErrorFrame,
    HelloFrame,
    InboxBlock,
    LimitsBlock,
    NotifyFrame,
    Passport,
    PingFrame,
    ReceiptFrame,
    Rule,
    SendFrame,
    WelcomeFrame,
    is_substantive,
)
from troupe.store import MemoryStore
from troupe.testing import FaultyStore

from ..harness import Agent, HubPair, client_of, counting_steps, open_hub_pair, text_envelope
from .conftest import Reopen


def visible(wal: list[Envelope], agent_id: str) -> list[int]:
    """The seqs of ``wal`` a dispatch would bring to ``agent_id`` (no inbound rules)."""
    return [
        e.seq
        for e in wal
        if not e.event_type.startswith("troupe.session.invite.")
        and (agent_id in e.audience if e.audience is not None else e.sender_id != agent_id)
    ]


async def test_recipients_are_notified_in_wal_order(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob, carol = [await h.agent(n) for n in ("alice", "bob", "carol")]
    md = await h.session("discussion", alice, bob, carol)
    sid = md.session_id

    async def speak(agent: Agent, rounds: int) -> None:
        for i in range(rounds):
            await hub.post_envelope(
                Envelope(
                    session_id=sid,
                    sender_id=agent.id,
                    event_type="app.note",
                    event_data={"n": i},
                    audience=None if i % 3 else [alice.id, bob.id, carol.id],
                )
            )

    async with trio.open_nursery() as nursery:
        for agent in (alice, bob, carol):
            nursery.start_soon(speak, agent, 10)
    await h.settle()
    wal = await hub.read_wal(sid)
    for agent in (alice, bob, carol):
        assert client_of(agent).seqs(agent.id, sid) == visible(wal, agent.id)
        assert client_of(agent).notified(agent.id, sid) == [
            e for e in wal if e.seq in visible(wal, agent.id)
        ]


async def test_audience_self_delivery_and_inbound_from(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    to_self = await h.say(md, alice, "note to self", audience=[alice.id])
    to_both = await h.say(md, alice, "both", audience=[alice.id, bob.id])
    plain = await h.say(md, alice, "plain")
    # bob stops accepting alice mid-session: her posts still land, silently undelivered.
    await hub.set_rule(bob.id, Rule(access=AccessBlock(inbound_from=["carol"])))
    muted = await h.say(md, alice, "muted")
    # ... and his own self-addressed post still reaches him.
    echo = await h.say(md, bob, "echo", audience=[bob.id])
    await h.settle()
    ids = [e.envelope_id for e in client_of(alice).notified(alice.id, md.session_id)]
    assert ids[-2:] == [to_self, to_both]
    bob_ids = [e.envelope_id for e in client_of(bob).notified(bob.id, md.session_id)]
    assert bob_ids[-3:] == [to_both, plain, echo]
    assert muted not in bob_ids
    assert muted in [e.envelope_id for e in await hub.read_wal(md.session_id)]


async def test_one_connection_many_identities_and_rebinding(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    shared = await h.connection("ep-shared")
    alice = await h.agent("alice", connect=False)
    bob = await h.agent("bob", connect=False)
    await shared.bind(alice.id)
    await shared.bind(bob.id)
    md = await h.session("conversation", alice, bob)
    await h.say(md, alice, "to bob")
    await h.settle()
    assert [
        (f.recipient_id, f.envelope.event_type) for f in shared.frames if isinstance(f, NotifyFrame)
    ] == [
        (bob.id, EV_CHANNEL_INVITE),
        (alice.id, EV_SESSION_OPENED),
        (bob.id, EV_SESSION_OPENED),
        (bob.id, "troupe.text"),
    ]
    # bob cannot be bound elsewhere while this connection is open (issue 13 item 8)...
    own = await h.connection("ep-bob")
    with pytest.raises(IdentityInUse, match=f"'bob' \\({bob.id}\\) is bound to another"):
        await own.bind(bob.id)
    await h.say(md, alice, "second")
    await h.settle()
    assert [e.text for e in shared.notified(bob.id) if e.text] == ["to bob", "second"]
    assert own.notified(bob.id) == []
    # ...unless the bind takes him over (what his key allows over a wire): the shared
    # connection is told why and closed.
    await own.bind(bob.id, takeover=True)
    await h.say(md, alice, "third")
    await h.settle()
    assert [e.text for e in own.notified(bob.id)] == ["third"]
    told = [f for f in shared.frames if isinstance(f, ErrorFrame)]
    assert [f.code for f in told] == ["identity_in_use"]
    assert "taken over" in told[0].message
    assert shared.endpoint.closed
    with pytest.raises(NotFoundError, match="endpoint not attached: 'ep-nope'"):
        await hub.bind_endpoint("ep-nope", alice.id)
    with pytest.raises(NotFoundError, match="agent not registered: 'ghost'"):
        await hub.bind_endpoint("ep-bob", "ghost")


async def test_by_default_acks_wait_a_twentieth_of_a_second_to_share_one_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The default cursor_flush_interval is 0.05 s: a burst of acks is one cursor write (on
    # SQLite FULL the agent path's commits fell from 0.92 to 0.19 per envelope).
    async with open_hub_pair() as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob, knobs={"max_turns": None})
        await trio.sleep(1)
        saved = await h.store.load_cursors(bob.id)
        start = trio.current_time()
        for i in range(5):
            await h.say(md, alice, str(i))
        await h.settle()
        assert trio.current_time() == start
        assert await h.store.load_cursors(bob.id) == saved  # not yet
        await trio.sleep(0.05)
        last = (await h.hub.read_wal(md.session_id))[-1].seq
        assert await h.store.load_cursors(bob.id) == {md.session_id: last}


async def test_receipts_advance_cursors_and_persist(
    autojump_clock: trio.testing.MockClock,
    reopen: Reopen,
) -> None:
    async with open_hub_pair(reopen(), cursor_flush_interval=0.5) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        await trio.sleep(1)
        saved = await h.store.load_cursors(bob.id)
        assert saved == {md.session_id: 3}  # the invite and the opening
        for i in range(5):
            await h.say(md, alice, str(i))
        await h.settle()
        last = (await h.hub.read_wal(md.session_id))[-1].seq
        # Acks wait up to cursor_flush_interval to share one write.
        assert await h.store.load_cursors(bob.id) == saved
        await trio.sleep(1)
        assert await h.store.load_cursors(bob.id) == {md.session_id: last}
        # An out-of-order (older) ack never rewinds the cursor; a nack never advances it.
        client_of(bob).send(
            ReceiptFrame(envelope_id="x", recipient_id=bob.id, session_id=md.session_id, seq=2)
        )
        client_of(bob).send(
            ReceiptFrame(
                envelope_id="y",
                recipient_id=bob.id,
                session_id=md.session_id,
                seq=last + 5,
                status="nack",
                reason="handler failed",
            )
        )
        await trio.sleep(1)
        assert await h.store.load_cursors(bob.id) == {md.session_id: last}
        # (a receipt for a seq this connection never sent is ignored, not even audited)
        assert [r for r in await h.hub.read_audit() if r["kind"] == "delivery_nacked"] == []
        # Closing the hub saves the acks still waiting for their flush.
        await h.say(md, alice, "last one")
        await h.settle()
    async with open_hub_pair(reopen()) as h:
        assert await h.store.load_cursors(bob.id) == {md.session_id: last + 1}


async def test_replay_sends_what_was_not_acked_in_order_and_once(
    autojump_clock: trio.testing.MockClock,
    reopen: Reopen,
) -> None:
    async with open_hub_pair(reopen()) as h:
        alice, bob, md = await h.alice_and_silent_bob(3, prefix="seen ")
        other = await h.session("conversation", bob, alice)
        sid = md.session_id
        # bob acks up to the second text, then goes away.
        seen = client_of(bob).notified(bob.id, sid)
        client_of(bob).ack(bob.id, seen[-2])
        await h.settle()
        client_of(bob).disconnect()
        await h.settle()
        assert bob.id not in h.hub.core.bindings
        for i in range(3):
            await h.say(md, alice, f"missed {i}")
        await h.say(other, alice, "elsewhere")
        await h.settle()
        back = await h.connection("ep-bob-2")
        await back.bind(bob.id, since={})
        await h.settle()
        wal = await h.hub.read_wal(sid)
        expected = [e for e in wal if e.seq in visible(wal, bob.id) and e.seq > seen[-2].seq]
        assert back.notified(bob.id, sid) == expected
        assert [e.text for e in expected] == ["seen 2", "missed 0", "missed 1", "missed 2"]
        assert [e.text for e in back.notified(bob.id, other.session_id) if e.text] == ["elsewhere"]
        # Live deliveries continue after the replay, without repeats.
        await h.say(md, alice, "live")
        await h.settle()
        texts = [e.text for e in back.notified(bob.id, sid)]
        assert texts[-2:] == ["missed 2", "live"]
        assert len(texts) == len(set(texts))
    # After a restart, replay reads the persisted cursor: everything acked is not sent again.
    async with open_hub_pair(reopen()) as h:
        again = await h.connection("ep-bob-3")
        await again.bind(bob.id, since={})
        await h.settle()
        assert again.notified(bob.id, sid) == []


async def test_replay_after_a_hub_restart_without_acks(
    autojump_clock: trio.testing.MockClock,
    reopen: Reopen,
) -> None:
    async with open_hub_pair(reopen()) as h:
        alice, bob, md = await h.alice_and_silent_bob(4)
    async with open_hub_pair(reopen()) as h:
        wal = await h.hub.read_wal(md.session_id)
        since_two = await h.connection("ep-a")
        await since_two.bind(bob.id, since={md.session_id: wal[-2].seq})
        none = await h.connection("ep-b")
        await none.bind(alice.id)
        await h.settle()
        assert since_two.notified(bob.id) == wal[-1:]
        assert none.notified(alice.id) == []


async def test_a_full_connection_mailbox_catches_up_from_the_wal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub_pair(client_mailbox=4) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        await h.settle()
        stall = trio.Event()
        client_of(bob).endpoint.stalled = stall
        for i in range(25):
            await h.say(md, alice, str(i))
        await h.settle()
        assert len(client_of(bob).notified(bob.id, md.session_id)) <= 2  # stuck
        client_of(bob).endpoint.stalled = None
        stall.set()
        await h.settle()
        texts = [e.text for e in client_of(bob).notified(bob.id, md.session_id) if e.text]
        assert texts == [str(i) for i in range(25)]
        wal = await h.hub.read_wal(md.session_id)
        assert client_of(bob).seqs(bob.id, md.session_id) == visible(wal, bob.id)
        await h.settle()
        assert h.hub.statistics().pending_inbox == 0


async def test_catch_ups_are_coalesced_per_connection_and_session(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15 item 4: a stalled connection got one CatchUp (one WAL read) per missed
    delivery; one queued catch-up now reads everything it missed."""
    async with open_hub_pair(client_mailbox=4) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        await h.settle()
        stall = trio.Event()
        client_of(bob).endpoint.stalled = stall
        for i in range(25):
            await h.say(md, alice, str(i))
        await h.settle()
        name = h.hub.core.bindings[bob.id].name
        catch_ups = h.hub.core.catch_ups
        assert (name, bob.id, md.session_id) in catch_ups
        assert len(catch_ups) == 1
        reads = 0
        read = h.store.read

        async def counted(*args: object, **kw: object) -> object:
            nonlocal reads
            reads += 1
            return await read(*args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(h.store, "read", counted)
        client_of(bob).endpoint.stalled = None
        stall.set()
        await h.settle()
        texts = [e.text for e in client_of(bob).notified(bob.id, md.session_id) if e.text]
        assert texts == [str(i) for i in range(25)]
        assert reads == 1
        assert len(h.hub.core.catch_ups) == 0


async def test_frames_from_a_client(autojump_clock: trio.testing.MockClock) -> None:
    auth = [NoAuth(), ApiKeyAuth({"bob": "k"})]
    async with open_hub_pair(auth=auth) as h:
        alice = await h.agent("alice")
        bob_passport = await h.hub.register(
            Passport(name="bob", auth=AuthBlock(scheme="api_key", claim={"token": "k"}))
        )
        assert bob_passport.agent_id is not None
        bob = Agent("bob", bob_passport.agent_id, None)
        conn = await h.connection("ep-wire")
        conn.send(
            HelloFrame(
                name="bob", auth_scheme="api_key", auth_claim={"token": "bad"}, request_id="r1"
            )
        )
        conn.send(HelloFrame(name="nobody", request_id="r2"))
        conn.send(PingFrame(nonce="n"))
        await h.settle()
        # Hellos run concurrently: the replies may come in any order.
        assert sorted(type(f).__name__ for f in conn.frames) == [
            "ErrorFrame",
            "ErrorFrame",
            "PongFrame",
        ]
        errors = {f.request_id: f for f in conn.frames if isinstance(f, ErrorFrame)}
        bad, unknown = errors["r1"], errors["r2"]
        assert (bad.code, bad.request_id) == ("auth_failed", "r1")
        assert "bad api key for agent 'bob'" in bad.message
        assert (unknown.code, unknown.request_id) == ("not_found", "r2")
        assert bob.id not in h.hub.core.bindings
        conn.send(
            HelloFrame(
                name="bob",
                auth_scheme="api_key",
                auth_claim={"token": "k"},
                request_id="r3",
                since={},
            )
        )
        await h.settle()
        welcome = conn.frames[-1]
        assert isinstance(welcome, WelcomeFrame)
        assert (welcome.agent_id, welcome.request_id, welcome.endpoint_id) == (
            bob.id,
            "r3",
            "ep-wire",
        )
        md = await h.session("conversation", alice, bob)
        conn.send(SendFrame(envelope=text_envelope(md, bob, "over the wire"), request_id="s1"))
        conn.send(SendFrame(envelope=text_envelope(md, alice, "not mine"), request_id="s2"))
        conn.send(SendFrame(envelope=text_envelope("nope", bob), request_id="s3"))
        await h.settle()
        replies = {f.request_id: f for f in conn.frames if isinstance(f, AcceptFrame | ErrorFrame)}
        accept = replies["s1"]
        assert isinstance(accept, AcceptFrame)
        assert (await h.hub.read_wal(md.session_id))[-1].envelope_id == accept.envelope_id
        denied = replies["s2"]
        assert isinstance(denied, ErrorFrame)
        assert denied.code == "access_denied"
        assert f"not bound to agent {alice.id!r}" in denied.message
        missing = replies["s3"]
        assert isinstance(missing, ErrorFrame)
        assert (missing.code, missing.message) == ("not_found", "session not found: 'nope'")
        conn.send(WelcomeFrame(endpoint_id="x", hub_time="t", request_id="w"))
        await h.settle()
        odd = conn.frames[-1]
        assert isinstance(odd, ErrorFrame)
        assert (odd.code, odd.request_id) == ("bad_frame", "w")


async def test_a_closed_connection_releases_its_bindings(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    client_of(bob).disconnect()
    await h.settle()
    assert client_of(bob).endpoint.closed
    assert bob.id not in hub.core.bindings
    assert hub.statistics().connections == 1
    await h.say(md, alice, "nobody home")
    await h.settle()
    assert [e.text for e in client_of(bob).notified(bob.id) if is_substantive(e.event_type)] == []


async def test_inbox_pressure_is_audited_once_per_upward_crossing(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice = await h.agent("alice")
    inbox = InboxBlock(max_pending=10, high_water=3)
    bob = await h.agent("bob", rule=Rule(limits=LimitsBlock(inbox=inbox)), receipts=False)
    md = await h.session("conversation", alice, bob)
    for i in range(5):
        await h.say(md, alice, str(i))
    await h.settle()

    async def pressure() -> list[int]:
        return [r["pending"] for r in await hub.read_audit() if r["kind"] == "inbox_pressure"]

    assert await pressure() == [3]
    client_of(bob).ack(bob.id, *client_of(bob).notified(bob.id, md.session_id)[-4:])
    await h.settle()
    assert hub.statistics().pending_inbox == 1
    for i in range(3):
        await h.say(md, alice, f"again {i}")
    await h.settle()
    assert await pressure() == [3, 3]
    record = next(r for r in await hub.read_audit() if r["kind"] == "inbox_pressure")
    assert (record["agent_id"], record["max_pending"]) == (bob.id, 10)


async def test_acks_sent_just_before_a_disconnect_are_kept(
    autojump_clock: trio.testing.MockClock, reopen: Reopen
) -> None:
    async with open_hub_pair(reopen()) as h:
        _, bob, to_bob = await h.alice_and_silent_bob(3)

        received = client_of(bob).notified(bob.id)
        client_of(bob).ack(bob.id, *received)
        client_of(bob).disconnect()  # in the same breath
        await h.settle()
        assert await h.store.load_cursors(bob.id) == {to_bob.session_id: received[-1].seq}


class CountingStore(MemoryStore):
    """A MemoryStore that counts WAL reads per session."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[str, int] = {}

    async def read(
        self, session_id: str, since: int = 0, until: int | None = None
    ) -> list[Envelope]:
        self.reads[session_id] = self.reads.get(session_id, 0) + 1
        return await super().read(session_id, since, until)


async def test_a_replay_does_not_read_sessions_that_ended_fully_acked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = CountingStore()
    async with open_hub_pair(store) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        done = await h.session("consulting", alice, bob)
        await h.say(done, alice, "q?")
        await h.say(done, bob, "a!")
        still = await h.session("conversation", alice, bob)
        await h.say(still, alice, "hello")
        await h.settle()  # bob's client acks everything it was sent
    async with open_hub_pair(store) as h:  # after a restart, the closed session is not loaded
        store.reads.clear()
        back = await h.connection("ep-bob-again")
        await back.bind(bob.id, since={})
        await h.settle()
        assert back.notified(bob.id) == []
        assert done.session_id not in store.reads


async def test_a_nack_is_audited_and_does_not_advance_the_cursor(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    alice, bob = await h.agent("alice"), await h.agent("bob", receipts=False)
    md = await h.session("conversation", alice, bob)
    await h.say(md, alice, "boom")
    await h.settle()
    (boom,) = [e for e in client_of(bob).notified(bob.id, md.session_id) if e.text == "boom"]
    nack = ReceiptFrame(
        envelope_id=boom.envelope_id,
        recipient_id=bob.id,
        session_id=md.session_id,
        seq=boom.seq,
        status="nack",
        reason="handler failed",
    )
    client_of(bob).send(nack)
    await h.settle()
    nacks = [r for r in await hub.read_audit() if r["kind"] == "delivery_nacked"]
    assert [(r["agent_id"], r["seq"], r["reason"]) for r in nacks] == [
        (bob.id, boom.seq, "handler failed")
    ]
    assert (await h.store.load_cursors(bob.id)).get(md.session_id, 0) < boom.seq


async def test_a_client_cannot_grow_the_hubs_memory_with_receipts_or_pings(
    autojump_clock: trio.testing.MockClock, hub: Hub, h: HubPair
) -> None:
    from troupe.hub._connection import MAX_CONTROL_QUEUED

    alice, bob = await h.agent("alice"), await h.agent("bob")
    md = await h.session("conversation", alice, bob)
    await h.say(md, alice, "hi")
    await h.settle()
    client = client_of(bob)
    client.endpoint.stalled = trio.Event()  # bob stops reading: the connection blocks
    await h.say(md, alice, "unread")  # the connection actor is stuck sending this
    await h.settle()
    conn = hub.core.connections[client.endpoint.endpoint_id].ref
    for n in range(10_000):
        client.send(
            ReceiptFrame(envelope_id="x", recipient_id=bob.id, session_id=md.session_id, seq=n)
        )
        client.send(PingFrame(nonce=str(n)))
    await h.settle()
    queued = conn.mailbox.statistics().queued
    assert queued <= MAX_CONTROL_QUEUED + 4  # pongs held back, receipts mostly dropped
    client.endpoint.stalled.set()


async def test_a_send_frame_the_store_fails_is_answered_with_store_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A raw SendFrame and an RPC post that hit a store fault travel under the same code, so
    # a client raises StoreError for both (and knows nothing was appended).
    store = FaultyStore(MemoryStore())
    async with open_hub_pair(store) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        md = await h.session("conversation", alice, bob)
        before = await h.hub.read_wal(md.session_id)
        store.fail_next("append", session_id=md.session_id)
        conn = client_of(bob)
        conn.send(SendFrame(envelope=text_envelope(md, bob, "lost?"), request_id="s1"))
        await h.settle()
        (reply,) = [f for f in conn.frames if isinstance(f, ErrorFrame)]
        assert (reply.code, reply.request_id) == ("store_error", "s1")
        assert "injected fault: append" in reply.message
        assert isinstance(error_from(reply.code, reply.message), StoreError)
        assert await h.hub.read_wal(md.session_id) == before


def _in_a_connection_actor(task: trio.lowlevel.Task) -> bool:
    frame = getattr(task.coro, "cr_frame", None)
    return frame is not None and type(frame.f_locals.get("actor")).__name__ == "ConnectionActor"


async def test_a_delivery_and_its_receipt_cost_an_idle_in_process_connection_no_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The delivery floor (issue 15, item 3). In process, while the connection actor is
    idle, the dispatch writes the NotifyFrame itself (``ConnectionActor.notify_now``), the
    client's router takes it in that same task, and the client's receipt is settled as it is
    sent (``ConnectionActor.receipt_now``): the connection's tasks take no step for it. Each
    Deliver, the write of its frame, and each Receipts the reader read and handed to the
    actor were steps of their own before (two per envelope; four, and a fifth, earlier).
    The cursors are still saved, together, when the flush interval is over."""
    async with open_hub_pair() as p:
        me = await p.human("me")
        scribe, _ = await p.scripted("scribe", lambda turn: "noted")
        channel = await me.open(type="conversation", target="scribe")
        await p.settle()
        with counting_steps(_in_a_connection_actor) as counter:
            for n in range(10):
                await me.send(channel.session_id, f"note {n}")
                await p.settle()
        # 20 envelopes delivered (each note and its answer), each acked by its recipient.
        assert counter.steps == 0
        sid = channel.session_id
        assert [e.text for e in await p.wal(sid) if e.text] == [
            text for n in range(10) for text in (f"note {n}", "noted")
        ]
        await trio.sleep(p.hub.core.config.cursor_flush_interval)
        await p.settle()
        last = (await p.hub.read_wal(sid))[-1].seq
        assert (await p.store.load_cursors(me.agent_id))[sid] == last
        assert (await p.store.load_cursors(scribe.agent_id))[sid] == last - 1


class GatedCursorStore(MemoryStore):
    """A MemoryStore whose saves of ``gated``'s cursors wait for ``gate`` while it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gated = ""
        self.gate: trio.Event | None = None
        self.saving = trio.Event()

    async def save_cursors(self, cursors: Sequence[tuple[str, str, int]]) -> None:
        if self.gate is not None and any(agent_id == self.gated for agent_id, _, _ in cursors):
            self.saving.set()
            await self.gate.wait()
        await super().save_cursors(cursors)


class HeldTurns:
    """An agent that answers "noted", and holds its turn on "two" until ``go`` is set."""

    def __init__(self) -> None:
        self.go = trio.Event()

    async def respond(self, turn: Turn) -> str:
        if turn.text == "two":
            await self.go.wait()
        else:
            await trio.lowlevel.checkpoint()
        return "noted"


async def test_an_ack_settled_while_its_cursor_is_being_saved_is_saved_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """In process a receipt is settled in the client's task (``receipt_now``), also while
    the connection actor waits on a cursor save: the flush must not then take the newer
    ack for saved (it saved the one it read before waiting)."""
    store = GatedCursorStore()
    async with open_hub_pair(store) as p:
        me = await p.human("me")
        held = HeldTurns()
        scribe = await p.hc.register(held, Passport(name="scribe"))
        channel = await me.open(type="conversation", target="scribe")
        sid = channel.session_id
        await me.send(sid, "one")
        await p.settle()  # "one" acked by the scribe: its cursor is dirty
        await me.send(sid, "two")  # delivered; the scribe's turn on it waits
        await p.settle()
        store.gated, store.gate = scribe.agent_id, trio.Event()
        await trio.sleep(p.hub.core.config.cursor_flush_interval)
        await store.saving.wait()  # the flush waits, saving the scribe's ack of "one"
        held.go.set()  # the scribe answers "two" and acks it meanwhile
        await p.settle()
        gate, store.gate = store.gate, None
        gate.set()
        await trio.sleep(p.hub.core.config.cursor_flush_interval)
        await p.settle()
        (two,) = [e for e in await p.hub.read_wal(sid) if e.text == "two"]
        assert (await store.load_cursors(scribe.agent_id))[sid] == two.seq
