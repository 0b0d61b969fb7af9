"""Matcher throughput as the identity index grows: records/s of the match
stage (blocking, candidate fetch, scoring, atomic link) with 10k, 100k and 1M
records already in a real Redis index.

Preloads the index with generated customers through the same link script
the matcher uses, then times the match stage on fresh generated records in
batches of 1,000. Prints a line per size and, last, one JSON object.

    python benchmarks/matcher.py --sizes 10000 100000 1000000 --queries 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time

from hub import metrics
from hub.config import load_pipeline
from hub.connectors.embedded import EmbeddedRedis
from hub.crypto import new_key
from hub.records import InMessage
from hub.schemas import CANONICAL, codec
from hub.stages.match import MatchStage
from hub.store.redis import RedisStore
from hub.testing.harness import preload_index, standardised_records

SECRET = b"bench"


async def _preload(store: RedisStore, target: int, already: int, seed: int) -> int:
    return already + await preload_index(store, target - already, SECRET, seed, f"pre{already}-")


def _pipeline(max_scored: int | None):
    pipeline = load_pipeline(None)
    if max_scored is None:
        return pipeline
    return pipeline.model_copy(update={"match": pipeline.match.model_copy(update={"max_scored": max_scored})})


def _candidates_scored() -> tuple[float, float]:
    """(sum, count) of the hub_match_candidates histogram so far."""
    found = {s.name: s.value for m in metrics.REGISTRY.collect() if m.name == "hub_match_candidates"
             for s in m.samples if s.name.endswith(("_sum", "_count"))}
    return found.get("hub_match_candidates_sum", 0.0), found.get("hub_match_candidates_count", 0.0)


async def _measure(store: RedisStore, queries: int, seed: int, max_scored: int | None = None
                   ) -> tuple[float, float, float]:
    stage = MatchStage(_pipeline(max_scored), store, SECRET)
    scored_before = _candidates_scored()
    canonical = codec(CANONICAL)
    messages = [InMessage("customer.canonical", 0, i, None, canonical.encode(
        {"record": r, "quality": q, "ingested_at": 0,
         "origin": {"topic": "raw", "partition": 0, "offset": i, "produced_at": None}}))
        for i, (r, q) in enumerate(standardised_records(queries, seed, f"q{seed}-"))]
    started = time.perf_counter()
    cpu = time.process_time()
    for start in range(0, len(messages), 1000):
        await stage.process(messages[start:start + 1000])
    elapsed = time.perf_counter() - started
    scored_after = _candidates_scored()
    per_record = (scored_after[0] - scored_before[0]) / max(1.0, scored_after[1] - scored_before[1])
    return len(messages) / elapsed, (time.process_time() - cpu) / len(messages) * 1e6, per_record


async def run(sizes: list[int], queries: int, max_scored: int | None = None) -> dict:
    redis = EmbeddedRedis(tempfile.mkdtemp(prefix="hub-matcher-")).start()
    store = RedisStore.from_url(redis.url)
    result = {"queries": queries}
    loaded = 0
    try:
        for size in sorted(sizes):
            t0 = time.perf_counter()
            loaded = await _preload(store, size, loaded, seed=100 + size)
            preload_s = time.perf_counter() - t0
            rate, cpu_us, scored = await _measure(store, queries, seed=7 + size, max_scored=max_scored)
            memory = store.client.info("memory")["used_memory"] / 2 ** 20
            print(f"index {loaded:>9,} records: {rate:8,.0f} records/s matched, {cpu_us:6.0f} µs worker CPU each, "
                  f"{scored:4.1f} candidates scored each, Redis {memory:,.0f} MiB (preload {preload_s:.0f} s)",
                  flush=True)
            result[f"candidates_scored_at_{size}"] = round(scored, 1)
            result[f"records_per_s_at_{size}"] = round(rate, 1)
            result[f"cpu_us_at_{size}"] = round(cpu_us, 1)
            result[f"redis_mib_at_{size}"] = round(memory, 1)
            loaded += queries
    finally:
        await store.close()
        redis.stop()
    first, last = min(sizes), max(sizes)
    result["slowdown_largest_vs_smallest"] = round(result[f"records_per_s_at_{first}"]
                                                   / result[f"records_per_s_at_{last}"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="Matcher throughput as the identity index grows")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--max-scored", type=int, default=None, help="Override match.max_scored")
    args = parser.parse_args()
    os.environ.setdefault("HUB_PII_KEY", new_key())  # the index seals features: a key for this run
    print(json.dumps(asyncio.run(run(args.sizes, args.queries, args.max_scored))))


if __name__ == "__main__":
    main()
