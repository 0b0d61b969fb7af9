"""Memory diagnostics for a worker, off by default: investigation tooling,
which the worker (hub.app) imports only when a report is asked for.

`HUB_DEBUG__MEMORY_REPORT=/path/to/file` makes the worker append a report to
that file every `HUB_DEBUG__MEMORY_REPORT_INTERVAL_S` seconds (60): resident
memory; what glibc malloc and pymalloc hold in use, and free but kept (the
difference between live data and RSS); the fill of every lru_cache; and the
object types that grew since the first report. It costs a fraction of a
second per report.

`HUB_DEBUG__TRACEMALLOC_FRAMES=N` (0, off) also traces Python allocations N
frames deep and adds the allocation sites that grew most since the first
report, and how much of the heap Python code owns (the rest of the resident
memory is native: librdkafka, hiredis, OpenSSL, allocator fragmentation).
Tracing costs CPU, the trace table itself takes resident memory, and each
report stalls the event loop for a second or more (raise
`HUB_KAFKA__SESSION_TIMEOUT_S`): for investigations, never in production.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import re
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mallinfo2():
    """glibc's malloc statistics over every arena, or None (another libc, or glibc before 2.33)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        function = libc.mallinfo2
    except (OSError, AttributeError, TypeError):
        return None
    function.restype = _Mallinfo2
    return function


def pymalloc_stats() -> dict[str, int]:
    """pymalloc's arenas (1 MiB each, given back only when entirely empty), from
    sys._debugmallocstats, which writes only to the C-level stderr; empty
    while tracemalloc traces (it hides pymalloc behind its own hooks)."""
    with tempfile.TemporaryFile("w+") as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read()
    found = {}
    for name in ("arenas allocated current", "bytes in allocated blocks", "bytes in available blocks"):
        match = re.search(rf"# {name}\s*=\s*([\d,]+)", text)
        if match:
            found[name] = int(match.group(1).replace(",", ""))
    return found


def proc_status() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile (kB) and Threads of this process."""
    wanted = {"VmRSS", "RssAnon", "RssFile", "Threads"}
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in wanted:
                found[name] = int(value.split()[0])
    return found


class MemoryReporter:
    def __init__(self, path: Path, frames: int = 0, top: int = 15):
        self.path = Path(path)
        self.top = top
        self.started = time.monotonic()
        self.first: tracemalloc.Snapshot | None = None
        self.first_types: Counter | None = None
        self.mallinfo = _mallinfo2()
        if frames:
            tracemalloc.start(frames)

    def report(self) -> None:
        gc.collect()
        objects = gc.get_objects()
        types = Counter(type(o).__qualname__ for o in objects)
        caches = sorted(((o.cache_info().currsize, o.cache_info().maxsize, f"{o.__module__}.{o.__qualname__}")
                         for o in objects if isinstance(o, functools._lru_cache_wrapper)),
                        key=lambda c: c[0], reverse=True)
        del objects
        status = proc_status()
        lines = [f"== t={time.monotonic() - self.started:.0f}s rss={status['VmRSS'] / 1024:.1f}MB "
                 f"(anon {status['RssAnon'] / 1024:.1f}MB, file {status['RssFile'] / 1024:.1f}MB) "
                 f"threads={status['Threads']} python_blocks={sys.getallocatedblocks()}"]
        if self.mallinfo is not None:
            info = self.mallinfo()
            lines.append(f"malloc: in use {(info.uordblks + info.hblkhd) / 2**20:.1f}MB "
                         f"(mmapped {info.hblkhd / 2**20:.1f}MB), free in arenas {info.fordblks / 2**20:.1f}MB, "
                         f"arenas {info.arena / 2**20:.1f}MB")
        pymalloc = pymalloc_stats()
        if len(pymalloc) == 3:
            lines.append(f"pymalloc: {pymalloc['arenas allocated current']} arenas of 1MiB, "
                         f"{pymalloc['bytes in allocated blocks'] / 2**20:.1f}MB in use, "
                         f"{pymalloc['bytes in available blocks'] / 2**20:.1f}MB free in them")
        snapshot = None
        if tracemalloc.is_tracing():
            snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            lines.append(f"tracemalloc: traced {current / 2**20:.1f}MB (peak since the last report "
                         f"{peak / 2**20:.1f}MB), its own tables {tracemalloc.get_tracemalloc_memory() / 2**20:.1f}MB")
        if self.first_types is None:
            self.first, self.first_types = snapshot, types
        else:
            if snapshot is not None:
                lines.append(f"-- top {self.top} growth since the first report, by traceback (most recent call last)")
                for stat in snapshot.compare_to(self.first, "traceback")[:self.top]:
                    lines.append(f"{stat.size_diff / 2**20:+8.2f}MB {stat.count_diff:+9d} blocks "
                                 f"(now {stat.size / 2**20:.2f}MB)")
                    lines.extend(f"      {frame.filename}:{frame.lineno}" for frame in stat.traceback)
            lines.append("-- object types that grew most (gc-tracked objects)")
            grown = Counter({name: n - self.first_types.get(name, 0) for name, n in types.items()})
            lines.extend(f"{diff:+9d} {name} (now {types[name]})" for name, diff in grown.most_common(12) if diff > 0)
        lines.append("-- lru caches over 100 entries (size/maxsize)")
        lines.extend(f"{size:8d}/{maxsize} {name}" for size, maxsize, name in caches if size > 100)
        with open(self.path, "a") as out:
            out.write("\n".join(lines) + "\n")


def install(app, path: Path, interval_s: float, frames: int) -> None:
    """Start tracing now (if asked) and report from a Faust timer."""
    reporter = MemoryReporter(path, frames)

    @app.timer(interval=interval_s)
    async def memory_report() -> None:
        try:
            reporter.report()
        except Exception:  # a diagnostic must never stop the worker
            log.exception("memory report failed")
