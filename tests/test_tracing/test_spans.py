"""Tracing: span trees with the SDK's in-memory exporter, in process and over a WebSocket."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from trio.testing import MockClock

import troupe.tracing
from troupe import EV_TEXT, Envelope, HubClient, Passport, ProtocolError, Turn

from ..harness import WAIT, open_hub_pair
from ..test_transport._wire import Echo, serving, wait_until


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    troupe.tracing.enable(tracer_provider=provider)
    try:
        yield exporter
    finally:
        troupe.tracing.disable()
        provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def one(exporter: InMemorySpanExporter, name: str, **attributes: object) -> ReadableSpan:
    found = [
        s
        for s in named(exporter, name)
        if all((s.attributes or {}).get(k) == v for k, v in attributes.items())
    ]
    assert len(found) == 1, (name, attributes, [s.name for s in exporter.get_finished_spans()])
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    found: int = span.context.span_id
    return found


def traceparent_of(span: ReadableSpan) -> str:
    assert span.context is not None
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def test_a_post_and_the_turn_it_starts_form_one_tree(
    spans: InMemorySpanExporter, autojump_clock: MockClock
) -> None:
    async with open_hub_pair() as p:
        bot, _ = await p.scripted("bot")
        al = await p.human("al")
        ch = await al.open(type="conversation", target="bot")
        question = await al.send(ch.session_id, "hi")
        with trio.fail_after(WAIT):
            await al.wait_for_channel_event(
                channel_id=ch.session_id, predicate=lambda e: e.sender_id == bot.agent_id
            )
        await p.settle()
        asked = one(spans, "troupe.post troupe.text", **{"troupe.sender_id": al.agent_id})
        assert asked.kind is SpanKind.PRODUCER
        assert (asked.attributes or {})["troupe.envelope_id"] == question
        hub_post = one(spans, "troupe.hub.post troupe.text", **{"troupe.sender_id": al.agent_id})
        turn = one(spans, "troupe.turn", **{"troupe.agent_id": bot.agent_id})
        assert parent_of(hub_post) == span_id(asked)
        assert parent_of(turn) == span_id(asked)
        # The reply is posted inside the turn, and so on down the chain.
        answer = one(spans, "troupe.post troupe.text", **{"troupe.sender_id": bot.agent_id})
        assert parent_of(answer) == span_id(turn)
        answer_hub = one(spans, "troupe.hub.post troupe.text", **{"troupe.sender_id": bot.agent_id})
        assert parent_of(answer_hub) == span_id(answer)
        # The context is stored with the envelope.
        wal = await p.wal(ch.session_id)
        stored = next(e for e in wal if e.envelope_id == question)
        assert stored.trace_id == traceparent_of(asked)


async def test_the_hub_starts_a_trace_for_an_envelope_without_one(
    spans: InMemorySpanExporter, autojump_clock: MockClock
) -> None:
    async with open_hub_pair() as p:
        al, bea = await p.human("al"), await p.human("bea")
        ch = await al.open(type="conversation", target="bea")
        await p.settle()
        direct = Envelope(
            session_id=ch.session_id,
            sender_id=al.agent_id,
            event_type=EV_TEXT,
            event_data={"text": "straight to the hub"},
        )
        envelope_id = await p.hub.post_envelope(direct)
        assert direct.trace_id is None  # the caller's object is untouched
        hub_post = one(spans, "troupe.hub.post troupe.text", **{"troupe.envelope_id": envelope_id})
        assert hub_post.parent is None
        stored = next(e for e in await p.wal(ch.session_id) if e.envelope_id == envelope_id)
        assert stored.trace_id == traceparent_of(hub_post)
        # Junk in trace_id is kept as sent, and the hub's span is a root.
        junk = await p.hub.post_envelope(
            Envelope(
                session_id=ch.session_id,
                sender_id=al.agent_id,
                event_type=EV_TEXT,
                event_data={"text": "junk"},
                trace_id="not a traceparent",
            )
        )
        assert (
            one(spans, "troupe.hub.post troupe.text", **{"troupe.envelope_id": junk}).parent is None
        )
        assert bea.agent_id


async def test_a_refused_post_ends_its_spans_with_an_error(
    spans: InMemorySpanExporter, autojump_clock: MockClock
) -> None:
    async with open_hub_pair() as p:
        al, bea = await p.human("al"), await p.human("bea")
        ch = await al.open(type="consulting", target="bea")
        await p.settle()
        await al.close_channel(ch.session_id)
        with pytest.raises(ProtocolError):
            await al.send(ch.session_id, "too late")
        post = one(spans, "troupe.post troupe.text")
        assert post.status.status_code is StatusCode.ERROR
        assert bea.agent_id


async def test_a_session_span_lasts_from_creation_to_close(
    spans: InMemorySpanExporter, autojump_clock: MockClock
) -> None:
    async with open_hub_pair() as p:
        al = await p.human("al")
        await p.human("bea")
        closed = await al.open(type="conversation", target="bea")
        left_open = await al.open(type="conversation", target="bea")
        await al.close_channel(closed.session_id, "done")
        span = one(spans, "troupe.session conversation", **{"troupe.session_id": closed.session_id})
        assert (span.attributes or {})["troupe.session.close_reason"] == "done"
        assert (span.attributes or {})["troupe.session.state"] == "closed"
        assert not named(spans, "troupe.session conversation")[1:]
    # The hub stopped with the other one open: its span ends, marked so.
    span = one(spans, "troupe.session conversation", **{"troupe.session_id": left_open.session_id})
    assert (span.attributes or {})["troupe.session.open_at_shutdown"] is True


class Streamer:
    async def respond(self, turn: Turn) -> str:
        await turn.stream("a")
        return "a"


async def test_spans_connect_across_a_websocket(spans: InMemorySpanExporter) -> None:
    with trio.fail_after(10):
        async with (
            serving() as served,
            HubClient(served.link()) as agents,
            HubClient(served.link()) as people,
        ):
            echo = Echo()
            bot = await agents.register(echo, Passport(name="echo"))
            me = await people.register_human(Passport(name="me"))
            ch = await me.open(type="consulting", target="echo")
            spans.clear()
            await me.send(ch.session_id, "over the wire")
            await me.wait_for_channel_event(
                channel_id=ch.session_id,
                predicate=lambda e: e.event_type == EV_TEXT and e.sender_id == bot.agent_id,
                timeout=5,
            )
            await wait_until(
                lambda: (
                    len(named(spans, "troupe.hub.post troupe.text")) == 2
                    and len(named(spans, "troupe.turn")) == 1
                )
            )
        poster = one(spans, "troupe.post troupe.text", **{"troupe.sender_id": me.agent_id})
        hub_post = one(spans, "troupe.hub.post troupe.text", **{"troupe.sender_id": me.agent_id})
        turn = one(spans, "troupe.turn", **{"troupe.agent_id": bot.agent_id})
        # The poster's span is the parent of the hub's post span and of the recipient's turn,
        # each reached only through what crossed the wire (the envelope's trace_id).
        assert parent_of(hub_post) == span_id(poster)
        assert parent_of(turn) == span_id(poster)
        assert poster.context is not None
        assert turn.context is not None
        assert poster.context.trace_id == turn.context.trace_id
        # The RPC that carried the post: the client's span is the parent of the hub's.
        client_rpcs = [
            s for s in named(spans, "troupe.rpc post_envelope") if s.kind is SpanKind.CLIENT
        ]
        server_rpcs = [
            s for s in named(spans, "troupe.rpc post_envelope") if s.kind is SpanKind.SERVER
        ]
        asked = next(s for s in client_rpcs if parent_of(s) == span_id(poster))
        assert [parent_of(s) for s in server_rpcs if parent_of(s) == span_id(asked)]


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_nothing_imports_opentelemetry_unless_tracing_is_enabled() -> None:
    out = _run(
        """
        import sys
        import trio
        import troupe, troupe.tracing
        from troupe import EV_TEXT, HubClient, LocalLink, Passport, open_hub

        class Bot:
            async def respond(self, turn):
                await turn.stream("streamed ")
                return "answered"

        async def main():
            async with open_hub() as hub:
                hc = HubClient(LocalLink(hub))
                await hc.register(Bot(), Passport(name="bot"))
                me = await hc.register_human(Passport(name="me", kind="human"))
                ch = await me.open(type="consulting", target="bot")
                await me.send(ch.session_id, "hi")
                reply = await me.wait_for_channel_event(
                    channel_id=ch.session_id,
                    predicate=lambda e: e.event_type == EV_TEXT and e.text == "answered",
                    timeout=5,
                )
                await hc.shutdown()
            print("turn:", reply.text)
            print("loaded:", sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        trio.run(main)
        """
    )
    assert "turn: answered" in out
    assert "loaded: []" in out


def test_enable_without_opentelemetry_says_what_to_install() -> None:
    out = _run(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if it were not installed
        import troupe.tracing
        try:
            troupe.tracing.enable()
        except ImportError as exc:
            print("refused:", exc)
        print("enabled:", troupe.tracing.enabled())
        """
    )
    assert "refused: troupe.tracing needs OpenTelemetry: pip install 'trio-troupe[otel]'" in out
    assert "enabled: False" in out


def test_enable_and_disable() -> None:
    assert not troupe.tracing.enabled()
    troupe.tracing.enable(tracer_provider=TracerProvider())
    try:
        assert troupe.tracing.enabled()
    finally:
        troupe.tracing.disable()
    assert not troupe.tracing.enabled()
