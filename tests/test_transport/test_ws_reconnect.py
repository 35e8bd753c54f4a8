"""Reconnects: a connection cut mid-stream loses nothing, and nothing is handled twice."""

from __future__ import annotations

import gc
import ssl
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from troupe import (
    EV_TEXT,
    AgentClient,
    ConnectionLost,
    Envelope,
    HubClient,
    HumanClient,
    Passport,
    TaskState,
    Turn,
)
from troupe.transport import WsLink

from ._wire import QUIET, Proxy, Served, eventually, proxied, serving, wait_until


class Sink:
    """Records every turn it is given; now and then it takes its time."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.seqs: list[int] = []

    async def respond(self, turn: Turn) -> str | None:
        self.texts.append(turn.text)
        self.seqs.append(turn.envelope.seq)
        if len(self.texts) % 7 == 0:
            await trio.sleep(0.01)  # a handler still running when the connection drops
        return None


@attrs.define
class Pair:
    """A poster on a direct connection; a sink agent behind a proxy that tests can cut."""

    served: Served
    proxy: Proxy
    poster: HubClient
    talker: HumanClient
    remote: HubClient
    sink: Sink
    sink_client: AgentClient
    session_id: str
    delivered: list[tuple[str, int]]

    async def post(self, text: str) -> str:
        return await self.talker.send(self.session_id, text)

    def handled(self, count: int) -> Callable[[], bool]:
        """A condition: the sink has handled at least ``count`` turns."""
        return lambda: len(self.sink.texts) >= count

    async def all_acked(self) -> None:
        """Wait until the hub's cursor for the sink reached the session's last envelope.

        After that nothing can be delivered again (only unacked envelopes are replayed), so a
        duplicate would already have shown: no guessed sleep needed.
        """
        last = (await self.served.hub.read_wal(self.session_id))[-1].seq
        store, sink_id = self.served.hub.core.store, self.sink_client.agent_id

        async def acked_to_the_end() -> bool:
            return (await store.load_cursors(sink_id)).get(self.session_id) == last

        await eventually(acked_to_the_end)


@asynccontextmanager
async def pair(*, reconnect_within: float = 5.0) -> AsyncIterator[Pair]:
    async with serving() as served, proxied(served) as proxy:
        link = served.link(connect_timeout=0.2)
        link.url = proxy.url
        async with (
            HubClient(served.link()) as poster,
            HubClient(link, reconnect_within=reconnect_within, reconnect_seed=0) as remote,
        ):
            talker = await poster.register_human(Passport(name="talker"))
            sink = Sink()
            sink_client = await remote.register(sink, Passport(name="sink"))
            delivered: list[tuple[str, int]] = []

            async def observe(envelope: Envelope) -> None:
                delivered.append((envelope.session_id, envelope.seq))
                await trio.lowlevel.checkpoint()

            sink_client.on_envelope(observe)
            md = await poster.create_session(
                creator_id=talker.agent_id,
                manifest_type="conversation",
                participants=[sink_client.agent_id],
            )
            yield Pair(
                served,
                proxy,
                poster,
                talker,
                remote,
                sink,
                sink_client,
                md.session_id,
                delivered,
            )


def _assert_exactly_once(p: Pair, texts: list[str]) -> None:
    assert p.sink.texts == texts  # every one, once, in order
    assert p.sink.seqs == sorted(set(p.sink.seqs))
    assert len(p.delivered) == len(set(p.delivered))  # no delivery handled twice


@pytest.mark.slow
async def test_cutting_the_connection_mid_stream_loses_and_repeats_nothing() -> None:
    texts = [f"m{i}" for i in range(120)]
    with trio.fail_after(10):
        async with pair() as p:

            async def post_all() -> None:
                for text in texts:
                    await p.post(text)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(post_all)
                for mark in (20, 50, 90):  # cut three times while envelopes flow
                    await wait_until(p.handled(mark))
                    p.proxy.cut()
            await wait_until(lambda: len(p.sink.texts) >= len(texts))
            await p.all_acked()  # everything was acked: no late duplicate can come
            _assert_exactly_once(p, texts)
            assert p.proxy.accepted >= 4  # it did reconnect each time


async def test_what_was_posted_while_the_client_was_away_is_replayed_in_order() -> None:
    with trio.fail_after(10):
        async with pair() as p:
            await p.post("before")
            await wait_until(lambda: p.sink.texts == ["before"])
            p.proxy.freeze()  # reconnect attempts hang until the path is back
            p.proxy.cut()
            await wait_until(lambda: p.remote.endpoint_id is None)
            away = [f"away {i}" for i in range(20)]
            for text in away:
                await p.post(text)
            p.proxy.thaw()
            await wait_until(lambda: len(p.sink.texts) >= 21)
            await p.post("after")
            await wait_until(lambda: len(p.sink.texts) >= 22)
            await p.all_acked()
            _assert_exactly_once(p, ["before", *away, "after"])


@pytest.mark.parametrize("lost", ["the request", "the answer"])
async def test_a_post_in_flight_during_the_drop_lands_exactly_once(lost: str) -> None:
    with trio.fail_after(10):
        async with pair() as p:
            # The sink posts into the session over the proxied connection.
            first = await p.sink_client.send(p.session_id, "hello")
            answer: list[str] = []

            async def post() -> None:
                answer.append(await p.sink_client.send(p.session_id, "in flight"))

            hub = p.served.hub
            before = len(await hub.read_wal(p.session_id))
            if lost == "the request":
                p.proxy.freeze(to_client=False)  # it never reaches the hub
            else:
                p.proxy.freeze(to_hub=False)  # it is accepted, the accept never comes back
            async with trio.open_nursery() as nursery:
                nursery.start_soon(post)
                if lost == "the answer":
                    await wait_until(lambda: hub.core.counters.accepted > before)
                else:  # the request is written: the client waits for its answer
                    await wait_until(lambda: bool(p.remote._api._pending))  # type: ignore[attr-defined]
                p.proxy.cut()
                p.proxy.thaw()
            wal = await hub.read_wal(p.session_id)
            landed = [e for e in wal if e.text == "in flight"]
            assert [e.envelope_id for e in landed] == answer  # once, and the poster knows it
            assert [e.envelope_id for e in wal if e.text == "hello"] == [first]


async def test_every_identity_of_the_connection_is_bound_again() -> None:
    with trio.fail_after(10):
        async with pair() as p:
            person = await p.remote.register_human(Passport(name="person"))
            md = await p.poster.create_session(
                creator_id=p.talker.agent_id,
                manifest_type="conversation",
                participants=[person.agent_id],
            )
            p.proxy.cut()
            await p.talker.send(md.session_id, "are you there?")
            await p.post("and you?")
            got = await person.wait_for_channel_event(
                channel_id=md.session_id,
                predicate=lambda e: e.event_type == EV_TEXT,
                timeout=5,
            )
            assert got.text == "are you there?"
            await wait_until(lambda: p.sink.texts == ["and you?"])
            hub = p.served.hub
            bound = hub.core.bindings
            assert bound[person.agent_id] is bound[p.sink_client.agent_id]


async def test_a_client_that_cannot_come_back_gives_up_and_says_so() -> None:
    with trio.fail_after(10):
        async with pair(reconnect_within=0.3) as p:
            p.proxy.freeze()
            p.proxy.cut()
            await wait_until(lambda: p.sink_client.disconnected)
            with pytest.raises(ConnectionLost, match="could not reach"):
                await p.remote.get_agent("sink")
            # Every call: the client gave up, it was not closed.
            assert not p.remote.closed
            with pytest.raises(ConnectionLost, match="could not reach"):
                await p.remote.register(Sink(), Passport(name="late"))
            p.proxy.thaw()


async def test_dropped_connections_leave_no_socket_open() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with trio.fail_after(10):
            async with pair() as p:
                for round_ in range(3):
                    p.proxy.cut()
                    await p.post(f"r{round_}")
                    await wait_until(p.handled(round_ + 1))
                p.proxy.freeze()
                accepted = p.proxy.accepted
                p.proxy.cut()
                await wait_until(lambda: p.proxy.accepted > accepted)  # an attempt hangs now
            # The client closed with a connection attempt in progress.
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


class RefusingContext(ssl.SSLContext):
    """A TLS context that refuses to wrap anything (as one may for a host name it cannot
    carry)."""

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        raise ssl.SSLError("this context wraps nothing")


async def test_a_tls_setup_that_fails_leaves_no_socket_open() -> None:
    # The TCP stream was opened, then trio.SSLStream raised before the code that closes it.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with trio.fail_after(5):
            async with serving() as served:
                link = WsLink(
                    f"wss://127.0.0.1:{served.port}",
                    ssl_context=RefusingContext(ssl.PROTOCOL_TLS_CLIENT),
                    ping_interval=QUIET,
                )
                with pytest.raises(ConnectionLost, match="wraps nothing"):
                    async with HubClient(link):
                        pass
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


@pytest.mark.parametrize("task_id", [None, "t-1"], ids=["no-task-id", "task-id"])
async def test_an_observation_whose_answer_is_lost_counts_once(task_id: str | None) -> None:
    """Repeated after a reconnect, an observation without a task id (which the hub cannot
    tell from a new one) would count twice; with one, the hub drops the repeat."""
    with trio.fail_after(10):
        async with pair() as p:
            hub, owner = p.served.hub, p.sink_client.agent_id
            outcome: list[str] = []

            async def observe() -> None:
                try:
                    await p.remote.record_observation(
                        owner_id=owner,
                        capability="chat",
                        outcome=TaskState.COMPLETED,
                        task_id=task_id,
                    )
                except ConnectionLost:
                    outcome.append("lost")
                else:
                    outcome.append("ok")

            p.proxy.freeze(to_hub=False)  # the hub records it; the answer never comes back
            async with trio.open_nursery() as nursery:
                nursery.start_soon(observe)
                await wait_until(lambda: "chat" in hub.core.registry.agents[owner].resume.observed)
                p.proxy.cut()
                p.proxy.thaw()
            assert (await hub.get_resume(owner)).observed["chat"].n == 1
            assert outcome == (["lost"] if task_id is None else ["ok"])
