"""Where troupe's log records go when the application configured no logging.

A library leaves logging to its application, so the ``troupe`` logger has a
``NullHandler``: troupe's warnings (a crashed session, a retried close) stay quiet unless
the application asks for them. One kind of record is the application's own bug, though:
a failed ``respond()`` or ``on_envelope`` callback. Those go to :data:`USER_CODE`, whose
fallback handler prints them, with their traceback, on stderr — but only when no other
handler would show them (no ``logging.basicConfig``, no handler on ``troupe`` or above),
so a configured application sees each failure once, where it chose.
"""

from __future__ import annotations

import logging
import sys

#: Failures of the application's own code that troupe caught (a turn, a callback).
USER_CODE = logging.getLogger("troupe.user_code")


def _configured_elsewhere(logger: logging.Logger, own: logging.Handler) -> bool:
    """Whether a handler other than ``own`` (and the null handlers) sees ``logger``'s records."""
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if handler is not own and not isinstance(handler, logging.NullHandler):
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False


class StderrFallback(logging.Handler):
    """Prints a record on the current ``sys.stderr`` unless the application handles it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.setFormatter(logging.Formatter("troupe: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if _configured_elsewhere(logging.getLogger(record.name), self):
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # a closed stderr must not fail the caller
            self.handleError(record)


def install() -> None:
    """Give ``troupe`` its null handler and ``troupe.user_code`` its fallback (idempotent)."""
    root = logging.getLogger("troupe")
    if not any(isinstance(h, logging.NullHandler) for h in root.handlers):
        root.addHandler(logging.NullHandler())
    if not any(isinstance(h, StderrFallback) for h in USER_CODE.handlers):
        USER_CODE.addHandler(StderrFallback())
