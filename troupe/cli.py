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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
