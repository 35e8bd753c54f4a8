"""Run the benchmarks: ``python -m benchmarks [name ...]``; no name runs them all."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    """The benchmark names, from the ``bench_<name>.py`` modules next to this file.

    Returns:
      The names without the ``bench_`` prefix, sorted.
    """
    here = [str(Path(__file__).parent)]
    return sorted(
        info.name.removeprefix("bench_")
        for info in pkgutil.iter_modules(here)
        if info.name.startswith("bench_")
    )


def main(argv: list[str]) -> int:
    """Run the benchmarks named in ``argv`` (all of them when it is empty).

    Args:
      argv: benchmark names, with or without the ``bench_`` prefix.

    Returns:
      The exit status: 0, or 2 for an unknown name.
    """
    names = available()
    wanted = [arg.removeprefix("bench_") for arg in argv] or names
    unknown = [name for name in wanted if name not in names]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(names)}")
        return 2
    for name in wanted:
        importlib.import_module(f"benchmarks.bench_{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
