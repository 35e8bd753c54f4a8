"""Run the benchmarks: ``python -m benchmarks`` runs every one, ``python -m benchmarks store``
runs ``bench_store.py`` only (any ``bench_<name>.py`` module is found by its name), and
``python -m benchmarks sim --sessions-passivated 1000000`` passes the options after one name
to a benchmark that takes them (``python -m benchmarks.bench_sim --help`` lists them).
"""

from __future__ import annotations

import importlib
import inspect
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


def run(args: list[str]) -> int:
    """Run the named benchmarks (all when none is named); 2 for an unknown name or option."""
    first_option = next((i for i, arg in enumerate(args) if arg.startswith("-")), len(args))
    names, options = args[:first_option], args[first_option:]
    known = available()
    unknown = [name for name in names if name not in known]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return 2
    if options and len(names) != 1:
        print("options go after the one benchmark they are for: NAME [--option VALUE ...]")
        return 2
    for name in names or known:
        main = importlib.import_module(f"benchmarks.bench_{name}").main
        if options and not inspect.signature(main).parameters:
            print(f"the {name} benchmark takes no options; got {' '.join(options)}")
            return 2
        print(f"== {name} ==", flush=True)
        if options:
            main(options)
        else:
            main()
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
