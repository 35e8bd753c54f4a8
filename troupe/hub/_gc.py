"""Keeping a hub's long-lived bulk out of the garbage collector's way (``open_hub(gc_freeze=)``).

A hub holds many long-lived objects: every agent's record, every session's entry, and in
process the clients' objects for them. CPython's collector moves what survives into its oldest
generation and scans all of that generation in each full collection, which it runs whenever
the generation grew by a quarter since the last one: with 100k agents one full collection
stalled the loop ~0.9 s, and registering them ran 13 of them.

So a hub freezes (``gc.freeze``) what is alive once it has loaded the store and recovered its
sessions, and again after every :data:`FREEZE_EVERY` agents registered or sessions added: a
frozen object is never scanned again, and a full collection scans only what was made since
the last freeze. Before each freeze the young generations are collected (cheap: they hold at
most a few thousand objects), so short-lived garbage is not frozen with the rest.

``gc.freeze`` is process-wide, and that is the trade-off: it freezes *everything* alive at
that moment, the application's objects too. An object without reference cycles is still freed
as usual (by its reference count) when it dies; but a reference cycle that was alive when
frozen and dies later is not collected until it is unfrozen: its memory stays taken. When the
last freezing hub of the process closes it unfreezes everything, so that garbage is collected
then, unless something was already frozen when the first one opened (the application's own
``gc.freeze``: left as it was found; the application unfreezes when it chooses). An application
that calls ``gc.unfreeze()`` itself while a hub is open only undoes the hub's work until the
next freeze. ``open_hub(gc_freeze=False)`` opts a hub out: it never freezes (another hub of the
same process that does still freezes what is alive, this hub's objects included).

``gc.freeze`` is O(1): it moves the generations' lists onto the permanent one.
"""

from __future__ import annotations

import gc
from typing import Final

#: Agents registered or sessions added between two freezes. A live session holds ~70 tracked
#: objects; a full collection scans ~1-3 ms of CPU per 10k objects (on the 2026-12 bench
#: machine: 72k objects took 17-72 ms with 1000 between freezes, 4k took ~2 ms with 250).
FREEZE_EVERY: Final = 250

#: Open hubs that freeze (``gc_freeze=True``).
_open_hubs = 0
#: Whether the last of them to close unfreezes (nothing was frozen when the first opened).
_unfreeze_at_exit = False
#: Agents and sessions added since the last freeze.
_grown = 0


def settle() -> None:
    """Freeze what is alive now (after a bulk load): collect the young generations first."""
    global _grown
    _grown = 0
    if _open_hubs:
        gc.collect(1)
        gc.freeze()


def grew(n: int = 1) -> None:
    """``n`` long-lived objects (an agent, a session) were added: freeze every so often."""
    global _grown
    _grown += n
    if _grown >= FREEZE_EVERY:
        settle()


def hub_opened() -> None:
    """A hub that freezes opened."""
    global _open_hubs, _unfreeze_at_exit, _grown
    if _open_hubs == 0:
        _unfreeze_at_exit = gc.get_freeze_count() == 0
        _grown = 0
    _open_hubs += 1


def hub_closed() -> None:
    """A hub that freezes closed: the last one unfreezes, unless the application had frozen."""
    global _open_hubs
    _open_hubs -= 1
    if _open_hubs == 0 and _unfreeze_at_exit:
        gc.unfreeze()
