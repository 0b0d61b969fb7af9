"""The source stage's consumer alone (hub.connectors.kafka_consumer): how long
a record waits between its produce and its batch reaching the stage, on the
embedded broker, at a steady rate, with the stage doing nothing or burning
`--work-us` of CPU per record. The floor under the hub's event-to-target
latency that the consumer itself sets.

    python benchmarks/source_consumer.py --rate 400 --seconds 15
    python benchmarks/source_consumer.py --rate 400 --work-us 1000
    python benchmarks/source_consumer.py --fetch-wait-ms 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import threading
import time

from confluent_kafka import Producer

from hub.connectors.embedded import EmbeddedBroker
from hub.connectors.kafka import ensure_topics
from hub.connectors.kafka_consumer import BatchConsumer
from hub.testing.harness import percentile


def run(rate: float, seconds: float, work_us: float, fetch_wait_ms: int, batch: int, batch_wait_s: float,
        partitions: int = 4) -> dict:
    broker = EmbeddedBroker().start()
    try:
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, ["raw.bench"], partitions)
        consumer = BatchConsumer(bootstrap, "bench-source-consumer", ["raw.bench"], batch_size=batch,
                                 batch_wait_s=batch_wait_s, fetch_wait_ms=fetch_wait_ms)
        consumer.start()
        while not consumer._assigned:  # the group joined: the latency measured is not the join's
            consumer.take(0.2)
        stop = threading.Event()

        def feed() -> None:
            producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
            started, sent = time.perf_counter(), 0
            while not stop.is_set():
                sent += 1
                producer.produce("raw.bench", value=repr(time.time()).encode(), partition=sent % partitions)
                producer.poll(0)
                wait = started + sent / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            producer.flush(10)

        feeder = threading.Thread(target=feed)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        feeder.start()
        waits_ms: list[float] = []
        sizes: list[int] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            taken = consumer.take(0.5)
            now = time.time()
            if not taken:
                continue
            sizes.append(len(taken))
            waits_ms.extend((now - float(m.value)) * 1000 for m in taken)
            burn_until = time.perf_counter() + len(taken) * work_us / 1e6
            while time.perf_counter() < burn_until:
                pass
            consumer.commit(taken)
        stop.set()
        feeder.join()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        consumer.close()
    finally:
        broker.stop()
    cpu_s = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {"rate_per_s": rate, "records": len(waits_ms), "work_us_per_record": work_us,
            "fetch_wait_ms": fetch_wait_ms, "mean_batch": round(statistics.fmean(sizes), 1) if sizes else 0,
            "p50_ms": round(percentile(waits_ms, 0.5), 1), "p95_ms": round(percentile(waits_ms, 0.95), 1),
            "p99_ms": round(percentile(waits_ms, 0.99), 1),
            "process_cpu_us_per_record": round(cpu_s / max(1, len(waits_ms)) * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=400.0, help="records/s produced")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--work-us", type=float, default=0.0, help="CPU the stage burns per record")
    parser.add_argument("--fetch-wait-ms", type=int, default=10, help="HUB_KAFKA__FETCH_WAIT_MS")
    parser.add_argument("--batch", type=int, default=500, help="HUB_BATCH_SIZE")
    parser.add_argument("--batch-wait-s", type=float, default=0.005, help="HUB_BATCH_WAIT_S")
    args = parser.parse_args()
    result = run(args.rate, args.seconds, args.work_us, args.fetch_wait_ms, args.batch, args.batch_wait_s)
    print(f"{result['records']} records at {args.rate:.0f}/s, {args.work_us:.0f} µs of work each: produce to "
          f"stage p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms "
          f"(mean batch {result['mean_batch']}; the process, feeder included, "
          f"{result['process_cpu_us_per_record']} µs of CPU per record)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
