"""The spans (see ``troupe.tracing``); the only module that imports OpenTelemetry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import attrs
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .._version import __version__
from ..model import Envelope, RequestFrame, ResponseFrame, SessionMetadata

if TYPE_CHECKING:
    from ..api import Accepted

_PROPAGATOR = TraceContextTextMapPropagator()


def _envelope_attributes(envelope: Envelope) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "troupe.session_id": envelope.session_id,
        "troupe.sender_id": envelope.sender_id,
        "troupe.event_type": envelope.event_type,
    }
    if envelope.causation_id is not None:
        attributes["troupe.causation_id"] = envelope.causation_id
    if envelope.audience is not None:
        attributes["troupe.audience"] = list(envelope.audience)
    return attributes


@attrs.define
class HubPost:
    """The hub's post span, and the envelope to post (with a ``trace_id`` for its readers)."""

    envelope: Envelope
    span: Span

    def done(self, result: Any) -> Any:
        """Note the outcome (an ``Accepted`` or a ``Refused``) on the span; return it."""
        error = getattr(result, "error", None)
        if isinstance(error, Exception):
            self.span.set_status(Status(StatusCode.ERROR, str(error)))
            self.span.set_attribute("troupe.refused", type(error).__name__)
        else:
            self.span.set_attribute("troupe.envelope_id", getattr(result, "envelope_id", ""))
            self.span.set_attribute("troupe.seq", getattr(result, "seq", 0))
        return result


class Tracer:
    """What the traced places call when tracing is on."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self._tracer = trace.get_tracer("troupe", __version__, tracer_provider=provider)
        #: session id -> the span of its life (sessions created in this process).
        self._sessions: dict[str, Span] = {}

    # -- context across processes ------------------------------------------------------------

    @staticmethod
    def traceparent() -> str:
        """The current span's W3C ``traceparent`` ("" when there is none)."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get("traceparent", "")

    @staticmethod
    def parent(traceparent: str | None) -> Context:
        """The context ``traceparent`` names, or an empty one (a new root) for none or junk."""
        if not traceparent:
            return Context()
        return _PROPAGATOR.extract({"traceparent": traceparent}, context=Context())

    # -- posts -------------------------------------------------------------------------------

    async def client_post(
        self, post: Callable[[Envelope], Awaitable[Accepted]], envelope: Envelope
    ) -> Accepted:
        """Post under a PRODUCER span whose context the envelope carries (if it has none)."""
        with self._tracer.start_as_current_span(
            f"troupe.post {envelope.event_type}",
            kind=SpanKind.PRODUCER,
            attributes=_envelope_attributes(envelope),
        ) as span:
            if envelope.trace_id is None:
                envelope = attrs.evolve(envelope, trace_id=self.traceparent())
            accepted = await post(envelope)
            span.set_attribute("troupe.envelope_id", accepted.envelope_id)
            span.set_attribute("troupe.seq", accepted.seq)
            span.set_attribute("troupe.duplicate", accepted.duplicate)
            return accepted

    @contextmanager
    def hub_post(self, envelope: Envelope) -> Iterator[HubPost]:
        """The hub's span around one post (admission, append, dispatch)."""
        with self._tracer.start_as_current_span(
            f"troupe.hub.post {envelope.event_type}",
            context=self.parent(envelope.trace_id),
            kind=SpanKind.CONSUMER,
            attributes=_envelope_attributes(envelope),
        ) as span:
            if envelope.trace_id is None:
                # The recipients' turns then hang under this span.
                envelope = attrs.evolve(envelope, trace_id=self.traceparent())
            yield HubPost(envelope, span)

    # -- turns -------------------------------------------------------------------------------

    def turn(self, envelope: Envelope, agent_id: str) -> AbstractContextManager[Span]:
        """A span around ``agent_id``'s turn on ``envelope``, a child of the trigger's post."""
        return self._tracer.start_as_current_span(
            "troupe.turn",
            context=self.parent(envelope.trace_id),
            kind=SpanKind.CONSUMER,
            attributes={
                "troupe.agent_id": agent_id,
                "troupe.session_id": envelope.session_id,
                "troupe.trigger_id": envelope.envelope_id,
                "troupe.event_type": envelope.event_type,
            },
        )

    # -- RPC ---------------------------------------------------------------------------------

    @contextmanager
    def rpc_client(self, op: str) -> Iterator[str]:
        """A CLIENT span around one call; yields the ``traceparent`` to send with it."""
        with self._tracer.start_as_current_span(
            f"troupe.rpc {op}", kind=SpanKind.CLIENT, attributes={"rpc.method": op}
        ):
            yield self.traceparent()

    @contextmanager
    def rpc_server(self, frame: RequestFrame) -> Iterator[Callable[[ResponseFrame], None]]:
        """The hub's SERVER span for one call; yields what notes the response on it."""
        with self._tracer.start_as_current_span(
            f"troupe.rpc {frame.op}",
            context=self.parent(frame.traceparent),
            kind=SpanKind.SERVER,
            attributes={"rpc.method": frame.op},
        ) as span:

            def answered(response: ResponseFrame) -> None:
                if not response.ok:
                    span.set_attribute("troupe.error_code", response.error_code)
                    span.set_status(Status(StatusCode.ERROR, response.error_message))

            yield answered

    # -- sessions ----------------------------------------------------------------------------

    def session_opened(self, metadata: SessionMetadata) -> None:
        """Start the span of a session's life (a child of the current span: its creation)."""
        span = self._tracer.start_span(
            f"troupe.session {metadata.manifest_type}",
            kind=SpanKind.INTERNAL,
            attributes={
                "troupe.session_id": metadata.session_id,
                "troupe.session_type": metadata.manifest_type,
                "troupe.creator_id": metadata.creator_id,
                "troupe.participants": len(metadata.participants),
            },
        )
        self._sessions[metadata.session_id] = span
        if metadata.state.terminal:
            self.session_ended(metadata)

    def session_ended(self, metadata: SessionMetadata) -> None:
        """End the span of a session that reached a terminal state (if it started here)."""
        span = self._sessions.pop(metadata.session_id, None)
        if span is None:
            return
        span.set_attribute("troupe.session.state", metadata.state.value)
        span.set_attribute("troupe.session.close_reason", metadata.close_reason or "")
        span.end()

    def hub_stopped(self, session_ids: Iterable[str]) -> None:
        """End the spans of sessions a stopping hub leaves open (they go on when it reopens)."""
        for session_id in session_ids:
            span = self._sessions.pop(session_id, None)
            if span is not None:
                span.set_attribute("troupe.session.open_at_shutdown", True)
                span.end()
