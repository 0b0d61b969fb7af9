"""The ingest stage as a batch function: raw bytes in, canonical records or
dead letters out, quality measured. No broker: messages are plain values."""

from __future__ import annotations

import time

import orjson

from hub import metrics
from hub.config import load_pipeline
from hub.records import ERROR_REASON, InMessage
from hub.schemas import CANONICAL, CUSTOMER_EVENT, codec
from hub.stages.ingest import IngestStage


def test_a_batch_of_good_and_bad_events():
    now = int(time.time() * 1000)
    good = {"source": "crm", "source_id": "1", "event_time": now - 86_400_000, "given_name": "ANNA",
            "family_name": "smith", "emails": [{"address": "Anna.Smith@Gmail.com"}]}
    batch = [InMessage("raw.crm", 0, 0, b"crm:1", codec(CUSTOMER_EVENT).encode(good), now),
             InMessage("raw.pos", 1, 7, b"pos:2", orjson.dumps({**good, "source": "pos", "source_id": "2"}), now),
             InMessage("raw.pos", 1, 8, b"pos:3", b"\xff\xfe garbage", now)]
    fresh_before = metrics.QUALITY.labels("crm", "freshness")._sum.get()
    output = IngestStage(load_pipeline(None)).process(batch, now)
    canonical = [m for m in output.messages if m.topic == "customer.canonical"]
    dead = [m for m in output.messages if m.topic == "dlq.pos"]
    assert len(canonical) == 2 and len(dead) == 1
    record = codec(CANONICAL).decode(canonical[0].value)
    assert canonical[0].key == b"crm:1"
    assert record["record"]["given_name"] == "Anna" and record["record"]["emails"][0]["address"] == "anna.smith@gmail.com"
    assert record["origin"] == {"topic": "raw.crm", "partition": 0, "offset": 0, "produced_at": now}
    assert 0 < record["quality"]["score"] <= 1
    assert dead[0].value == b"\xff\xfe garbage" and dict(dead[0].headers)[ERROR_REASON] == b"not_decodable"
    assert metrics.QUALITY.labels("crm", "freshness")._sum.get() > fresh_before


def test_each_batch_is_tallied_for_the_quality_report_once_and_a_failing_tally_holds_nothing_up():
    from hub.quality_tally import MemoryTallyStore, day_of

    now = int(time.time() * 1000)
    good = {"source": "crm", "source_id": "1", "event_time": now - 1000, "given_name": "Anna",
            "emails": [{"address": "anna@gmail.com"}, {"address": "not an address"}]}
    batch = [InMessage("raw.crm", 0, 0, b"crm:1", orjson.dumps(good), now),
             InMessage("raw.pos", 1, 8, b"pos:3", b"\xff\xfe garbage", now)]

    class Counting(MemoryTallyStore):
        calls = 0

        def add(self, counts):
            self.calls += 1
            super().add(counts)

    tallies = Counting()
    IngestStage(load_pipeline(None), tallies).process(batch, now)
    fields = tallies.days[day_of(now)]
    assert tallies.calls == 1
    assert fields["crm|*|records"] == 1 and fields["crm|emails|values"] == 1 and fields["crm|emails|dropped"] == 1
    assert fields["pos|dlq|not_decodable"] == 1

    class Broken:
        def add(self, counts):
            raise ConnectionError("redis away")

    errors = metrics.REDIS_ERRORS.labels("quality_tally")._value.get()
    output = IngestStage(load_pipeline(None), Broken()).process(batch, now)
    assert len(output.messages) == 2  # the records go on
    assert metrics.REDIS_ERRORS.labels("quality_tally")._value.get() == errors + 1
