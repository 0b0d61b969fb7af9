"""The embedded broker alone: how a plain consumer's fetch slows down as one
partition holds more record batches.

Tansu's memory storage engine (the embedded broker, `hub.connectors.embedded`)
keeps every produced batch as its own object and, for every fetch that is
behind the high watermark, lists all of the partition's batch objects before
reading the ones asked for; it never deletes any. This starts an embedded
broker, produces `--records-per-batch` records per batch (one flush per
batch) into one topic of `--partitions` partitions, and at each mark of
stored batches times a fresh confluent-kafka consumer's first fetch of the
last few batches of partition 0 and the broker CPU that fetch took. Nothing
of the hub runs. The last line is JSON.

    python benchmarks/broker_fetch.py --marks 5000,10000,15000,17500,20000,22500
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from hub.connectors.embedded import EmbeddedBroker
from hub.connectors.kafka import ensure_topics
from hub.testing.harness import process_cpu_s, process_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--marks", default="5000,10000,15000,17500,20000,22500",
                        help="batches stored per partition at which to time a fetch (increasing)")
    parser.add_argument("--records-per-batch", type=int, default=1)
    parser.add_argument("--value-bytes", type=int, default=600)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=30.0, help="give up on a fetch after this long (and stop)")
    args = parser.parse_args()

    marks = [int(m) for m in args.marks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "broker.log").start()
        pid = broker.process.pid
        results = []
        try:
            ensure_topics(broker.bootstrap_servers, ["bench"], args.partitions)
            producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0,
                                 "enable.idempotence": True})
            value = b"x" * args.value_bytes
            per_partition = 0
            for mark in marks:
                while per_partition < mark:
                    for partition in range(args.partitions):
                        for _ in range(args.records_per_batch):
                            producer.produce("bench", value, b"k", partition=partition)
                        producer.flush()
                    per_partition += 1
                stored = per_partition * args.records_per_batch
                consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "broker-fetch",
                                     "enable.auto.commit": False, "fetch.wait.max.ms": 10,
                                     "socket.timeout.ms": int(args.timeout_s * 1000) + 30_000})
                consumer.assign([TopicPartition("bench", 0, stored - 10 * args.records_per_batch)])
                cpu0, t0, got = process_cpu_s(pid), time.monotonic(), 0
                while not got and time.monotonic() - t0 < args.timeout_s:
                    got = sum(1 for m in consumer.consume(1, timeout=0.02) if not m.error())
                fetch_s, fetch_cpu_s = time.monotonic() - t0, process_cpu_s(pid) - cpu0
                consumer.close()
                row = {"batches_per_partition": per_partition, "records_per_partition": stored,
                       "stored_mb": round(stored * args.partitions * args.value_bytes / 2**20, 1),
                       "broker_rss_mb": round(process_rss_mb(pid)),
                       "fetch_ms": round(fetch_s * 1000, 1) if got else None,
                       "broker_cpu_ms": round(fetch_cpu_s * 1000)}
                results.append(row)
                answer = f"{row['fetch_ms']} ms" if got else f"no answer within {args.timeout_s:.0f} s"
                print(f"{per_partition:>7,} batches ({stored:,} records) per partition, broker RSS "
                      f"{row['broker_rss_mb']} MB: fetch of the last 10 batches {answer}, broker CPU "
                      f"{row['broker_cpu_ms']} ms", flush=True)
                if not got:
                    break
            producer.flush(10)
            producer = None  # gone before the broker, or it reconnects noisily
        finally:
            broker.stop()
    print(json.dumps({"records_per_batch": args.records_per_batch, "value_bytes": args.value_bytes,
                      "partitions": args.partitions, "marks": results}))


if __name__ == "__main__":
    main()
