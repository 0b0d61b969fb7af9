"""10,000 fuzzed events (valid events with hostile text, and malformed Avro,
unknown schema ids, truncated bytes, huge strings, deep nesting, invalid
UTF-8, impossible dates...) through a real worker on the embedded broker:
the worker keeps running and every input is accounted for, accepted (and
matched) or as a dead letter carrying its reason."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from hub.testing.fuzzing import hostile_events
from hub.testing.harness import Watcher
from hub.validation import REASONS

pytestmark = pytest.mark.integration

EVENTS = int(os.environ.get("HUB_FUZZ_EVENTS", "10000"))
SEED = int(os.environ.get("HUB_FUZZ_SEED", "9"))


def test_ten_thousand_fuzzed_events(local_hub, feeder, pipeline):
    worker = local_hub.worker()
    dlqs = [s.dlq_topic for s in pipeline.sources]
    watcher = Watcher(local_hub.bootstrap, [pipeline.topics.internal_dlq, *dlqs], keep_values=set())
    valid = 0
    for topic, key, value, ok in hostile_events(EVENTS, seed=SEED):
        feeder.send(topic, key, value)
        valid += ok
    feeder.flush()

    # accepted: what ingest handed to matching (on customer.canonical, or in the same pass with the fused engine)
    def accepted() -> float:
        return worker.metric("hub_stage_records_total", stage="match")

    deadline = time.monotonic() + 240
    while accepted() + sum(watcher.view.counts[t] for t in dlqs) < EVENTS and time.monotonic() < deadline:
        watcher.poll(1.0)
    view = watcher.wait_until(lambda v: True, timeout_s=60, quiet_s=3.0)
    canonical = accepted()
    dead = sum(view.counts[t] for t in dlqs)
    assert canonical + dead == EVENTS  # none lost, none doubled
    assert canonical >= valid  # every valid-shaped event, however hostile its text, was accepted
    assert worker.metric("hub_events_valid_total") == canonical  # and every one accepted was matched
    reasons = Counter()
    for (topic, reason), n in view.reasons.items():
        if topic in dlqs:
            reasons[reason] += n
    assert sum(reasons.values()) == dead and set(reasons) <= set(REASONS)  # each dead letter says why
    assert worker.process.poll() is None  # still running
    assert worker.get("/health")[0] == 200
    assert worker.metric("hub_events_in_total") == EVENTS
    watcher.poll(1.0)  # nothing failed inside the hub
    assert view.counts[pipeline.topics.internal_dlq] == 0
    print(f"fuzz: {EVENTS} events, {canonical:.0f} accepted, {dead} dead-lettered {dict(reasons)}")
    watcher.close()
