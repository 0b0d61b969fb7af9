"""Generated customers (hub/testing/generator.py) through the real pipeline; then
every Redis key and value, the worker's log and its /metrics page are
scanned for the names, e-mails and phones that were fed: none may appear."""

from __future__ import annotations

import re
import time

import pytest
import redis

from hub.crypto import Keyring, SealError
from hub.demo import encode_event
from hub.matching.features import fold
from hub.store.redis import RedisStore
from hub.testing.generator import generate
from hub.testing.harness import Watcher, redis_dump, wait_caught_up, worker_input_topics

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


def test_redis_logs_and_metrics_hold_no_fed_personal_data(local_hub, feeder, pipeline, monkeypatch):
    # no key configured: the harness makes one for its embedded setup (never a published default)
    monkeypatch.delenv("HUB_PII_KEY", raising=False)
    worker = local_hub.worker(env={"HUB_LOG_LEVEL": "INFO"})
    events = generate(120, seed=11, start_ms=int(time.time() * 1000) - 86_400_000, invalid_share=0.0)
    for ev in events:
        feeder.send(ev.topic, ev.key, ev.raw if ev.raw is not None else encode_event(ev.topic, ev.value))
    feeder.flush()
    watcher = Watcher(local_hub.bootstrap, [pipeline.topics.golden], keep_values=set())
    wait_caught_up(local_hub.bootstrap, "hub", worker_input_topics(pipeline), 120)
    watcher.wait_until(lambda v: v.counts[pipeline.topics.golden] > 0, timeout_s=120, quiet_s=3.0)
    watcher.close()
    needles = _needles(events)
    assert len(needles) > 300

    client = redis.Redis.from_url(local_hub.redis_url)
    dump = redis_dump(client)
    assert client.dbsize() > 500 and len(dump) > 100_000  # the index is really there
    assert not [n for n in needles if n.encode() in dump], "personal data in Redis"
    # sealed with the state directory's own key: it opens them, the old published default does not
    own = RedisStore.from_url(local_hub.redis_url, Keyring.from_settings(None, local_hub.pii_key))
    assert sum(1 for _ in own.all_golden()) > 50
    with pytest.raises(SealError):
        next(RedisStore.from_url(local_hub.redis_url, Keyring.from_settings(None, "change-me-hub-dev-key")).all_golden())
    _, page = worker.get("/metrics")
    worker.stop()
    log = worker.log_path.read_bytes()
    assert not [n for n in needles if n.encode() in page], "personal data on /metrics"
    assert not [n for n in needles if n.encode() in log], "personal data in the worker log"


def test_embedded_hub_run_makes_its_own_key(tmp_path):
    """`hub run` with nothing configured (embedded broker and Redis) needs no key: it makes one, readable by
    its owner only, in its state directory (hub.crypto.local_key: read again by every later run)."""
    import os
    import stat
    import subprocess
    import sys

    from hub.connectors.embedded import free_port, stop_process

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_PII_KEY", "HUB_REDIS__", "HUB_KAFKA__"))}
    env.update(HUB_STATE_DIR=str(tmp_path), HUB_KAFKA__SESSION_TIMEOUT_S="2")
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "hub", "run", "--web-port", str(free_port())],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while b"Worker]: Ready" not in log_path.read_bytes():
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "worker not ready"
            time.sleep(0.2)
    finally:
        stop_process(process, grace_s=30)
    key_file = tmp_path / "pii-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_text().strip()) >= 40
