"""The ``troupe`` command."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from ._errors import TroupeError
from ._inspect_cli import add_parser as add_inspect_parser
from ._inspect_cli import add_serve_options as add_inspect_serve_options

#: Exit codes: what a shell reports for a process killed by SIGPIPE / interrupted by SIGINT.
EXIT_BROKEN_PIPE = 141
EXIT_INTERRUPTED = 130


def _demo(args: argparse.Namespace) -> int:
    from . import _demo

    db: Path | None = args.db
    if db is not None and db.exists():
        print(f"troupe demo: {db} exists; --db wants a new file", file=sys.stderr)
        return 2
    trio.run(_demo.main, db)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from . import _serve_cli

    node = None
    if args.store is not None:
        if args.db is not None:
            print(
                "troupe serve: give --db (SQLite) or --store (a cluster), not both", file=sys.stderr
            )
            return 2
        node = _serve_cli.NodeOptions(
            store=args.store,
            schema=args.schema,
            node_id=args.node_id or "",
            advertise=args.advertise or "",
            shards=args.shards,
            key_file=args.cluster_key_file,
            **_timing(args),
        )
    else:
        for flag in ("node_id", "advertise", "lease", "tick", "margin", "cluster_key_file"):
            if getattr(args, flag) is not None:
                option = "--" + flag.replace("_", "-")
                print(f"troupe serve: {option} is for a cluster node (--store)", file=sys.stderr)
                return 2
    try:
        return _serve_cli.main(
            args.db or "hub.db",
            args.host,
            args.port,
            args.api_keys,
            allow_anonymous=args.allow_anonymous,
            max_connections=args.max_connections,
            max_connections_per_address=args.max_connections_per_address,
            node=node,
            inspect_port=args.inspect_port,
            inspect_key_file=args.inspect_key_file,
        )
    except ValueError as exc:
        print(f"troupe serve: {exc}", file=sys.stderr)
        return 2


def _timing(args: argparse.Namespace) -> dict[str, Any]:
    """``--lease``, ``--tick`` and ``--margin`` as given (the others keep their defaults)."""
    given = {"lease_s": args.lease, "tick_s": args.tick, "margin_s": args.margin}
    return {k: v for k, v in given.items() if v is not None}


def _wal(args: argparse.Namespace) -> int:
    from . import _wal_cli

    return _wal_cli.main(args.db, args.action, args.session, args.count)


def _cluster(args: argparse.Namespace) -> int:
    from . import _cluster_cli

    try:
        return _cluster_cli.main(args.store, args.schema)
    except ValueError as exc:
        print(f"troupe cluster: {exc}", file=sys.stderr)
        return 2


def port_number(text: str) -> int:
    """``--port``: a TCP port, 0..65535 (0: the system picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a port number from 0 to 65535 (0 picks a free port), got {text}"
        )
    return value


def count(text: str) -> int:
    """``-n``: how many, zero or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="troupe",
        description="A supervised actor runtime for trio that hosts a multi-agent hub.",
    )
    parser.add_argument("--version", action="version", version=f"troupe {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a small scripted network on an embedded store and print it",
        description="Run a small scripted network on an SQLite store and print it. The store "
        "is a temporary file, deleted at the end, unless --db names a new file to keep.",
    )
    demo.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help="write the store to this new file and keep it (for troupe wal inspect|tail|verify)",
    )
    demo.set_defaults(run=_demo)

    serve = commands.add_parser(
        "serve",
        help="run a hub on SQLite, reachable over WebSocket, until SIGINT/SIGTERM",
        description="Run a hub on an SQLite store, reachable over WebSocket. Stops cleanly on "
        "SIGINT or SIGTERM: every accepted envelope is committed and the file reopens cleanly.",
    )
    serve.add_argument("--db", help="the SQLite store file (default: hub.db)")
    serve.add_argument(
        "--store",
        metavar="URL",
        help="run as one node of a cluster on this PostgreSQL database instead, "
        "postgresql://USER@HOST:PORT/DB (any number of nodes on one database form a cluster)",
    )
    serve.add_argument(
        "--schema", default="troupe", help="with --store: the PostgreSQL schema (default: troupe)"
    )
    serve.add_argument(
        "--node-id",
        metavar="NAME",
        help="with --store: this node's name in the cluster (default: HOSTNAME-PID)",
    )
    serve.add_argument(
        "--advertise",
        metavar="URL",
        help="with --store: the address other nodes reach this node at (their peer links, "
        "with --cluster-key-file) and `troupe cluster status` shows (default: ws://HOST:PORT "
        "as bound)",
    )
    serve.add_argument(
        "--cluster-key-file",
        metavar="FILE",
        help="with --store: a file holding the cluster key (its first line, at least 16 "
        "characters), the same on every node. With it a node forwards requests for other "
        "nodes' sessions to their owner and delivers to agents connected to other nodes, "
        "over links to each node's --advertise address that prove the key; without it a "
        "request for another node's session is refused with not_owner (naming the owner)",
    )
    serve.add_argument(
        "--shards",
        type=int,
        default=32,
        metavar="N",
        help="with --store: the shard count of a new cluster, fixed from then on; a node "
        "with another count is refused (default: 32)",
    )
    for flag, text in (
        (
            "--lease",
            "how long a claim or renewal holds a shard, by PostgreSQL's clock; must "
            "exceed 5 + --margin (default: 10)",
        ),
        ("--tick", "seconds between renewals, at most (--lease - --margin) / 2 (default: 2)"),
        (
            "--margin",
            "how long before its lease ends a node that could not renew stops serving (default: 2)",
        ),
    ):
        serve.add_argument(flag, type=float, metavar="SECONDS", help=f"with --store: {text}")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=port_number,
        default=8765,
        help="port to bind, 0..65535; 0 picks a free one (default: 8765)",
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
    add_inspect_serve_options(serve, port_number)
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
                "-n", "--count", type=count, default=20, help="how many envelopes (default: 20)"
            )
        sub.set_defaults(run=_wal, count=20)

    add_inspect_parser(commands, port_number)

    cluster = commands.add_parser(
        "cluster",
        help="look at a cluster of hubs on PostgreSQL: its nodes and who owns which shard",
        description="Read a cluster's state from its PostgreSQL database (nothing is changed).",
    )
    cluster_actions = cluster.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = cluster_actions.add_parser(
        "status",
        help="the nodes (address, heartbeat age) and the shards each owns",
        description="Print the cluster's nodes (advertised address, heartbeat age by "
        "PostgreSQL's clock) and the shards each owns now, then the shards nobody owns.",
    )
    status.add_argument(
        "--store",
        required=True,
        metavar="URL",
        help="the cluster's database, postgresql://USER@HOST:PORT/DB",
    )
    status.add_argument(
        "--schema", default="troupe", help="the store's PostgreSQL schema (default: troupe)"
    )
    status.set_defaults(run=_cluster)

    from .sim._console import add_parser as add_sim_parser

    add_sim_parser(commands)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("trio-troupe")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _stdout_to_devnull() -> None:
    """After a broken pipe: send what is still buffered nowhere, so exiting prints nothing."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing will flush at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``troupe`` command; the process exit code.

    Whatever a command fails with reaches the terminal as one line on stderr, never a
    traceback: a closed pipe (``troupe demo | head -1``) exits 141 quietly, Ctrl-C 130, and
    a troupe or OS error (a store that cannot be opened) 1.
    """
    args = build_parser().parse_args(argv)
    prefix = f"troupe {args.command}"
    code = 0
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except* BrokenPipeError:
        _stdout_to_devnull()
        code = EXIT_BROKEN_PIPE
    except* KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except* (TroupeError, OSError) as group:
        for exc in _leaves(group):
            print(f"{prefix}: {exc}", file=sys.stderr)
        code = max(code, 1)
    return code


if __name__ == "__main__":
    sys.exit(main())
