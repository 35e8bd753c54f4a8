"""Whether tracing is on: the hot paths read ``ACTIVE`` and nothing else.

This module never imports OpenTelemetry. ``troupe.tracing.enable()`` does, and puts its
tracer here; with tracing off a post pays one module attribute read per hook.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Envelope
    from .tracing._otel import Tracer

#: The process's tracer, or None when tracing is off (the default).
ACTIVE: Tracer | None = None

_OFF: AbstractContextManager[object] = contextlib.nullcontext()


def turn_span(envelope: Envelope, agent_id: str) -> AbstractContextManager[object]:
    """A span around one turn when tracing is on; else a context manager that does nothing."""
    tracer = ACTIVE
    if tracer is None:
        return _OFF
    return tracer.turn(envelope, agent_id)
