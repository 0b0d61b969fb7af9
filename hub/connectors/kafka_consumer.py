"""A stage's own librdkafka consumer: batches from the topics it reads, handed
to its runner without Faust in between.

Why: Faust's `take()` costs about 130 µs of worker CPU per event of its own
machinery and puts a floor of 37/66 ms (p50/p99) under every pass; librdkafka's
`consume()` hands a whole batch over from C with a floor of a few
milliseconds (docs/performance.md, "Latency"). The source topics carry nearly
all of a worker's events, so the stage that reads them (hub.dataflow: `group`)
takes them here.

The contract is the runner's (hub.runner): `take` a batch, run it, and only
once its outputs are acknowledged `commit` it (or `forget` it, when the
worker stops before). A few batches may be in flight at once (hub.runner.drive
processes the next while the one before is delivered), so a rebalance (which
librdkafka runs inside `consume`) waits, before it gives partitions up, until
every batch taken is committed: what a revoked partition's records did is
committed by the worker that did it, not done again by the next owner.

The consumer's group is its own (`<app_id>.<group>`): Faust's group uses an
assignor of its own that librdkafka's cannot share a group with. When a
partition is first assigned to the new group, it starts where the workers'
Faust group had committed it (`seed_group`), so moving a deployment to this
consumer re-reads nothing. hub.follow reads the offsets of both groups.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from hub.connectors.kafka import _count_broker_error
from hub.connectors.kafka_security import KafkaConnection, as_connection
from hub.records import InMessage

log = logging.getLogger(__name__)

# how long one `take` waits for a first record of a quiet stream before it returns empty (the caller's loop
# then checks whether it should stop)
IDLE_WAIT_S = 0.5
# longest a rebalance waits for the batches in flight to be committed before giving their partitions up (the
# next owner then reads them again, which the stages make harmless): a delivery retrying an outage
REVOKE_WAIT_S = 30.0
# how often the thread that takes reads the partitions' watermarks for `lag` (librdkafka's cached figures)
MARKS_EVERY_S = 0.5


def group_id(app_id: str, group: str) -> str:
    """The consumer group of the stages that read with their own consumer (hub.dataflow.Stage.group)."""
    return f"{app_id}.{group}"


def in_message(message) -> InMessage:
    """A librdkafka message as the stages take it."""
    kind, ms = message.timestamp()
    return InMessage(message.topic(), message.partition(), message.offset(), message.key(), message.value(),
                     ms if kind and ms >= 0 else None, message.headers() or None)


class BatchConsumer:
    """`take()` (blocking: call it from a thread) a batch of at most `batch_size` records, waiting at most
    `batch_wait_s` to fill it once a first record is there; `commit(batch)` once its outputs are delivered."""

    def __init__(self, kafka: "str | KafkaConnection", group: str, topics: list[str], *, batch_size: int,
                 batch_wait_s: float, fetch_wait_ms: int = 10, max_fetch_bytes: int = 1_048_576,
                 session_timeout_s: float = 6.0, seed_group: str | None = None, options: dict | None = None):
        """`options`: librdkafka settings beyond the hub's own, over them (benchmarks and tests: statistics,
        another fetch policy)."""
        self.kafka = as_connection(kafka)
        self.group = group
        self.topics = list(topics)
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.seed_group = seed_group
        self._config = self.kafka.config(**{
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": fetch_wait_ms,
            "max.partition.fetch.bytes": max_fetch_bytes,
            # a bounded prefetch, as Faust's stream buffer was: four batches, at most four partition fetches.
            # Fetching a partition only once what was fetched of it is taken (queued.min.messages 1) took less
            # of the embedded broker's CPU, but events waited longer at half the full rate (docs/performance.md,
            # "Fetching on demand, tried")
            "queued.min.messages": max(1_000, batch_size * 4),
            "queued.max.messages.kbytes": max(1_024, 4 * max_fetch_bytes // 1024),
            "session.timeout.ms": int(session_timeout_s * 1000),
            "heartbeat.interval.ms": int(min(1.0, session_timeout_s / 3) * 1000),
            "error_cb": _count_broker_error,
            **(options or {}),
        })
        self._consumer: Consumer | None = None
        self._assigned: set[tuple[str, int]] = set()
        # per partition assigned here, where the lag counts from: what this consumer committed last, or where
        # the partition started
        self._committed: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # notified as batches taken are committed or forgotten
        self._in_flight = 0  # batches taken, not yet committed nor forgotten
        self._to_commit: dict[tuple[str, int], int] = {}  # committed by the stages, not yet sent
        # per partition assigned here, (low, high) watermarks as the thread that takes last read them: `lag` is
        # asked from the event loop, which must never call librdkafka (see `_read_marks`)
        self._marks: dict[tuple[str, int], tuple[int, int]] = {}
        self._marks_read_at = 0.0

    @property
    def started(self) -> bool:
        return self._consumer is not None

    def start(self) -> None:
        self._consumer = Consumer(self._config)
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)

    # librdkafka calls these inside consume(), on the thread that takes (see the module's docstring)
    def _on_assign(self, consumer, partitions) -> None:
        own = consumer.committed([TopicPartition(tp.topic, tp.partition) for tp in partitions], timeout=10)
        if self.seed_group:
            self._seed([tp for tp in own if tp.offset < 0], partitions)
        consumer.assign(partitions)
        with self._lock:
            self._assigned.update((tp.topic, tp.partition) for tp in partitions)
            # where each partition starts: the lag counts from there until this consumer commits
            self._committed.update({(tp.topic, tp.partition): tp.offset for tp in (*own, *partitions)
                                    if tp.offset >= 0})
        log.info("%s: assigned %s", self.group, ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        with self._settled:  # the batches in flight commit what they did first (the loop commits them)
            if not self._settled.wait_for(lambda: self._in_flight == 0, REVOKE_WAIT_S):
                log.warning("%s: %d batches still in flight when their partitions went", self.group,
                            self._in_flight)
        self._send_commits(asynchronous=False)  # before the next owner reads where they stand
        self._on_lost(consumer, partitions)

    def _on_lost(self, consumer, partitions) -> None:
        """Gone without a rebalance (this consumer was thrown out of the group): nothing can be committed."""
        with self._lock:
            for tp in partitions:
                self._assigned.discard((tp.topic, tp.partition))
                self._committed.pop((tp.topic, tp.partition), None)
        consumer.unassign()

    def _seed(self, fresh: list[TopicPartition], partitions) -> None:
        """A partition this group never committed (`fresh`) starts where the seed group had committed it."""
        if not fresh:
            return
        seed = Consumer(self.kafka.config(**{"group.id": self.seed_group, "enable.auto.commit": False}))
        try:
            seeded = {(tp.topic, tp.partition): tp.offset for tp in seed.committed(fresh, timeout=10) if tp.offset >= 0}
        finally:
            seed.close()
        for tp in partitions:
            offset = seeded.get((tp.topic, tp.partition))
            if offset is not None:
                tp.offset = offset
        if seeded:
            log.info("%s: %d partitions start where %s left them", self.group, len(seeded), self.seed_group)

    def take(self, idle_wait_s: float = IDLE_WAIT_S) -> list[InMessage]:
        consumer = self._consumer
        self._send_commits()
        first = consumer.consume(1, idle_wait_s)
        self._read_marks(consumer)
        if not first:
            return []
        rest = consumer.consume(self.batch_size - 1, self.batch_wait_s) if self.batch_size > 1 else []
        batch = []
        for message in (*first, *rest):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    _count_broker_error(error)
                    log.warning("%s: %s", self.group, error.str())
                continue
            batch.append(in_message(message))
        if batch:
            with self._lock:
                self._in_flight += 1
        return batch

    def commit(self, batch: list[InMessage]) -> None:
        """Commit past every record of `batch` on the partitions still assigned here: noted now, sent by the
        thread that takes (at its next `take`, or before a rebalance gives the partitions up), so librdkafka
        is only ever called from that thread (a commit from another thread during a rebalance can hang).
        Asynchronously: a commit lost to a crash means those records are read again, which the stages make
        harmless."""
        ends: dict[tuple[str, int], int] = {}
        for message in batch:
            tp = (message.topic, message.partition)
            if message.offset >= ends.get(tp, -1):
                ends[tp] = message.offset + 1
        with self._settled:
            for tp, offset in ends.items():
                if tp in self._assigned and offset > self._to_commit.get(tp, -1):
                    self._committed[tp] = self._to_commit[tp] = offset
            self._in_flight = max(0, self._in_flight - 1)
            self._settled.notify_all()

    def _send_commits(self, asynchronous: bool = True) -> None:
        with self._lock:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._to_commit.items() if (t, p) in self._assigned]
            self._to_commit = {}
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
            except KafkaException as exc:  # the records are read again: the stages make that harmless
                _count_broker_error(exc.args[0])
                log.warning("%s: commit failed: %s", self.group, exc)

    def _read_marks(self, consumer: Consumer) -> None:
        """The assigned partitions' watermarks, read here on the thread that takes. Asked of librdkafka from
        another thread (the event loop's lag timer) while this one waits inside a rebalance for the batches in
        flight, `get_watermark_offsets` blocked until the wait gave up (REVOKE_WAIT_S): the event loop stood
        still, so the batches it was delivering never committed, and a worker joining stalled both for 30 s."""
        now = time.monotonic()
        if now - self._marks_read_at < MARKS_EVERY_S:
            return
        self._marks_read_at = now
        with self._lock:
            assigned = list(self._assigned)
        marks = {}
        for topic, partition in assigned:
            try:
                marks[(topic, partition)] = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                                          cached=True)
            except Exception:  # revoked meanwhile, or nothing fetched yet
                continue
        with self._lock:
            self._marks = marks

    def lag(self) -> dict[str, int]:
        """Per topic, the records of the partitions assigned here past what was committed (the high
        watermark as of the last fetch, read at most MARKS_EVERY_S before by the thread that takes; a
        partition never committed counts from its first record, where `auto.offset.reset` starts it).
        Calls nothing in librdkafka: safe from the event loop, even during a rebalance."""
        if self._consumer is None:
            return {}
        with self._lock:
            assigned = sorted(self._assigned)
            committed = dict(self._committed)
            marks = dict(self._marks)
        lag: dict[str, int] = {}
        for topic, partition in assigned:
            if (topic, partition) not in marks:
                continue
            low, high = marks[(topic, partition)]
            offset = committed.get((topic, partition), low)
            if high < 0 or offset < 0:  # nothing fetched yet
                continue
            lag[topic] = lag.get(topic, 0) + max(0, high - offset)
        return lag

    def forget(self, batch: list[InMessage]) -> None:
        """A batch taken that will not be committed (the worker stops): a rebalance no longer waits for it."""
        with self._settled:
            self._in_flight = max(0, self._in_flight - 1)
            self._settled.notify_all()

    def close(self) -> None:
        """Leave the group at once (its partitions go to the other workers without waiting for a timeout);
        what was taken and not committed is read again by their next owner."""
        with self._settled:
            self._in_flight = 0
        if self._consumer is not None:
            self._send_commits(asynchronous=False)
            self._consumer.close()
            self._consumer = None
