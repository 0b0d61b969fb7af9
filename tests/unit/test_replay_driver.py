"""The replay driver without a broker: each batch runs through the stages in
their declared order, each once with all that is addressed to it, before the
next batch; a failed delivery hands nothing downstream twice."""

from __future__ import annotations

import asyncio

from hub.config import load_pipeline
from hub.records import InMessage, OutMessage
from hub.replay import Replay, _TeeSink
from hub.runner import StageRunner
from hub.stages import StageOutput


class RecordingSink:
    def __init__(self, failures: int = 0):
        self.records: list[OutMessage] = []
        self.failures = failures

    def add(self, record):
        self.records.append(record)

    def pending(self):
        return 0

    def poll(self):
        pass

    def flush(self, timeout_s=60.0):
        if self.failures:
            self.failures -= 1
            from hub.connectors.kafka import DeliveryFailed
            raise DeliveryFailed("broker away")


class Echo:
    """A stage that writes one record per input to `topic`, and remembers what it saw."""

    def __init__(self, name: str, topic: str | None, seen: list):
        self.name, self.topic, self.seen = name, topic, seen

    async def process(self, batch):
        self.seen.append((self.name, [m.key for m in batch]))
        return StageOutput([OutMessage(self.topic, m.key, b"x") for m in batch] if self.topic else [])


def _driver(sink, seen, batch_size=2):
    pipeline = load_pipeline(None)
    topics = pipeline.topics
    chain = {"ingest": topics.canonical, "match": topics.linked, "master": topics.golden, "syndicate": None,
             "consent": topics.linked, "erasure": None, "steward": None, "survey": None}
    runners = {name: StageRunner(name, Echo(name, topic, seen), sink, lambda m: "dlq.internal", True)
               for name, topic in chain.items()}
    return pipeline, Replay(pipeline, runners, sink, batch_size, engine="staged")


def test_each_batch_goes_all_the_way_down_before_the_next():
    seen: list = []
    pipeline, driver = _driver(RecordingSink(), seen)
    raw = pipeline.sources[0].raw_topic
    inputs = [InMessage(raw, 0, i, b"r%d" % i, b"v", 10 + i) for i in range(3)]
    inputs.insert(2, InMessage(pipeline.topics.consent, 0, 0, b"c0", b"v", 11))
    counts = asyncio.run(driver.run(inputs))
    assert seen == [
        ("ingest", [b"r0", b"r1"]), ("match", [b"r0", b"r1"]), ("master", [b"r0", b"r1"]), ("syndicate", [b"r0", b"r1"]),
        # consent shares a batch with source events (the latest statement wins whatever the order); what it
        # asks of the master is mastered with the batch's links, as the fused engine's pass does (hub.engine)
        ("consent", [b"c0"]), ("ingest", [b"r2"]), ("match", [b"r2"]),
        ("master", [b"c0", b"r2"]), ("syndicate", [b"c0", b"r2"]),
    ]
    assert counts.inputs == {raw: 3, pipeline.topics.consent: 1}
    assert counts.outputs[pipeline.topics.golden] == 4


def test_an_erasure_batches_alone_between_what_came_before_and_after():
    seen: list = []
    pipeline, driver = _driver(RecordingSink(), seen, batch_size=10)
    raw = pipeline.sources[0].raw_topic
    erasure = pipeline.topics.erasure
    inputs = [InMessage(raw, 0, 0, b"r0", b"v", 1), InMessage(erasure, 0, 0, b"e0", b"v", 2),
              InMessage(erasure, 0, 1, b"e1", b"v", 3), InMessage(raw, 0, 1, b"r1", b"v", 4)]
    asyncio.run(driver.run(inputs))
    assert [(name, keys) for name, keys in seen if name in ("ingest", "erasure")] == [
        ("ingest", [b"r0"]), ("erasure", [b"e0", b"e1"]), ("ingest", [b"r1"])]


def test_a_failed_delivery_is_not_handed_downstream_twice():
    seen: list = []
    sink = RecordingSink(failures=1)
    pipeline, driver = _driver(sink, seen)
    raw = pipeline.sources[0].raw_topic
    asyncio.run(driver.run([InMessage(raw, 0, 0, b"r0", b"v", 1)]))
    assert [name for name, _ in seen] == ["ingest", "ingest", "match", "master", "syndicate"]  # retried once
    assert seen[2] == ("match", [b"r0"])


def test_the_tee_keeps_only_what_a_downstream_stage_reads():
    sink = RecordingSink()
    tee = _TeeSink(sink, {"customer.canonical"})
    tee.add(OutMessage("customer.canonical", b"k", b"v"))
    tee.add(OutMessage("customer.audit", b"k", b"v"))
    assert tee.take() == []  # nothing before the flush says it was delivered
    tee.flush()
    assert [m.topic for m in tee.take()] == ["customer.canonical"]
    assert tee.counts == {"customer.canonical": 1, "customer.audit": 1}
