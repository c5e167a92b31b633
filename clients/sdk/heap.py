"""The cyclic garbage collector in a long-running client process (``vox daemon``, ``vox chat``).

Per message a client allocates many short-lived objects (frames, dataclasses, futures);
reference counting frees nearly all of them at once. The cyclic collector, at CPython's default
thresholds (700, 10, 10), still runs a young collection every 700 net allocations, and now and
then a full one that walks every object the process holds — the modules, the profile's
caches: a pause of tens of milliseconds in a busy process (``bench/e2e.py`` reports the time
spent collecting, ``client_gc_us_per_msg``). :func:`settle`, called once after start-up, moves
what start-up created into the permanent generation (:func:`gc.freeze`: never walked again)
and raises the young threshold to :data:`YOUNG_THRESHOLD`, so collections are rarer and
shorter; cyclic garbage is still collected.

Opt-in: the SDK never changes its host's collector by itself; the daemon and the TUI call it.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle"]

#: Net allocations between two young collections after :func:`settle` (CPython's default: 700).
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Collect once, freeze what is left, raise the young collection threshold."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
