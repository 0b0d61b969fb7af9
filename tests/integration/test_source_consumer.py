"""The source stage's own librdkafka consumer (hub.connectors.kafka_consumer) on the embedded broker:
batches bounded by the batch size, offsets committed only when asked (after delivery), a new group
starting where the workers' Faust group left each partition, the lag it reports, and the workers'
progress read over both groups (hub.follow)."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer

from hub.connectors.embedded import EmbeddedBroker
from hub.connectors.kafka import commit_group, end_offsets, ensure_topics
from hub.connectors.kafka_consumer import BatchConsumer, group_id
from hub.dataflow import SOURCES, groups_of, worker_groups
from hub.follow import behind, committed_offsets

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    started = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log").start()
    yield started.bootstrap_servers
    started.stop()


def _produce(bootstrap: str, topic: str, count: int, partitions: int = 2) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % partitions,
                         headers=[("h", b"x")])
    assert producer.flush(10) == 0


def _take_all(consumer: BatchConsumer, count: int, timeout_s: float = 30.0) -> list[list]:
    batches, taken = [], 0
    deadline = time.monotonic() + timeout_s
    while taken < count and time.monotonic() < deadline:
        batch = consumer.take(idle_wait_s=0.5)
        if batch:
            batches.append(batch)
            taken += len(batch)
    return batches


def _consumer(bootstrap: str, app: str, topics: list[str], **kwargs) -> BatchConsumer:
    consumer = BatchConsumer(bootstrap, group_id(app, SOURCES), topics, batch_size=kwargs.pop("batch_size", 50),
                             batch_wait_s=0.01, session_timeout_s=6.0, **kwargs)
    consumer.start()
    return consumer


def test_batches_are_bounded_and_nothing_is_committed_before_it_is_asked(broker):
    topic = "raw.consumer-a"
    ensure_topics(broker, [topic], 2)
    _produce(broker, topic, 230)
    ends = end_offsets(broker, [topic])
    consumer = _consumer(broker, "app-a", [topic])
    try:
        batches = _take_all(consumer, 230)
        taken = [m for batch in batches for m in batch]
        assert len(taken) == 230 and max(len(b) for b in batches) <= 50
        assert sorted(m.value for m in taken) == sorted(f"v{i}".encode() for i in range(230))
        first = taken[0]
        assert first.topic == topic and first.key.startswith(b"k") and first.headers == [("h", b"x")]
        assert first.timestamp_ms is not None and abs(first.timestamp_ms / 1000 - time.time()) < 120
        # taken but not delivered: nothing committed, all of it still lag
        assert behind(ends, committed_offsets(broker, "app-a", ends)) == ends
        deadline = time.monotonic() + 10
        while consumer.lag().get(topic, 0) < 230 and time.monotonic() < deadline:
            consumer.take(idle_wait_s=0.2)  # the thread that takes reads the watermarks
        assert consumer.lag() == {topic: 230}
        for batch in batches[:-1]:
            consumer.commit(batch)
        consumer.commit(batches[-1])
        deadline = time.monotonic() + 10
        while behind(ends, committed_offsets(broker, "app-a", ends)) and time.monotonic() < deadline:
            consumer.take(idle_wait_s=0.1)  # serves the asynchronous commit's callback
        assert behind(ends, committed_offsets(broker, "app-a", ends)) == {}
        consumer.take(idle_wait_s=0.1)
        assert consumer.lag() == {topic: 0}
    finally:
        consumer.close()


def _fetches_while_taking(bootstrap: str, app: str, topic: str, count: int, **options) -> int:
    """Fetch requests the consumer sent while a slow worker took `count` records, one batch of 10 at a time."""
    fetches: list[int] = []

    def on_stats(raw: str) -> None:
        fetches.append(sum(b["req"].get("Fetch", 0) for b in json.loads(raw)["brokers"].values()))

    consumer = _consumer(bootstrap, app, [topic], batch_size=10,
                         options={"statistics.interval.ms": 50, "stats_cb": on_stats, **options})
    try:
        taken, deadline = 0, time.monotonic() + 60
        while not taken and time.monotonic() < deadline:
            taken = len(consumer.take(idle_wait_s=0.5))
        first = len(fetches)
        while taken < count and time.monotonic() < deadline:
            time.sleep(0.01)  # the pass's work, while librdkafka may fetch ahead
            taken += len(consumer.take(idle_wait_s=0.5))
        assert taken == count and len(fetches) > first + 10
    finally:
        consumer.close()
    return fetches[-1] - fetches[first]


def test_records_go_on_being_fetched_while_a_pass_works_on_what_was_taken(broker):
    # fetching a partition only once what was fetched of it is taken took less of the embedded broker's CPU,
    # but events waited longer end to end at half the full rate (docs/performance.md, "Fetching on demand, tried")
    topic = "raw.consumer-fetching"
    ensure_topics(broker, [topic], 1)
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5, "batch.size": 8_192})
    for i in range(1_500):
        producer.produce(topic, key=f"k{i}".encode(), value=b"v" * 1_000, partition=0)
    assert producer.flush(10) == 0
    as_is = _fetches_while_taking(broker, "app-fetching", topic, 1_500)
    on_demand = _fetches_while_taking(broker, "app-on-demand", topic, 1_500,
                                      **{"queued.min.messages": 1, "fetch.queue.backoff.ms": 5})
    assert as_is > 5 * max(on_demand, 1)  # and the measure tells the two policies apart


def test_a_new_group_starts_where_the_faust_group_left_each_partition(broker):
    topic = "raw.consumer-b"
    ensure_topics(broker, [topic], 2)
    _produce(broker, topic, 40)
    # the workers' Faust group (their app id) had committed 15 of partition 0 and none of partition 1
    commit_group(broker, "app-b", {(topic, 0): 15})
    consumer = _consumer(broker, "app-b", [topic], seed_group="app-b")
    try:
        taken = [m for batch in _take_all(consumer, 40 - 15) for m in batch]
        first = {p: min(m.offset for m in taken if m.partition == p) for p in (0, 1)}
        assert first == {0: 15, 1: 0}
        assert len(taken) == 25
    finally:
        consumer.close()
    # the group's own commits win from then on: started again, it reads nothing it committed
    ends = end_offsets(broker, [topic])
    commit_group(broker, group_id("app-b", SOURCES), ends)
    again = _consumer(broker, "app-b", [topic], seed_group="app-b")
    try:
        assert _take_all(again, 1, timeout_s=4) == []
    finally:
        again.close()


def test_the_workers_progress_is_read_over_both_groups(broker, pipeline):
    topic = "raw.consumer-c"
    ensure_topics(broker, [topic, "customer.golden"], 2)
    _produce(broker, topic, 10)
    _produce(broker, "customer.golden", 6)
    ends = end_offsets(broker, [topic, "customer.golden"])
    raw_ends = {tp: o for tp, o in ends.items() if tp[0] == topic}
    golden_ends = {tp: o for tp, o in ends.items() if tp[0] == "customer.golden"}
    commit_group(broker, group_id("app-c", SOURCES), raw_ends)
    assert behind(ends, committed_offsets(broker, "app-c", ends)) == golden_ends
    commit_group(broker, "app-c", golden_ends)
    assert committed_offsets(broker, "app-c", ends) == ends
    assert worker_groups("app-c") == ["app-c", "app-c.sources"]
    # a source topic is committed in the sources group, whatever the engine; the rest in Faust's
    assert groups_of(pipeline, "app-c", pipeline.sources[0].raw_topic) == ["app-c.sources"]
    assert groups_of(pipeline, "app-c", pipeline.topics.golden) == ["app-c"]
    # a staged worker's Faust agent reads consent statements, a fused worker's source consumer too
    assert groups_of(pipeline, "app-c", pipeline.topics.consent) == ["app-c", "app-c.sources"]


def test_a_rebalance_waits_for_the_batches_in_flight_to_be_committed(broker):
    """A worker processes its next batch while the one before is delivered (hub.runner.drive): when another
    worker joins, the partitions move only once what was taken is committed, so the newcomer does not do
    that work again."""
    import threading

    topic = "raw.consumer-rebalance"
    ensure_topics(broker, [topic], 2)
    _produce(broker, topic, 100)
    first = _consumer(broker, "app-r", [topic], batch_size=200)
    second = None
    try:
        in_flight = _take_all(first, 100)  # taken, not yet delivered
        second = _consumer(broker, "app-r", [topic])
        seen_by_second: list = []
        stop = threading.Event()

        def keep_taking(consumer, into) -> None:  # each take serves the rebalance, as the workers' loops do
            while not stop.is_set():
                into.extend(consumer.take(idle_wait_s=0.2))

        taken_later: list = []
        threads = [threading.Thread(target=keep_taking, args=(first, taken_later)),
                   threading.Thread(target=keep_taking, args=(second, seen_by_second))]
        for thread in threads:
            thread.start()
        time.sleep(4)  # the rebalance has begun: the first consumer holds its partitions until it commits
        assert seen_by_second == []
        # the worker's lag timer asks from the event loop meanwhile, which must go on (it is what delivers and
        # commits the batches in flight): it blocked until the rebalance gave up waiting, 30 s later
        answered: list = []
        asking = threading.Thread(target=lambda: answered.append(first.lag()), daemon=True)
        started = time.monotonic()
        asking.start()
        asking.join(5)
        assert answered, f"lag() still blocked after {time.monotonic() - started:.1f} s while the rebalance waits"
        assert answered == [{topic: 100}]  # taken, not committed
        for batch in in_flight:
            first.commit(batch)
        deadline = time.monotonic() + 30
        while not second._assigned and time.monotonic() < deadline:
            time.sleep(0.2)
        assert second._assigned, "the partitions never moved"
        _produce(broker, topic, 20)
        deadline = time.monotonic() + 30
        while len(seen_by_second) + len(taken_later) < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join(10)
        # the newcomer read only what came after: nothing of the 100 the first had taken and committed
        assert seen_by_second and {m.value for m in seen_by_second} <= {f"v{i}".encode() for i in range(20)}
        assert len(seen_by_second) + len(taken_later) == 20
    finally:
        first.close()
        if second is not None:
            second.close()
