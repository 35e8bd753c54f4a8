"""Benchmarks: each ``bench_<name>.py`` module has a ``main()`` that prints its figures.

Run them all with ``python -m benchmarks`` (or ``./dev bench``), one with
``python -m benchmarks <name>``.
"""
