"""What makes a simulated run reproducible: seeded draws, ids, clock and scheduler.

Rules:

- Every random choice is a pure function of ``(seed, *key)`` (``draw``): an agent's choice on
  a turn does not depend on how many other draws happened before it.
- Ids come from one ``random.Random(seed)`` in the order the hub asks for them, which is
  fixed once the scheduling is (``SeededIds``).
- Timestamps are a fixed epoch plus trio's clock (``virtual_clock``): under a ``MockClock``
  the same run writes the same ``created_at`` everywhere.
- trio runs the tasks that became runnable together in an order it picks with a private
  ``random.Random`` (``trio._core._run._r``: a batch is reversed or not, or shuffled under
  Hypothesis). It offers no public way to seed it; its own test suite and pytest-trio seed
  that instance, and so does ``seeded_scheduler`` for the length of one run, restoring its
  state afterwards. This is the one private name of trio troupe touches: trio is pinned
  below its next minor release in ``pyproject.toml``, a test names the attribute when it
  goes away, and if a trio release drops it ``seeded_scheduler`` raises instead of running
  unreproducibly.
- Equal deadlines expire in an order trio takes from object ids, so scenarios draw their
  delays as floats (two tasks practically never sleep until the very same instant).
- No worker threads under virtual time: the autojump clock would jump while a task waits on
  one (the CLI opens SQLite with ``threaded=False``).
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

#: 2026-01-01T00:00:00Z: the wall-clock time at virtual time zero.
EPOCH = 1_767_225_600.0

_UNIT = struct.Struct(">Q")


def draw(seed: int, *key: object) -> float:
    """A number in [0, 1) that depends only on ``seed`` and ``key`` (stable across runs)."""
    text = "|".join(map(str, (seed, *key))).encode()
    (value,) = _UNIT.unpack(hashlib.blake2b(text, digest_size=8).digest())
    return float(value >> 11) / (1 << 53)


class SeededIds:
    """Makes 128-bit hex ids from a seeded generator: pass it as ``open_hub(new_id=...)``."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def __call__(self) -> str:
        return f"{self._rng.getrandbits(128):032x}"


def virtual_clock() -> Callable[[], float]:
    """Wall-clock seconds for the hub: ``EPOCH`` plus trio's (mock) clock."""
    return lambda: EPOCH + trio.current_time()


@contextmanager
def seeded_scheduler(seed: int) -> Iterator[None]:
    """Seed trio's scheduling order for a ``trio.run`` inside the block (see module rules).

    Raises:
      RuntimeError: this trio has no scheduler random to seed.
    """
    from trio._core import _run  # the private module that owns the scheduler's random

    rng = getattr(_run, "_r", None)
    if not isinstance(rng, random.Random):
        raise RuntimeError(
            f"trio {trio.__version__} has no trio._core._run._r to seed: "
            "a simulated run would not be reproducible"
        )
    state = rng.getstate()
    rng.seed(seed)
    try:
        yield
    finally:
        rng.setstate(state)
