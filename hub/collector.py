"""How often a long-running hub process (a worker, `hub resolve`, `hub replay`) runs Python's cyclic garbage
collector, set once at its start.

The hot path makes and drops a few hundred small containers per event (decoded records, features, readings,
messages). With CPython's default thresholds (700, 10, 10) that sets off a young-generation pass every few
events and a full pass over everything the process holds (its caches, Faust, the schemas) every couple of
hundred events. That cost a quarter of the worker's CPU and collected almost nothing: these containers hold
no cycles, so reference counting frees them as soon as they are dropped. Cycles are rare on this path (a
traceback, a Faust internal), so collecting less often costs next to no memory. A young pass still runs every
`threshold[0]` net allocations; the collector just runs and scans less often.

What the process built while starting (modules, schemas, configuration, compiled rules) is frozen first
(`gc.freeze`). It lives as long as the process, so no pass needs to scan it again.

A pass of the fused engine (hub.engine.Chain) holds its batch's containers until it ends: with a large index a
pass of 500 records holds some 8,500 candidates, their features and readings, 50,000 containers and more, so a
young-generation pass met in the middle of it scanned them all and freed nothing (9 passes of 29-35 ms in 4,500
raw events with 100,000 customers indexed, about 65 µs per event). `collecting_after` keeps the automatic
collection off while a pass runs: the pass's temporaries are freed by reference counting as it ends, so the
next young pass (as paced) scans only what outlives it. Cycles made during a pass wait for its end.

The figures are in docs/performance.md ("Garbage collection"). HUB_GC_THRESHOLD sets the thresholds; `[]`
keeps Python's own.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

# A young pass every 50,000 net allocations (a hundred-odd events), an older one every 20 of those, a full one
# every 100 older ones (and, in CPython, only once the long-lived objects have grown by a quarter).
DEFAULT_THRESHOLD: tuple[int, int, int] = (50_000, 20, 100)


def pace_collector(threshold: Sequence[int] | None = DEFAULT_THRESHOLD) -> tuple[int, ...]:
    """Freeze what exists now and run the collector at `threshold` (empty or None: Python's own). Returns
    the thresholds in force."""
    gc.collect()
    gc.freeze()
    if threshold:
        gc.set_threshold(*threshold)
    return gc.get_threshold()


_passes = 0  # passes running now (a worker's passes overlap on its event loop: the hot chain, the timers)
_resume = False  # whether the last pass to end turns the collector back on (off already: left off)
# passes in other threads (a test harness, an embedding application) must not leave the count, and so the
# collector, wrong
_counting = threading.Lock()


@contextmanager
def collecting_after() -> Iterator[None]:
    """No automatic collection while the block runs (one pass, or several overlapping): the collector
    runs, as paced, once the last of them has ended and dropped what it held."""
    global _passes, _resume
    with _counting:
        if _passes == 0:
            _resume = gc.isenabled()
            gc.disable()
        _passes += 1
    try:
        yield
    finally:
        with _counting:
            _passes -= 1
            if _passes == 0 and _resume:
                gc.enable()
