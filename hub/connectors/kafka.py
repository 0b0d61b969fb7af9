"""Kafka through librdkafka (confluent-kafka): the output sink every stage
writes to, and topic administration.

The sink's `flush` waits until every record added is acknowledged and raises
if any delivery failed, so callers commit input offsets only after it returns.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

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


class KafkaTopicSink:
    """Target connector `kafka://host:port[,host:port]/topic`: copies a target's
    records (tombstones and headers included) to a topic, on the same or
    another cluster. Options are librdkafka producer settings."""

    def __init__(self, url: str, **options):
        parts = urlsplit(url)
        self.topic = parts.path.strip("/")
        if not parts.netloc or not self.topic:
            raise ValueError(f"{url}: expected kafka://host:port/topic")
        self.sink = KafkaSink(parts.netloc, **{k: v for k, v in options.items()})

    def setup(self) -> None:
        self.sink.setup()

    def add(self, record) -> None:
        self.sink.add(OutMessage(self.topic, record.key, record.value, list(record.headers or ())))

    def flush(self) -> None:
        self.sink.flush()
def read_topic(bootstrap_servers: str, topic: str, keys: set[bytes] | None = None,
               timeout_s: float = 60.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of `topic` up to its current end (those whose key is in
    `keys`, when given), read without a consumer group: for tools like
    `hub history`, not the hot path."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "hub-reader",
                         "enable.auto.commit": False, "enable.partition.eof": False, "fetch.wait.max.ms": 20})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        found = []
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end within {timeout_s} s")
            for message in consumer.consume(1000, timeout=0.2):
                if message.error():
                    continue
                if keys is None or message.key() in keys:
                    found.append((message.key(), message.value()))
                if message.offset() + 1 >= ends.get(message.partition(), 0):
                    ends.pop(message.partition(), None)
        return found
    finally:
        consumer.close()
