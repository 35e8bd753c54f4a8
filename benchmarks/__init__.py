"""Benchmarks: each ``bench_<name>.py`` module has a ``main()`` that prints a report."""
