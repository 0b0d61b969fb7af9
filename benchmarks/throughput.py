"""End-to-end throughput and latency of the whole hub on this machine.

Starts the embedded broker and Redis and one worker (`hub run`, as in
production), then:
  1. full speed: feeds N generated events (four sources, Avro and JSON,
     duplicates, invalid records, consent events) as fast as possible and
     times until every raw event is accounted for and the targets are quiet;
  2. steady: feeds N/2 fresh events at half the measured rate (or `--rate`)
     and measures event-to-target latency (target record timestamp minus source event
     timestamp, from the hub.event.ts header), which full speed cannot show.

First, as the floor to compare with, a plain confluent-kafka consume ->
produce loop moves the same records on the same broker. Prints a readable
report; the last line is one JSON object. The embedded broker shares the
machine with the worker and Redis: its CPU per event at full speed and its
share of a core in the steady run are reported too, so a run the broker
held back shows as one.

`--preload N` puts N customers in the identity index first (through the
matcher's own link script), to see whether per-event cost stays flat as the
index grows; `--workers 2` runs two worker processes in one consumer group
(worker CPU and memory are then summed over them).

    python benchmarks/throughput.py --events 20000
    python benchmarks/throughput.py --events 20000 --preload 100000
    python benchmarks/throughput.py --events 20000 --workers 2
    python benchmarks/throughput.py --events 20000 --engine fused

`--engine fused` runs the workers with HUB_ENGINE=fused (hub.engine: one
pass per batch from the source topics to the targets). It writes no
canonical records, so there a run is over when the workers' group has
committed every raw event (which it does only once their outputs are
delivered) and the outputs have gone quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

from hub.config import DEFAULT_ENGINE, load_pipeline, load_settings
from hub.demo import encode_event
from hub.store.redis import RedisStore
from hub.testing.generator import generate
from hub.connectors.kafka import end_offsets
from hub.follow import behind, committed_offsets
from hub.testing.harness import Feeder, LocalHub, Watcher, percentile, preload_index, process_cpu_s


def _encoded(persons: int, seed: int, start_ms: int):
    return [(e.topic, e.key, e.raw if e.raw is not None else encode_event(e.topic, e.value))
            for e in generate(persons, seed=seed, start_ms=start_ms)]


def _accounted(view, pipeline) -> int:
    return view.counts[pipeline.topics.canonical] + sum(view.counts[s.dlq_topic] for s in pipeline.sources)


class _Progress:
    """Whether the workers have taken in every raw event fed: canonical records and dead letters counted
    (staged engine), or the workers' group committed to the end of every raw topic (fused engine), checked
    at most once a second (each check opens a consumer)."""

    def __init__(self, bootstrap: str, pipeline, engine: str):
        self.bootstrap, self.pipeline, self.engine = bootstrap, pipeline, engine
        self.raw_topics = [s.raw_topic for s in pipeline.sources]
        self._checked, self._done = 0.0, False

    def done(self, watcher, accounted_before: int, fed: int) -> bool:
        if self.engine == "staged":
            return _accounted(watcher.view, self.pipeline) - accounted_before >= fed
        if not self._done and time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()
            ends = end_offsets(self.bootstrap, self.raw_topics)
            self._done = not behind(ends, committed_offsets(self.bootstrap, "hub", ends))
            if self._done:  # committed only once delivered: everything it caused is on the topics, read it
                watcher.read_to_end()
        return self._done

    def reset(self) -> None:
        self._checked, self._done = 0.0, False


def _samples(workers) -> dict[tuple[str, str], float]:
    """Every sample of the workers' /metrics, summed over workers: (name, labels) -> value."""
    total: dict[tuple[str, str], float] = {}
    for worker in workers:
        for line in worker.get("/metrics")[1].decode().splitlines():
            if line.startswith("hub_") and " " in line:
                head, _, value = line.rpartition(" ")
                name, _, labels = head.partition("{")
                total[(name, labels)] = total.get((name, labels), 0.0) + float(value)
    return total


def _breakdown(before: dict, after: dict) -> dict:
    """Where the steady run's time went inside the workers, from their own metrics (deltas over the run): the
    passes of each stage and their size, the mean delivery of a pass, the golden-record lease waits, and the
    hub's own raw-event-to-target-produced latency (hub_end_to_end_seconds, the watcher's hop left out)."""
    delta = {key: value - before.get(key, 0.0) for key, value in after.items()}

    def of(name: str, stage: str | None = None, label: str | None = None) -> float:
        return sum(v for (n, labels), v in delta.items()
                   if n == name and (stage is None or f'stage="{stage}"' in labels)
                   and (label is None or label in labels))

    stages = sorted({labels.split('stage="')[1].split('"')[0] for (n, labels) in delta
                     if n == "hub_batch_records_count" and 'stage="' in labels})
    passes = {s: int(of("hub_batch_records_count", s)) for s in stages if of("hub_batch_records_count", s)}
    result = {"passes": passes,
              "records_per_pass": {s: round(of("hub_batch_records_sum", s) / n, 1) for s, n in passes.items()},
              "delivery_ms_per_pass": {s: round(of("hub_delivery_seconds_sum", s) / n * 1000, 1)
                                       for s, n in passes.items() if of("hub_delivery_seconds_count", s)},
              "golden_lease_waits": int(of("hub_golden_lease_waits_total")),
              # how those waits ended: the holder's release woke them, or their back-off ran out
              "golden_lease_waits_released": int(of("hub_golden_lease_wait_ends_total", label='outcome="released"'))}
    count = of("hub_end_to_end_seconds_count")
    if count:
        at_most: dict[float, float] = {}  # bucket bound -> events at or under it, summed over the targets
        for (n, labels), v in delta.items():
            if n == "hub_end_to_end_seconds_bucket" and 'le="+Inf"' not in labels:
                bound = float(labels.split('le="')[1].split('"')[0])
                at_most[bound] = at_most.get(bound, 0.0) + v
        result["hub_end_to_end_mean_ms"] = round(of("hub_end_to_end_seconds_sum") / count * 1000, 1)
        # the bucket bound under which 99 % fall: an upper bound, the histogram's resolution
        result["hub_end_to_end_p99_le_ms"] = next((b * 1000 for b in sorted(at_most) if at_most[b] >= 0.99 * count),
                                                  None)
    return result


def _redis_cpu_s(redis_url: str) -> float:
    """CPU the Redis server has used (its main thread and I/O threads, not forked children)."""
    info = redis.Redis.from_url(redis_url).info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _worker_peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _preload(redis_url: str, count: int) -> int:
    store = RedisStore.from_url(redis_url)
    try:
        return await preload_index(store, count, load_settings().pii_secret(), seed=1000 + count)
    finally:
        await store.close()


def _raw_pipe(bootstrap: str, values: list[tuple[bytes | None, bytes]]) -> float:
    """The floor to compare with: a plain confluent-kafka consume -> produce
    loop over the same records on the same broker (no decoding, no state).
    Timed from the first record consumed, so the group join is not counted."""
    from confluent_kafka import Consumer, Producer

    from hub.connectors.kafka import ensure_topics

    source, sink = "bench.raw.in", "bench.raw.out"
    ensure_topics(bootstrap, [source, sink], partitions=1)
    settings = {"bootstrap.servers": bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000}
    producer = Producer(settings)
    for key, value in values:
        producer.produce(source, value, key)
        producer.poll(0)
    producer.flush()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-raw-pipe", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000, "fetch.wait.max.ms": 10})
    consumer.subscribe([source])
    out = Producer(settings)
    moved, started, deadline = 0, None, time.monotonic() + 300
    while moved < len(values) and time.monotonic() < deadline:
        batch = consumer.consume(1000, timeout=0.5)
        if batch and started is None:
            started = time.monotonic()
        for message in batch:
            if message.error() is None:
                out.produce(sink, message.value(), message.key())
                moved += 1
        out.poll(0)
        if batch:
            consumer.commit(asynchronous=True)
    out.flush()
    elapsed = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return moved / elapsed if elapsed > 0 else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="events in the full-speed run (about)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--preload", type=int, default=0, help="customers in the identity index before the run")
    parser.add_argument("--workers", type=int, default=1, help="worker processes in one consumer group")
    parser.add_argument("--engine", choices=["staged", "fused"], default=DEFAULT_ENGINE, help="HUB_ENGINE of the workers")
    parser.add_argument("--rate", type=float, default=None,
                        help="events/s of the steady run (default: half the full speed measured): latency compared "
                             "at one rate across runs")
    args = parser.parse_args()
    os.environ["HUB_ENGINE"] = args.engine  # the workers inherit it

    pipeline = load_pipeline(None)
    now = int(time.time() * 1000)
    persons = max(10, int(args.events / 2.8))
    burst = _encoded(persons, args.seed, now - 86_400_000)
    steady = _encoded(persons // 2, args.seed + 1, now - 3_600_000)
    # the steady run's source ids must not collide with the burst's
    steady = [(t, b"s" + k, v) for t, k, v in steady]
    raw_burst = sum(1 for t, _, _ in burst if t.startswith("raw."))
    raw_steady = sum(1 for t, _, _ in steady if t.startswith("raw."))

    with LocalHub(pipeline, Path(tempfile.mkdtemp(prefix="hub-bench-"))) as hub:
        os.environ.setdefault("HUB_PII_KEY", hub.pii_key)  # the preload (this process) hashes as the workers do
        raw_pipe_per_s = _raw_pipe(hub.bootstrap, [(k, v) for _, k, v in burst])
        print(f"raw pipe (plain confluent-kafka consume -> produce, same broker, same records): "
              f"{raw_pipe_per_s:,.0f} events/s", flush=True)
        preloaded = 0
        if args.preload:
            t0 = time.monotonic()
            preloaded = asyncio.run(_preload(hub.redis_url, args.preload))
            print(f"preloaded {preloaded:,} customers into the identity index in {time.monotonic() - t0:.0f} s",
                  flush=True)
        workers = [hub.worker() for _ in range(args.workers)]
        pids = [worker.process.pid for worker in workers]
        progress = _Progress(hub.bootstrap, pipeline, args.engine)
        watcher = Watcher(hub.bootstrap, pipeline.all_topics(), keep_values=set())
        feeder = Feeder(hub.bootstrap)
        broker_pid = hub.broker.process.pid if hub.broker.process is not None else None
        cpu0 = sum(map(process_cpu_s, pids))
        redis_cpu0 = _redis_cpu_s(hub.redis_url)
        broker_cpu0 = process_cpu_s(broker_pid) if broker_pid else 0.0
        started = time.monotonic()
        for topic, key, value in burst:
            feeder.send(topic, key, value)
        feeder.flush()
        fed_s = time.monotonic() - started
        while not progress.done(watcher, 0, raw_burst) or time.monotonic() - watcher.view.last_arrival < 2.0:
            watcher.poll(0.2)
            if time.monotonic() - started > 900:
                print("gave up: pipeline did not finish within 900 s", file=sys.stderr)
                return 1
        elapsed = watcher.view.last_arrival - started
        burst_cpu = sum(map(process_cpu_s, pids)) - cpu0
        burst_redis_cpu = _redis_cpu_s(hub.redis_url) - redis_cpu0
        burst_broker_cpu = process_cpu_s(broker_pid) - broker_cpu0 if broker_pid else None
        events_per_s = len(burst) / elapsed
        burst_latencies = list(watcher.view.latencies_ms)

        rate = args.rate or events_per_s / 2
        watcher.view.latencies_ms.clear()
        accounted_before = _accounted(watcher.view, pipeline)
        cpu1 = sum(map(process_cpu_s, pids))
        broker_cpu1 = process_cpu_s(broker_pid) if broker_pid else 0.0
        metrics_before = _samples(workers)
        print(f"steady run: {len(steady)} events at {rate:,.0f} events/s", flush=True)
        steady_started = time.monotonic()
        for i, (topic, key, value) in enumerate(steady):
            due = steady_started + i / rate
            while time.monotonic() < due:
                watcher.poll(0.0) if due - time.monotonic() > 0.005 else None
                time.sleep(max(0.0, min(0.002, due - time.monotonic())))
            feeder.send(topic, key, value)
            feeder.producer.poll(0)
        feeder.flush()
        progress.reset()
        while (not progress.done(watcher, accounted_before, raw_steady)
               or time.monotonic() - watcher.view.last_arrival < 2.0):
            watcher.poll(0.2)
        steady_elapsed = time.monotonic() - steady_started
        steady_cpu = sum(map(process_cpu_s, pids)) - cpu1
        # the embedded broker shares the machine: its CPU tells a broker-bound run (docs/performance.md)
        steady_broker_cpu = process_cpu_s(broker_pid) - broker_cpu1 if broker_pid else None
        inside = _breakdown(metrics_before, _samples(workers))
        latencies = watcher.view.latencies_ms
        peak_mb = sum(map(_worker_peak_rss_mb, pids))
        watcher.close()
        # before the broker stops: a producer left behind reconnects, and librdkafka's complaints on stderr
        # would land after the JSON line that must come last
        feeder.close()

    result = {
        "events": len(burst), "workers": args.workers, "engine": args.engine, "preloaded_customers": preloaded,
        "events_per_s": round(events_per_s, 1),
        "feed_s": round(fed_s, 2), "full_speed_s": round(elapsed, 2),
        "worker_cpu_us_per_event": round(burst_cpu / len(burst) * 1e6, 1),
        "redis_cpu_us_per_event": round(burst_redis_cpu / len(burst) * 1e6, 1),
        "full_speed_p50_ms": round(percentile(burst_latencies, 0.5), 1),
        "steady_rate_per_s": round(rate, 1), "steady_events": len(steady),
        "steady_cpu_share": round(steady_cpu / steady_elapsed, 3),
        # None with a broker of your own (HUB_KAFKA__BOOTSTRAP_SERVERS): only the embedded one is measured
        "broker_cpu_us_per_event": round(burst_broker_cpu / len(burst) * 1e6, 1) if burst_broker_cpu is not None else None,
        "steady_broker_cpu_share": round(steady_broker_cpu / steady_elapsed, 3) if steady_broker_cpu is not None else None,
        "p50_ms": round(percentile(latencies, 0.5), 1), "p95_ms": round(percentile(latencies, 0.95), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1), "latency_samples": len(latencies),
        "steady_inside": inside,
        "worker_peak_rss_mb": round(peak_mb, 1),
        "raw_pipe_events_per_s": round(raw_pipe_per_s, 1),
        "share_of_raw_pipe": round(events_per_s / raw_pipe_per_s, 4),
    }
    print(f"full speed: {len(burst)} events in {elapsed:.2f} s = {events_per_s:,.0f} events/s "
          f"({result['worker_cpu_us_per_event']} µs worker CPU per event)")
    print(f"steady at {rate:,.0f} events/s: event-to-target p50 {result['p50_ms']} ms, "
          f"p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms over {len(latencies)} target records"
          f" (mean {statistics.fmean(latencies) if latencies else float('nan'):.1f} ms)")
    print(f"inside the worker over the steady run: {json.dumps(inside)}")
    if result["broker_cpu_us_per_event"] is not None:
        print(f"embedded broker CPU {result['broker_cpu_us_per_event']} µs per event at full speed, "
              f"{result['steady_broker_cpu_share']:.0%} of a core in the steady run")
    redis_us = result["redis_cpu_us_per_event"]
    print(f"Redis server CPU {redis_us} µs per event: the identity index lives in one slot, so one Redis core "
          f"caps a whole deployment near {1e6 / redis_us if redis_us else float('inf'):,.0f} events/s "
          "(more workers do not lift that; sharding the index by blocking key would)")
    print(f"worker peak RSS {peak_mb:.0f} MB; the hub runs at {result['share_of_raw_pipe']:.1%} of the raw pipe")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
