"""What the embedded broker spends serving the source consumer's fetches, and what takes it down.

A fetch request names every partition its consumer holds, and the embedded broker pays for each one it
names. Each run feeds `--rate` records/s to four source topics of four partitions (fresh topics per run:
the embedded broker slows as a partition grows, benchmarks/broker_fetch.py, so runs must not share them)
and takes them with the hub's own consumer (hub.connectors.kafka_consumer.BatchConsumer) as a worker does:
take a batch, work `--pass-ms` on it, commit it. The variants, in turn:

  prefetch     the 16 source partitions, fetched again while records wait, up to 2,000 (the consumer as it
               is: queued.min.messages 2,000)
  on-demand    the same, each partition fetched again only once what was fetched of it is taken
               (queued.min.messages 1, fetch.queue.backoff.ms 5; tried, not kept: docs/performance.md)
  with-quiet   prefetch, with 8 empty partitions more (two topics of four): the consent and survey
               topics the fused engine's source consumer reads too
  quiet-apart  those 8 on a second consumer in the same group, fetch.wait.max.ms 100 (tried, not kept)
  fill-wait    prefetch, each fetch held by the broker until it fills 64 KiB or fetch.wait.max.ms (10 ms)
               passes (fetch.min.bytes 65,536; tried, not kept: docs/performance.md)

It reports, per run and as the mean per variant, the broker's share of a core, this process's (the
consumer and the feeding producer), the fetch requests per second the source consumer sent, and the
latency from produce to `take` (p50, p99). Variants alternate (the order reversed every other round),
so a drift of the machine falls on each alike.

    python benchmarks/source_fetch.py --rate 250 --rounds 3 [--variants prefetch on-demand fill-wait]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Producer  # noqa: E402

from hub.connectors.embedded import EmbeddedBroker  # noqa: E402
from hub.connectors.kafka import ensure_topics  # noqa: E402
from hub.connectors.kafka_consumer import BatchConsumer  # noqa: E402
from hub.testing.harness import percentile, process_cpu_s  # noqa: E402

VARIANTS = ("prefetch", "on-demand", "with-quiet", "quiet-apart", "fill-wait")
# what a variant sets beyond the hub's own consumer
OPTIONS = {"on-demand": {"queued.min.messages": 1, "fetch.queue.backoff.ms": 5}, "fill-wait": {"fetch.min.bytes": 65_536}}


def run(broker: EmbeddedBroker, variant: str, tag: str, rate: float, seconds: float, pass_s: float) -> dict:
    bootstrap = broker.bootstrap_servers
    sources = [f"raw.s{i}.{tag}" for i in range(4)]
    quiet = [f"consent.{tag}", f"survey.{tag}"]
    ensure_topics(bootstrap, [*sources, *quiet], 4)
    fetches = {"count": 0}

    def on_stats(raw: str) -> None:
        fetches["count"] = sum(b["req"].get("Fetch", 0) for b in json.loads(raw)["brokers"].values())

    def consumer(topics: list[str], fetch_wait_ms: int, **options) -> BatchConsumer:
        made = BatchConsumer(bootstrap, f"bench-fetch.{tag}", topics, batch_size=500, batch_wait_s=0.05,
                             fetch_wait_ms=fetch_wait_ms, options=options)
        made.start()
        return made

    # statistics on the busy consumer: its fetch requests are counted
    busy = consumer(sources + (quiet if variant == "with-quiet" else []), 10,
                    **{"statistics.interval.ms": 1000, "stats_cb": on_stats}, **OPTIONS.get(variant, {}))
    apart = consumer(quiet, 100) if variant == "quiet-apart" else None
    latencies: list[float] = []
    stop = threading.Event()

    def feed() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
        sent, started = 0, time.monotonic()
        while not stop.is_set():
            producer.produce(sources[sent % 4], f"{time.time():.6f}".encode().ljust(300), key=str(sent).encode())
            sent += 1
            producer.poll(0)
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        producer.flush(10)

    def take(for_s: float, timed: bool) -> int:
        taken, until = 0, time.monotonic() + for_s
        while time.monotonic() < until:
            batch = busy.take(0.05)
            if apart is not None:
                quiet_batch = apart.take(0)
                if quiet_batch:
                    apart.commit(quiet_batch)
            if not batch:
                continue
            if timed:
                now = time.time()
                latencies.extend(now - float(m.value) for m in batch)
            time.sleep(pass_s)  # the pass's work, while records go on arriving
            busy.commit(batch)
            taken += len(batch)
        return taken

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        take(5.0, False)  # the group settled, the feed flowing
        broker0, own0 = process_cpu_s(broker.process.pid), process_cpu_s(os.getpid())
        fetches0, started = fetches["count"], time.monotonic()
        taken = take(seconds, True)
        elapsed = time.monotonic() - started
        return {"variant": variant,
                "broker_share": round((process_cpu_s(broker.process.pid) - broker0) / elapsed, 3),
                "client_share": round((process_cpu_s(os.getpid()) - own0) / elapsed, 3),
                "busy_fetches_per_s": round((fetches["count"] - fetches0) / elapsed),
                "taken_per_s": round(taken / elapsed), "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
                "p99_ms": round(percentile(latencies, 0.99) * 1000, 1)}
    finally:
        stop.set()
        feeder.join()
        busy.close()
        if apart is not None:
            apart.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=250.0, help="records/s fed to the source topics")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured per run")
    parser.add_argument("--rounds", type=int, default=3, help="each variant runs once per round")
    parser.add_argument("--pass-ms", type=float, default=12.0, help="work per batch taken, as a worker's pass")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    variants = tuple(args.variants)
    broker = EmbeddedBroker().start()
    runs = []
    try:
        for round_ in range(args.rounds):
            for variant in (variants if round_ % 2 == 0 else tuple(reversed(variants))):
                result = run(broker, variant, f"{variant}{round_}", args.rate, args.seconds, args.pass_ms / 1000)
                runs.append(result)
                print(f"{variant:12} broker {result['broker_share']:.3f} of a core, client "
                      f"{result['client_share']:.3f}, {result['busy_fetches_per_s']} fetches/s, "
                      f"{result['taken_per_s']} records/s, to take p50 {result['p50_ms']} p99 {result['p99_ms']} ms", flush=True)
    finally:
        broker.stop()
    summary = {v: {key: round(sum(r[key] for r in runs if r["variant"] == v) / args.rounds, 3)
                   for key in ("broker_share", "client_share", "busy_fetches_per_s", "p50_ms", "p99_ms")} for v in variants}
    print(json.dumps({"rate": args.rate, "seconds": args.seconds, "rounds": args.rounds, "pass_ms": args.pass_ms,
                      "mean": summary,
                      "runs": runs}))


if __name__ == "__main__":
    main()
