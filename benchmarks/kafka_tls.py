"""What TLS costs the hub's Kafka clients: the same produce-then-read run
through a relay in plain TCP and through the same relay terminating TLS.

The embedded broker speaks plain TCP only, so TLS is terminated by
hub.testing.tls's relay (a separate Python process); to compare like with
like, the plain run goes through the same relay with TLS off, and a direct
run (no relay) is shown for reference. Each run starts its own broker
(advertising the relay's port), produces `--messages` records of
`--value-bytes` with the hub's KafkaSink (librdkafka, acks=all, idempotent)
and reads them back with the hub's MergedReader; it reports records per
second each way and this process's CPU per record (librdkafka's threads
included: the client side of TLS). Rounds alternate plain and TLS, so
machine load drifts over both alike. The last line is JSON.

    python benchmarks/kafka_tls.py --messages 100000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hub.config import KafkaSettings
from hub.connectors.embedded import EmbeddedBroker, free_port
from hub.connectors.kafka import KafkaSink, MergedReader, ensure_topics
from hub.connectors.kafka_security import KafkaConnection, connection
from hub.records import OutMessage
from hub.testing.tls import TestCA, TlsProxy

TOPIC = "bench.tls"


def one_run(kind: str, directory: Path, ca: TestCA, messages: int, value_bytes: int, partitions: int) -> dict:
    relay_port = free_port()
    broker = EmbeddedBroker(advertised_port=None if kind == "direct" else relay_port,
                            log_path=directory / f"broker-{kind}.log").start()
    proxy = None
    try:
        if kind == "direct":
            kafka = KafkaConnection(broker.bootstrap_servers)
        else:
            proxy = TlsProxy(broker.port, ca.issue("broker", ["127.0.0.1"]), port=relay_port,
                             tls=kind == "tls").start()
            kafka = (connection(KafkaSettings(security_protocol="SSL", ssl_ca_location=ca.path), proxy.address)
                     if kind == "tls" else KafkaConnection(proxy.address))
        ensure_topics(kafka, [TOPIC], partitions)
        value = b"v" * value_bytes
        sink = KafkaSink(kafka, linger_ms=5)
        sink.setup()
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(messages):
            sink.add(OutMessage(TOPIC, str(i).encode(), value))
            if i % 10_000 == 0:
                sink.poll()
        sink.flush(300)
        produce_s, produce_cpu = time.perf_counter() - wall, time.process_time() - cpu
        cpu, wall = time.process_time(), time.perf_counter()
        read = sum(1 for _ in MergedReader(kafka, [TOPIC], timeout_s=300))
        read_s, read_cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert read == messages, (kind, read, messages)
        return {"kind": kind, "produce_per_s": messages / produce_s, "read_per_s": messages / read_s,
                "produce_cpu_us": produce_cpu / messages * 1e6, "read_cpu_us": read_cpu / messages * 1e6}
    finally:
        if proxy is not None:
            proxy.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        ca = TestCA(Path(tmp) / "ca")
        runs.append(one_run("direct", Path(tmp), ca, args.messages, args.value_bytes, args.partitions))
        for _ in range(args.rounds):
            for kind in ("plain", "tls"):
                runs.append(one_run(kind, Path(tmp), ca, args.messages, args.value_bytes, args.partitions))
    summary: dict = {"messages": args.messages, "value_bytes": args.value_bytes}
    for kind in ("direct", "plain", "tls"):
        mine = [r for r in runs if r["kind"] == kind]
        summary[kind] = {k: round(sum(r[k] for r in mine) / len(mine), 1) for k in mine[0] if k != "kind"}
        print(f"{kind:>6}: produce {summary[kind]['produce_per_s']:>9,.0f}/s ({summary[kind]['produce_cpu_us']:.1f} µs "
              f"CPU each)  read {summary[kind]['read_per_s']:>9,.0f}/s ({summary[kind]['read_cpu_us']:.1f} µs CPU each)")
    plain, tls = summary["plain"], summary["tls"]
    summary["tls_over_plain"] = {"produce_throughput": round(tls["produce_per_s"] / plain["produce_per_s"], 3),
                                 "read_throughput": round(tls["read_per_s"] / plain["read_per_s"], 3),
                                 "produce_cpu": round(tls["produce_cpu_us"] / plain["produce_cpu_us"], 3),
                                 "read_cpu": round(tls["read_cpu_us"] / plain["read_cpu_us"], 3)}
    print(f"TLS / plain (same relay): throughput produce x{summary['tls_over_plain']['produce_throughput']}, read "
          f"x{summary['tls_over_plain']['read_throughput']}; client CPU per record produce "
          f"x{summary['tls_over_plain']['produce_cpu']}, read x{summary['tls_over_plain']['read_cpu']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
