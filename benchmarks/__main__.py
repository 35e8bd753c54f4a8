"""Run the benchmarks: ``python -m benchmarks`` runs every one, ``python -m benchmarks store``
runs ``bench_store.py`` only (any ``bench_<name>.py`` module is found by its name).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks


def available() -> list[str]:
    """Names of the benchmark modules in this package, without the ``bench_`` prefix."""
    return sorted(
        info.name.removeprefix("bench_")
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith("bench_")
    )


def run(names: list[str]) -> int:
    """Run the named benchmarks (all when ``names`` is empty); 2 for an unknown name."""
    known = available()
    unknown = [name for name in names if name not in known]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return 2
    for name in names or known:
        print(f"== {name} ==", flush=True)
        importlib.import_module(f"benchmarks.bench_{name}").main()
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
