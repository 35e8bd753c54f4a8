"""Turning tracing on and off (imports OpenTelemetry only when turned on)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _tracing

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider


def enable(tracer_provider: TracerProvider | None = None) -> None:
    """Trace posts, turns, RPCs and sessions in this process from now on.

    Args:
      tracer_provider: where spans go; None uses OpenTelemetry's global provider.

    Raises:
      ImportError: OpenTelemetry is not installed (``pip install 'trio-troupe[otel]'``).
    """
    try:
        from ._otel import Tracer
    except ImportError as exc:
        raise ImportError(
            "troupe.tracing needs OpenTelemetry: pip install 'trio-troupe[otel]'"
        ) from exc
    _tracing.ACTIVE = Tracer(tracer_provider)


def disable() -> None:
    """Stop tracing (spans already started still end)."""
    _tracing.ACTIVE = None


def enabled() -> bool:
    """Whether :func:`enable` is in force."""
    return _tracing.ACTIVE is not None
