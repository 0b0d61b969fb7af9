"""Generated customers (hub/generator.py) through the real pipeline; then
every Redis key and value, the worker's log and its /metrics page are
scanned for the names, e-mails and phones that were fed: none may appear."""

from __future__ import annotations

import re
import time

import pytest
import redis

from hub.demo import encode_event
from hub.generator import generate
from hub.harness import Watcher, redis_dump
from hub.matching.features import fold

pytestmark = pytest.mark.integration

MIN_LEN = 6  # shorter values occur by chance in kilobytes of ciphertext and hex digests


def _needles(events) -> set[str]:
    found = set()
    for ev in events:
        value = ev.value
        if value is None or not ev.topic.startswith("raw."):
            continue
        for attr in ("given_name", "family_name"):
            if value.get(attr):
                found |= {value[attr], fold(value[attr]) or ""}
        for e in value.get("emails") or ():
            found |= {e["address"], e["address"].lower().strip()}
        for p in value.get("phones") or ():
            digits = re.sub(r"\D", "", p["number"])
            found |= {p["number"], digits, digits[-9:]}
    return {n for n in found if len(n) >= MIN_LEN}


def test_redis_logs_and_metrics_hold_no_fed_personal_data(local_hub, feeder, pipeline):
    worker = local_hub.worker(env={"HUB_LOG_LEVEL": "INFO"})
    events = generate(120, seed=11, start_ms=int(time.time() * 1000) - 86_400_000, invalid_share=0.0)
    raw = [e for e in events if e.topic.startswith("raw.")]
    for ev in events:
        feeder.send(ev.topic, ev.key, ev.raw if ev.raw is not None else encode_event(ev.topic, ev.value))
    feeder.flush()
    watcher = Watcher(local_hub.bootstrap, [pipeline.topics.canonical, pipeline.topics.golden], keep_values=set())
    watcher.wait_until(lambda v: v.counts[pipeline.topics.canonical] >= len(raw), timeout_s=120, quiet_s=3.0)
    watcher.close()
    needles = _needles(events)
    assert len(needles) > 300

    client = redis.Redis.from_url(local_hub.redis_url)
    dump = redis_dump(client)
    assert client.dbsize() > 500 and len(dump) > 100_000  # the index is really there
    assert not [n for n in needles if n.encode() in dump], "personal data in Redis"
    _, page = worker.get("/metrics")
    worker.stop()
    log = worker.log_path.read_bytes()
    assert not [n for n in needles if n.encode() in page], "personal data on /metrics"
    assert not [n for n in needles if n.encode() in log], "personal data in the worker log"
