"""Kafka through librdkafka (confluent-kafka): the output sink every stage
writes to, and topic administration.

The sink's `flush` waits until every record added is acknowledged and raises
if any delivery failed, so callers commit input offsets only after it returns.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from hub import metrics
from hub.records import InMessage, OutMessage

COMPACTED_PREFIXES = ("customer.golden", "mastered.")


def _count_broker_error(err) -> None:
    """librdkafka reconnects by itself; this makes an outage visible (hub_broker_errors_total)."""
    metrics.BROKER_ERRORS.labels(err.name()).inc()


class DeliveryFailed(RuntimeError):
    """At least one record was not acknowledged by the broker."""


# librdkafka's own default for message.max.bytes; brokers default to about the same
MAX_MESSAGE_BYTES = 1_000_000


class MessageTooLarge(ValueError):
    """A record larger than the broker accepts. Not an outage: retrying cannot
    help, so the record that produced it is dead-lettered and the stage moves on."""


class KafkaSink:
    """A Sink (hub.ports) over one confluent-kafka Producer."""

    def __init__(self, bootstrap_servers: str, linger_ms: int = 5, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 **extra):
        self.max_message_bytes = max_message_bytes
        self.config = {
            "bootstrap.servers": bootstrap_servers,
            "linger.ms": linger_ms,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "none",
            "queue.buffering.max.messages": 1_000_000,
            "message.max.bytes": max(max_message_bytes, 1000),
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
            self._failures.append(err)

    def add(self, record: OutMessage) -> None:
        size = len(record.value or b"") + len(record.key or b"")
        if size > self.max_message_bytes:
            raise MessageTooLarge(f"{size} bytes for {record.topic}, more than the {self.max_message_bytes} allowed")
        while True:
            try:
                self.producer.produce(record.topic, record.value, record.key, headers=record.headers or None,
                                      on_delivery=self._on_delivery)
                return
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise MessageTooLarge(f"{size} bytes for {record.topic}: {exc.args[0].str()}") from None
                raise

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
        too_large = [f for f in failures if f.code() == KafkaError.MSG_SIZE_TOO_LARGE]
        if too_large:  # the broker's limit is below ours
            raise MessageTooLarge(f"{len(too_large)} records refused by the broker: {too_large[0].str()}")
        if failures:
            raise DeliveryFailed(f"{len(failures)} records failed: {failures[0].str()}")


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


def _reader(bootstrap_servers: str, **extra):
    from confluent_kafka import Consumer

    # partition EOF, not the high watermark, says where a partition ends: Tansu
    # reports the watermark as the last batch's base offset + 1
    return Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "hub-reader", "enable.auto.commit": False,
                     "enable.partition.eof": True, "fetch.wait.max.ms": 20, **extra})


def _partitions(consumer, topics: list[str]) -> list[tuple[str, int]]:
    metadata = consumer.list_topics(timeout=10).topics
    return [(t, p) for t in dict.fromkeys(topics) if t in metadata for p in sorted(metadata[t].partitions)]


def read_topic(bootstrap_servers: str, topic: str, keys: set[bytes] | None = None,
               timeout_s: float = 60.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of `topic` up to its current end (those whose key is in
    `keys`, when given), read without a consumer group: for tools like
    `hub history`, not the hot path."""
    return [(m.key, m.value) for m in MergedReader(bootstrap_servers, [topic], timeout_s=timeout_s)
            if keys is None or m.key in keys]


def order_key(message: InMessage) -> tuple:
    """The replay order: by timestamp, then where the record sits. It depends
    only on what the topics hold, never on which partition a fetch returned first."""
    return (message.timestamp_ms if message.timestamp_ms is not None else -1, message.topic, message.partition,
            message.offset)


class MergedReader:
    """Every partition of `topics` from the beginning up to where it ends when
    first reached, as one stream in `order_key` order: a k-way merge, each
    partition in offset order (as Kafka Streams merges a task's partitions).
    One consumer, no group; a partition whose buffer fills is paused, so memory
    stays bounded by `buffer` records per partition. Records written to a
    partition after its end was reached are not read."""

    def __init__(self, bootstrap_servers: str, topics: list[str], buffer: int = 10_000, timeout_s: float | None = None):
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.buffer = buffer
        self.timeout_s = timeout_s
        self.ends: dict[tuple[str, int], int] = {}  # where each partition ended

    def __iter__(self):
        import heapq
        from collections import deque

        from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

        consumer = _reader(self.bootstrap_servers)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        try:
            parts = _partitions(consumer, self.topics)
            buffers = {tp: deque() for tp in parts}
            paused: set = set()
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])

            def fill() -> None:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{self.topics} not read to the end within {self.timeout_s} s")
                for message in consumer.consume(1000, timeout=0.2):
                    tp = (message.topic(), message.partition())
                    if tp in self.ends:
                        continue  # past the end this read stopped at
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            self.ends[tp] = message.offset()
                            continue
                        raise KafkaException(error)
                    timestamp_type, timestamp = message.timestamp()
                    buffers[tp].append(InMessage(tp[0], tp[1], message.offset(), message.key(), message.value(),
                                                 timestamp if timestamp_type else None,
                                                 list(message.headers() or ()) or None))
                    if len(buffers[tp]) >= self.buffer and tp not in paused:
                        consumer.pause([TopicPartition(*tp)])
                        paused.add(tp)
                for tp in [tp for tp in paused if len(buffers[tp]) < self.buffer // 2]:
                    consumer.resume([TopicPartition(*tp)])
                    paused.discard(tp)

            def partition(tp):
                queue = buffers[tp]
                while True:
                    while not queue:
                        if tp in self.ends:
                            return
                        fill()
                    yield queue.popleft()

            yield from heapq.merge(*(partition(tp) for tp in parts), key=order_key)
        finally:
            consumer.close()


def end_offsets(bootstrap_servers: str, topics: list[str], timeout_s: float = 60.0) -> dict[tuple[str, int], int]:
    """Where each partition of `topics` ends now (read forward from the high
    watermark to partition EOF, so it is right on Tansu too)."""
    from confluent_kafka import KafkaError, TopicPartition

    consumer = _reader(bootstrap_servers)
    try:
        parts = _partitions(consumer, topics)
        starts = {tp: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10)[1] for tp in parts}
        consumer.assign([TopicPartition(t, p, max(starts[(t, p)] - 1, 0)) for t, p in parts])
        ends: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + timeout_s
        while len(ends) < len(parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end found for {sorted(set(parts) - ends.keys())} on {bootstrap_servers}")
            for message in consumer.consume(1000, timeout=0.2):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    ends[(message.topic(), message.partition())] = message.offset()
                elif error is not None:
                    raise KafkaException(error)
        return ends
    finally:
        consumer.close()


def commit_group(bootstrap_servers: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Set a consumer group's committed offsets (the group must have no members running)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())], asynchronous=False)
    finally:
        consumer.close()
