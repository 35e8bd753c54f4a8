"""Serve the inspector's app over HTTP with Hypercorn, on trio."""

from __future__ import annotations

import logging
from typing import Final

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette

log = logging.getLogger("troupe.inspect")

#: Seconds open requests (live feeds) get to finish when the server stops gracefully.
GRACEFUL_S: Final = 1.0


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_inspector(
    app: Starlette,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; ``task_status.started(port)`` gives the
    port bound (the one the system picked for port 0).

    Raises:
      OSError: the address cannot be bound.
    """
    config = Config()
    config.bind = [_bind(host, port)]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = GRACEFUL_S
    config.keep_alive_timeout = 30
    config.h2_max_concurrent_streams = 100

    async def started(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(app, config, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(started)
        bound = int(binds[0].rsplit(":", 1)[1])
        log.info("inspector on http://%s", _bind(host, bound))
        task_status.started(bound)
