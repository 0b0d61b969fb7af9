"""The stage runner against outputs it cannot deliver: an outage is retried
(and reported by /health once it lasts), a record too large for the broker
is dead-lettered at once and the stage moves on (issue 20, finding 1)."""

from __future__ import annotations

import asyncio
import time

from hub import runner
from hub.connectors.kafka import DeliveryFailed, MessageTooLarge
from hub.records import ERROR_REASON, InMessage, OutMessage
from hub.runner import StageRunner
from hub.stages import StageOutput


class FakeSink:
    """Acknowledges what it gets, after `outages` failed flushes; refuses values over `max_message_bytes`."""

    def __init__(self, outages: int = 0, max_message_bytes: int = 1000):
        self.outages = outages
        self.max_message_bytes = max_message_bytes
        self.queued: list[OutMessage] = []
        self.delivered: list[OutMessage] = []
        self.seen_retrying: list[tuple[str | None, float]] = []

    def add(self, message: OutMessage) -> None:
        if len(message.value or b"") > self.max_message_bytes:
            raise MessageTooLarge(f"{len(message.value)} bytes")
        self.queued.append(message)

    def pending(self) -> int:
        return 0

    def poll(self) -> None:
        pass

    def flush(self, timeout_s: float = 0) -> None:
        self.seen_retrying.append(runner.retrying_longest())
        queued, self.queued = self.queued, []
        if self.outages:
            self.outages -= 1
            raise DeliveryFailed("broker unreachable")
        self.delivered.extend(queued)


class EchoStage:
    """Writes each input's value to `out`: a value too large comes back too large."""

    def process(self, batch: list[InMessage]) -> StageOutput:
        return StageOutput([OutMessage("out", m.key, m.value) for m in batch])


def _batch(*values: bytes) -> list[InMessage]:
    return [InMessage("raw.crm", 0, offset, b"k%d" % offset, value) for offset, value in enumerate(values)]


def test_an_outage_is_retried_and_reported_while_it_lasts():
    sink = FakeSink(outages=3)
    stage_runner = StageRunner("ingest", EchoStage(), sink, lambda m: "dlq.crm", is_async=False)
    asyncio.run(stage_runner.run(_batch(b"a", b"b")))
    assert [m.value for m in sink.delivered] == [b"a", b"b"]
    stages = [stage for stage, _ in sink.seen_retrying]
    assert stages == [None, "ingest", "ingest", "ingest"]  # retrying from the first failure on
    assert sink.seen_retrying[-1][1] > 0.25  # backoff 0.1 + 0.2 s at least
    assert runner.retrying_longest() == (None, 0.0)  # delivered: no longer retrying


def test_a_record_too_large_is_dead_lettered_and_the_rest_delivered():
    sink = FakeSink(max_message_bytes=100)
    stage_runner = StageRunner("ingest", EchoStage(), sink, lambda m: "dlq.crm", is_async=False)
    asyncio.run(asyncio.wait_for(stage_runner.run(_batch(b"small", b"x" * 50, b"y" * 500, b"last")), timeout=10))
    out = [m.value for m in sink.delivered if m.topic == "out"]
    # at least once: what was queued before the refusal goes out too, and again when the batch is split
    assert set(out) == {b"small", b"x" * 50, b"last"} and out[-3:] == [b"small", b"x" * 50, b"last"]
    (letter,) = [m for m in sink.delivered if m.topic == "dlq.crm"]
    # the dead letter would be too large itself: kept without its value, its headers say where it lies
    assert letter.value is None and dict(letter.headers)[ERROR_REASON] == b"output_too_large"
    assert dict(letter.headers)["hub.error.offset"] == b"2"
    assert runner.retrying_longest() == (None, 0.0)


class SlowAckSink(FakeSink):
    """Holds every batch's records pending for `ack_s` before the broker acknowledges them."""

    def __init__(self, ack_s: float):
        super().__init__()
        self.ack_s = ack_s
        self.acked_at = 0.0

    def add(self, message: OutMessage) -> None:
        super().add(message)
        self.acked_at = time.monotonic() + self.ack_s

    def pending(self) -> int:
        return len(self.queued) if time.monotonic() < self.acked_at else 0


def test_the_wait_for_the_brokers_acknowledgement_is_measured_per_batch():
    from hub import metrics

    def delivery(stage: str) -> tuple[float, float]:
        return (metrics.REGISTRY.get_sample_value("hub_delivery_seconds_count", {"stage": stage}) or 0.0,
                metrics.REGISTRY.get_sample_value("hub_delivery_seconds_sum", {"stage": stage}) or 0.0)

    count0, sum0 = delivery("slow_ack")
    stage_runner = StageRunner("slow_ack", EchoStage(), SlowAckSink(0.2), lambda m: "dlq.crm", is_async=False)
    asyncio.run(stage_runner.run(_batch(b"a", b"b")))
    asyncio.run(stage_runner.run(_batch(b"c")))
    count, total = delivery("slow_ack")
    assert count - count0 == 2  # one observation per batch
    assert 0.4 <= total - sum0 < 2.0  # both waits, 0.2 s each


class ScriptedConsumer:
    """A stage's own consumer (hub.runner.drive) in memory: hands out `batches` in turn, raising a KafkaException
    instead where a batch is None; records what was committed and how often it was (re)started and closed."""

    def __init__(self, batches, sink: FakeSink):
        self.batches = list(batches)
        self.sink = sink
        self.started = False
        self.starts = self.closes = 0
        self.committed: list[tuple[list[int], int]] = []  # (offsets, outputs acknowledged by then)

    def start(self) -> None:
        self.started = True
        self.starts += 1

    def take(self):
        from confluent_kafka import KafkaError, KafkaException

        if not self.batches:
            time.sleep(0.01)
            return []
        batch = self.batches.pop(0)
        if batch is None:
            raise KafkaException(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
        return batch

    def commit(self, batch) -> None:
        self.committed.append(([m.offset for m in batch], len(self.sink.delivered)))

    def forget(self, batch) -> None:
        pass

    def close(self) -> None:
        self.started = False
        self.closes += 1


def test_a_stage_with_its_own_consumer_commits_only_what_was_delivered_and_outlives_a_failed_consumer():
    async def scenario():
        sink = FakeSink(outages=1)
        stage_runner = StageRunner("hot", EchoStage(), sink, lambda m: "dlq.crm", is_async=False)
        consumer = ScriptedConsumer([_batch(b"a", b"b"), None, _batch(b"c", b"d", b"e")], sink)
        retrying = []
        task = asyncio.ensure_future(runner.drive(consumer, stage_runner))
        deadline = time.monotonic() + 10
        while len(consumer.committed) < 2 and time.monotonic() < deadline:
            retrying.append("hot" in runner.RETRYING_SINCE)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return sink, consumer, retrying

    sink, consumer, retrying = asyncio.run(scenario())
    # the first batch is committed only once its delivery, retried through an outage, went through
    assert consumer.committed == [([0, 1], 2), ([0, 1, 2], 5)]
    assert [m.value for m in sink.delivered] == [b"a", b"b", b"c", b"d", b"e"]
    # the consumer that failed was closed and started again, the stage marked retrying meanwhile
    assert consumer.starts == 2 and consumer.closes == 2  # the second close: cancelled, it leaves its group
    assert any(retrying) and "hot" not in runner.RETRYING_SINCE


class _Report:
    def __init__(self, code: int):
        self._code = code

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return f"error {self._code}"


class TopicAckProducer:
    """Stands for librdkafka's producer: records of a topic in `held` stay unacknowledged; `poll` reports
    the others, as failed when their topic is in `failing`."""

    def __init__(self):
        self.held: set[str] = set()
        self.failing: set[str] = set()
        self.outstanding: list[tuple[str, object]] = []

    def produce(self, topic, value, key, headers=None, on_delivery=None) -> None:
        self.outstanding.append((topic, on_delivery))

    def poll(self, _timeout=0) -> int:
        ready = [(t, cb) for t, cb in self.outstanding if t not in self.held]
        self.outstanding = [(t, cb) for t, cb in self.outstanding if t in self.held]
        for topic, callback in ready:
            callback(_Report(-1) if topic in self.failing else None, None)
        return len(ready)

    def __len__(self) -> int:
        return len(self.outstanding)

    def flush(self, _timeout=0) -> int:
        self.poll()
        return len(self)


def test_a_pass_waits_for_its_own_records_not_for_another_pass_sharing_the_producer():
    from hub.connectors.kafka import KafkaSink

    async def scenario():
        sink = KafkaSink("127.0.0.1:9")  # never connects: the producer is stood in for
        sink.producer = producer = TopicAckProducer()
        producer.held.add("slow")
        slow = asyncio.ensure_future(runner.deliver(sink, StageOutput([OutMessage("slow", b"k", b"v")] * 3)))
        await asyncio.sleep(0.01)
        assert not slow.done() and sink.pending() == 3
        # another pass's records are acknowledged while the first's are not: it is done, they still wait
        await asyncio.wait_for(runner.deliver(sink, StageOutput([OutMessage("fast", b"k", b"v")] * 2)), 1.0)
        assert not slow.done()
        # a failure is reported to the pass whose record failed, and to it alone
        producer.failing.add("bad")
        try:
            await asyncio.wait_for(runner.deliver(sink, StageOutput([OutMessage("bad", b"k", b"v")])), 1.0)
            raise AssertionError("a failed record must fail its pass")
        except DeliveryFailed:
            pass
        assert not slow.done()
        producer.held.clear()
        await asyncio.wait_for(slow, 1.0)  # and the first pass saw no other pass's failure
        sink.flush(0)  # nor does the producer-wide flush: each failure went to its pass

    asyncio.run(scenario())


def test_the_next_batch_is_processed_while_the_one_before_is_delivered_and_commits_keep_their_order():
    from hub.connectors.kafka import KafkaSink

    class ToTopicOfValue:
        """Writes each record to the topic its value names; awaits mid-pass, to show passes never overlap."""

        def __init__(self):
            self.processed: list[list[bytes]] = []
            self.processing = self.most_at_once = 0

        async def process(self, batch):
            self.processing += 1
            self.most_at_once = max(self.most_at_once, self.processing)
            await asyncio.sleep(0.02)
            self.processing -= 1
            self.processed.append([m.value for m in batch])
            return StageOutput([OutMessage(m.value.decode(), m.key, m.value) for m in batch])

    class Consumer:
        def __init__(self, batches):
            self.batches, self.started, self.committed = list(batches), False, []

        def start(self):
            self.started = True

        def take(self):
            if not self.batches:
                time.sleep(0.01)
                return []
            return self.batches.pop(0)

        def commit(self, batch):
            self.committed.append([m.value for m in batch])

        def forget(self, batch):
            pass

        def close(self):
            self.started = False

    async def until(condition, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)

    async def scenario():
        sink = KafkaSink("127.0.0.1:9")
        sink.producer = producer = TopicAckProducer()
        producer.held.add("slow")
        stage = ToTopicOfValue()
        consumer = Consumer([_batch(b"slow"), _batch(b"fast", b"fast"), _batch(b"third")])
        task = asyncio.ensure_future(runner.drive(consumer, StageRunner("hot", stage, sink, lambda m: "dlq", True)))
        # the second batch is processed and delivered while the first waits for the broker...
        await until(lambda: stage.processed == [[b"slow"], [b"fast", b"fast"]] and len(producer) == 1)
        await asyncio.sleep(0.1)
        # ...but committed only after it; and no third batch is taken while two are in flight
        assert consumer.committed == [] and len(stage.processed) == 2
        producer.held.clear()
        await until(lambda: len(consumer.committed) == 3)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert consumer.committed == [[b"slow"], [b"fast", b"fast"], [b"third"]]
        assert stage.most_at_once == 1

    asyncio.run(scenario())
