"""``troupe serve``: a hub on SQLite, reachable over WebSocket, until SIGINT or SIGTERM."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import trio

from . import ApiKeyAuth, NoAuth, StoreError, open_hub
from .hub import AuthAdapter
from .transport import serve_ws

log = logging.getLogger("troupe.serve")


def load_api_keys(path: Path) -> dict[str, str]:
    """Read ``{"agent name": "token", ...}`` from a JSON file.

    Raises:
      ValueError: the file is not a JSON object of strings (the message names the file).
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read API keys from {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{path} must hold a JSON object of agent name -> token strings")
    return data


async def serve(
    db: Path,
    host: str,
    port: int,
    api_keys: dict[str, str] | None,
    *,
    ping_interval: float = 20.0,
) -> None:
    """Serve until SIGINT/SIGTERM; leaving flushes everything and closes the store."""
    auth: list[AuthAdapter] = [ApiKeyAuth(api_keys)] if api_keys is not None else [NoAuth()]
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_hub(db, auth=auth) as hub, trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve_ws(
                    hub,
                    host,
                    port,
                    ping_interval=ping_interval,
                    ping_timeout=ping_interval,
                    task_status=task_status,
                )
            )
            bound = server.port
            scheme = "api keys" if api_keys is not None else "no auth"
            log.info("serving %s on ws://%s:%d (%s)", db, host, bound, scheme)
            print(f"listening on ws://{host}:{bound}", flush=True)
            async for signum in signals:
                log.info("got %s: stopping", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
    log.info("stopped; %s closed cleanly", db)


def main(db: str, host: str, port: int, api_keys_file: str | None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    keys = load_api_keys(Path(api_keys_file)) if api_keys_file is not None else None
    path = Path(db)
    made = [p for p in _store_files(path) if not p.exists()]  # what a failed start removes
    failed = False
    try:
        trio.run(serve, path, host, port, keys)
    except* OSError as group:
        # The port is taken, the host is not ours: say so in one line, not a traceback, and
        # leave no empty store behind (the store opens before the port is bound).
        failed = True
        for exc in _leaves(group):
            print(f"troupe serve: cannot serve on {host}:{port}: {exc}", file=sys.stderr)
        if path in made:
            for created in made:
                created.unlink(missing_ok=True)
    except* StoreError as group:
        failed = True
        for exc in _leaves(group):
            print(f"troupe serve: {exc}", file=sys.stderr)
    return 1 if failed else 0


def _store_files(db: Path) -> list[Path]:
    """The files an SQLite store at ``db`` may create: the file and its journals."""
    return [db, *(db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    out: list[Exception] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
