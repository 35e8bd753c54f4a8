"""The ``troupe`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio


def _demo(args: argparse.Namespace) -> int:
    from . import _demo

    trio.run(_demo.main)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from . import _serve_cli

    try:
        return _serve_cli.main(
            args.db,
            args.host,
            args.port,
            args.api_keys,
            allow_anonymous=args.allow_anonymous,
            max_connections=args.max_connections,
            max_connections_per_address=args.max_connections_per_address,
        )
    except ValueError as exc:
        print(f"troupe serve: {exc}", file=sys.stderr)
        return 2


def _wal(args: argparse.Namespace) -> int:
    from . import _wal_cli

    return _wal_cli.main(args.db, args.action, args.session, args.count)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="troupe",
        description="A supervised actor runtime for trio that hosts a multi-agent hub.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="run a small scripted network on an embedded store and print it"
    )
    demo.set_defaults(run=_demo)

    serve = commands.add_parser(
        "serve",
        help="run a hub on SQLite, reachable over WebSocket, until SIGINT/SIGTERM",
        description="Run a hub on an SQLite store, reachable over WebSocket. Stops cleanly on "
        "SIGINT or SIGTERM: every accepted envelope is committed and the file reopens cleanly.",
    )
    serve.add_argument("--db", default="hub.db", help="the SQLite store file (default: hub.db)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8765, help="port to bind; 0 picks a free one (default: 8765)"
    )
    serve.add_argument(
        "--api-keys",
        metavar="FILE",
        help='JSON file {"agent name": "token", ...}; with it every agent must present its key '
        "(ApiKeyAuth); without it the hub accepts agents that ask for no auth",
    )
    serve.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve without --api-keys on a host other than loopback (refused otherwise): "
        "anyone who reaches the port may register and bind any name not bound to a live "
        "connection",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=512,
        metavar="N",
        help="connections held at once, handshakes included; more are closed at once "
        "(default: 512; keep it below the open-files limit, ulimit -n)",
    )
    serve.add_argument(
        "--max-connections-per-address",
        type=int,
        default=64,
        metavar="N",
        help="connections held at once from one IP address (default: 64)",
    )
    serve.set_defaults(run=_serve)

    wal = commands.add_parser(
        "wal",
        help="look into a store: inspect, tail or verify sessions' WALs",
        description="Read a store offline (no hub needs to run). inspect: the sessions, or one "
        "session's metadata and event counts; tail: a session's last envelopes; verify: seq "
        "without gaps, close notices, snapshots equal to a refold (exit 1 on a problem).",
    )
    actions = wal.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("inspect", "the sessions, or one session's metadata and event counts"),
        ("tail", "a session's last envelopes"),
        ("verify", "seq without gaps, close notices, snapshots equal to a refold"),
    ):
        sub = actions.add_parser(action, help=text, description=text)
        if action == "tail":
            sub.add_argument("session", help="a session id")
        else:
            sub.add_argument("session", nargs="?", help="a session id (all sessions when omitted)")
        sub.add_argument("--db", default="hub.db", help="the SQLite store file (default: hub.db)")
        if action == "tail":
            sub.add_argument(
                "-n", "--count", type=int, default=20, help="how many envelopes (default: 20)"
            )
        sub.set_defaults(run=_wal, count=20)

    from .sim._console import add_parser as add_sim_parser

    add_sim_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
