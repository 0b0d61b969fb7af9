"""Kafka through librdkafka (confluent-kafka): the output sink every stage
writes to, and topic administration.

The sink's `flush` waits until every record added is acknowledged and raises
if any delivery failed, so callers commit input offsets only after it returns.
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from hub import metrics
from hub.records import OutMessage

COMPACTED_PREFIXES = ("customer.golden", "mastered.")


def _count_broker_error(err) -> None:
    """librdkafka reconnects by itself; this makes an outage visible (hub_broker_errors_total)."""
    metrics.BROKER_ERRORS.labels(err.name()).inc()


class DeliveryFailed(RuntimeError):
    """At least one record was not acknowledged by the broker."""


class KafkaSink:
    """A Sink (hub.ports) over one confluent-kafka Producer."""

    def __init__(self, bootstrap_servers: str, linger_ms: int = 5, **extra):
        self.config = {
            "bootstrap.servers": bootstrap_servers,
            "linger.ms": linger_ms,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "none",
            "queue.buffering.max.messages": 1_000_000,
            "error_cb": _count_broker_error,
            **extra,
        }
        self.producer: Producer | None = None
        self._failures: list[str] = []

    def setup(self) -> None:
        if self.producer is None:
            self.producer = Producer(self.config)

    def _on_delivery(self, err, _msg) -> None:
        if err is not None:
            self._failures.append(str(err))

    def add(self, record: OutMessage) -> None:
        while True:
            try:
                self.producer.produce(record.topic, record.value, record.key, headers=record.headers or None,
                                      on_delivery=self._on_delivery)
                return
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain

    def pending(self) -> int:
        return len(self.producer) if self.producer is not None else 0

    def poll(self) -> None:
        if self.producer is not None:
            self.producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        if self.producer is None:
            return
        remaining = self.producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if remaining:
            raise DeliveryFailed(f"{remaining} records not delivered within {timeout_s}s")
        if failures:
            raise DeliveryFailed(f"{len(failures)} records failed: {failures[0]}")


def ensure_topics(bootstrap_servers: str, topics: list[str], partitions: int, timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            existing = set(admin.list_topics(timeout=5).topics)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    if not wanted:
        return []
    new = [NewTopic(t, num_partitions=partitions, replication_factor=1,
                    config={"cleanup.policy": "compact"} if t.startswith(COMPACTED_PREFIXES) else {})
           for t in wanted]
    for topic, future in admin.create_topics(new).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return wanted
