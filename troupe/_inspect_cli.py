"""``troupe inspect --db hub.db``: the web inspector over a store at rest; and the inspector
``troupe serve --inspect-port`` runs next to its hub.

The inspector needs the ``inspect`` extra (Starlette, Hypercorn); without it both commands
say so in one line. Nothing here imports it before it is asked for.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ._errors import StoreError

log = logging.getLogger("troupe.inspect")

#: ``troupe inspect``'s port when none is given.
DEFAULT_PORT = 8766


async def _serve_store(db: Path, host: str, port: int, key: str | None) -> None:
    from .inspect import StoreSource, inspector_app, serve_inspector
    from .store import SQLiteStore

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with SQLiteStore(db, read_only=True) as store, trio.open_nursery() as nursery:
            app = inspector_app(StoreSource(store), key=key)
            bound: int = await nursery.start(serve_inspector, app, host, port)
            where = f"[{host}]" if ":" in host else host
            print(f"inspecting {db} (read-only) on http://{where}:{bound}", flush=True)
            async for signum in signals:
                log.info("got %s: stopping", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()


def main(args: argparse.Namespace) -> int:
    """Run ``troupe inspect``; 2 for a bad option or a missing store, 1 if it cannot serve."""
    from ._serve_cli import check_available, is_loopback, read_key

    try:
        check_available()
        key = read_key(Path(args.key_file)) if args.key_file is not None else None
    except ValueError as exc:
        print(f"troupe inspect: {exc}", file=sys.stderr)
        return 2
    if key is None and not args.allow_anonymous and not is_loopback(args.host):
        print(
            f"troupe inspect: refusing to serve {args.db} on {args.host} without --key-file: "
            "anyone who reaches it could read every session; give --key-file FILE, or "
            "--allow-anonymous to accept that",
            file=sys.stderr,
        )
        return 2
    db = Path(args.db)
    if not db.exists():
        print(f"troupe inspect: no store at {db}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    failed = False
    try:
        trio.run(_serve_store, db, args.host, args.port, key)
    except* OSError as group:
        failed = True
        for error in _leaves(group):
            print(
                f"troupe inspect: cannot serve on {args.host}:{args.port}: {error}",
                file=sys.stderr,
            )
    except* StoreError as group:
        failed = True
        for error in _leaves(group):
            print(f"troupe inspect: {error}", file=sys.stderr)
    return 1 if failed else 0


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def add_parser(commands: Any, port_number: Callable[[str], int]) -> None:
    """Add ``troupe inspect`` to the CLI's subcommands (``port_number``: the CLI's port type)."""

    inspect = commands.add_parser(
        "inspect",
        help="serve the web inspector over a store at rest (read-only)",
        description="Serve the web inspector (agents, sessions and transcripts, the audit log) "
        "over an SQLite store, opened read-only: a hub may be running on it. Each page reads "
        "the store again. For a running hub's live view, use troupe serve --inspect-port.",
    )
    inspect.add_argument("--db", default="hub.db", help="the SQLite store file (default: hub.db)")
    inspect.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)"
    )
    inspect.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"port to bind, 0..65535; 0 picks a free one (default: {DEFAULT_PORT})",
    )
    inspect.add_argument(
        "--key-file",
        metavar="FILE",
        help="a file holding the operator key the pages then ask for (a login form, or "
        "Authorization: Bearer KEY for /api/)",
    )
    inspect.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve without --key-file on a host other than loopback (refused otherwise)",
    )
    inspect.set_defaults(run=main)


def add_serve_options(serve: argparse.ArgumentParser, port_number: Callable[[str], int]) -> None:
    """Add ``--inspect-port`` and ``--inspect-key-file`` to ``troupe serve``."""

    serve.add_argument(
        "--inspect-port",
        type=port_number,
        metavar="PORT",
        help="also serve the read-only web inspector on --host at this port (needs the "
        "'inspect' extra); 0 picks a free one",
    )
    serve.add_argument(
        "--inspect-key-file",
        metavar="FILE",
        help="a file holding the operator key the inspector asks for; required with "
        "--api-keys (agents' keys do not open it)",
    )
