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

The figures are in docs/performance.md ("Garbage collection"). HUB_GC_THRESHOLD sets the thresholds; `[]`
keeps Python's own.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

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
