"""m and u re-estimated from the stream itself: `hub estimate` reads the
records in the identity index, estimates without labels, stores the result,
and running workers switch to it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hub.config import load_pipeline
from hub.demo import encode_event
from hub.testing.generator import generate
from hub.testing.harness import Feeder, LocalHub, Watcher, wait_caught_up, worker_input_topics

pytestmark = pytest.mark.integration


def test_reestimated_parameters_reach_running_workers(tmp_path):
    pipeline = load_pipeline(None)
    with LocalHub(pipeline, tmp_path) as hub:
        worker = hub.worker()
        watcher = Watcher(hub.bootstrap, pipeline.all_topics(), keep_values={"customer.golden"})
        feeder = Feeder(hub.bootstrap)
        events = [e for e in generate(700, seed=5, start_ms=int(time.time() * 1000) - 86_400_000)
                  if e.kind == "upsert"]
        for event in events:
            feeder.send(event.topic, event.key, encode_event(event.topic, event.value))
        feeder.flush()
        wait_caught_up(hub.bootstrap, "hub", worker_input_topics(pipeline), 120)
        watcher.wait_until(lambda v: True, timeout_s=120, quiet_s=2)
        assert worker.metric("hub_match_parameters_version") == 0

        env = {**os.environ, "HUB_REDIS__URL": hub.redis_url, "HUB_KAFKA__BOOTSTRAP_SERVERS": hub.bootstrap}
        dry = subprocess.run([sys.executable, "-m", "hub", "estimate", "--dry-run"], env=env, capture_output=True,
                             text=True, timeout=120)
        assert dry.returncode == 0, dry.stderr
        assert "stored as version" not in dry.stdout and "given_name" in dry.stdout
        done = subprocess.run([sys.executable, "-m", "hub", "estimate"], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert "stored as version 1" in done.stdout
        assert f"estimated from {len(events)} records" in done.stdout or "estimated from" in done.stdout
        assert "merge threshold" in done.stdout
        # the old and new parameters are in the audit trail, beside the worker's configuration
        listed = subprocess.run([sys.executable, "-m", "hub", "history", "--config"], env=env, capture_output=True,
                                text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert "config_changed" in listed.stdout and "parameters_changed" in listed.stdout
        assert "match parameters version 0 -> 1" in listed.stdout
        assert "upper_threshold: 8.0 → " in listed.stdout and ".m: " in listed.stdout
        deadline = time.monotonic() + 30
        while worker.metric("hub_match_parameters_version") != 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert worker.metric("hub_match_parameters_version") == 1

        # and the worker goes on matching with them
        before = len(watcher.view.live("customer.golden"))
        more = [e for e in generate(60, seed=99, start_ms=int(time.time() * 1000) - 3_600_000) if e.kind == "upsert"]
        for event in more:
            feeder.send(event.topic, b"x" + event.key, encode_event(event.topic, {
                **event.value, "source_id": "x" + event.value["source_id"]}))
        feeder.flush()
        watcher.wait_until(lambda v: len(v.live("customer.golden")) > before, timeout_s=60, quiet_s=2)
        watcher.close()
