"""Match explanations: every decision kept with its evidence, readable by
stewards over HTTP and with `hub explain`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest
import yaml

from hub.access import new_token
from hub.config import PipelineConfig, load_pipeline
from hub.schemas import CUSTOMER_EVENT, codec
from hub.testing.harness import Feeder, LocalHub, Watcher

pytestmark = pytest.mark.integration


def _get(url: str, token: str | None):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def test_decisions_are_explained_to_stewards(tmp_path):
    steward, steward_digest = new_token()
    pos_token, pos_digest = new_token()
    data = load_pipeline(None).model_dump(mode="json")
    data["steward_tokens_sha256"] = [steward_digest]
    data["targets"][0]["tokens_sha256"] = [pos_digest]
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(data))
    pipeline = PipelineConfig.model_validate(data)
    now = int(time.time() * 1000)
    with LocalHub(pipeline, tmp_path) as hub:
        worker = hub.worker(config_file=path)
        watcher = Watcher(hub.bootstrap, pipeline.all_topics())
        feeder = Feeder(hub.bootstrap)
        for source, sid, given, at in (("crm", "C1", "Anna", now), ("pos", "P3", "ANNA", now + 1)):
            feeder.send(f"raw.{source}", f"{source}:{sid}".encode(), codec(CUSTOMER_EVENT).encode(
                {"source": source, "source_id": sid, "event_time": at, "given_name": given, "family_name": "Smith",
                 "emails": [{"address": "anna.smith@gmail.com"}], "phones": [{"number": "07911 123456"}]}))
            feeder.flush()
            watcher.wait_until(lambda v, n=1 + (source == "pos"): v.counts[pipeline.topics.golden] >= n)
        watcher.wait_until(lambda v: len(v.live("mastered.pos")) == 1)
        (gid,) = watcher.view.live("mastered.pos")

        status, body = _get(f"{worker.base_url}/explain/pos/P3", steward)
        assert status == 200 and body["golden_id"] == gid
        decision = body["decision"]
        assert decision["outcome"] == "merge" and decision["score"] >= decision["upper_threshold"]
        levels = {c["attribute"]: c["level"] for c in decision["candidates"][0]["comparisons"]}
        assert levels["email"] == "exact" and levels["phone"] == "exact" and levels["birth_date"] == "null"
        assert decision["candidates"][0]["member"] == "crm:C1"
        assert _get(f"{worker.base_url}/explain/pos/P3", pos_token)[0] == 401  # a target token is not a steward's
        assert _get(f"{worker.base_url}/explain/pos/P3", None)[0] == 401
        assert _get(f"{worker.base_url}/explain/pos/nobody", steward)[0] == 404

        env = {**os.environ, "HUB_REDIS__URL": hub.redis_url}
        shown = subprocess.run([sys.executable, "-m", "hub", "explain", "pos", "P3"], capture_output=True, text=True,
                               env=env, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert f"pos:P3 -> golden record {gid}" in shown.stdout and "decision: merge" in shown.stdout
        assert "candidate 1: crm:C1" in shown.stdout and "email" in shown.stdout
        missing = subprocess.run([sys.executable, "-m", "hub", "explain", "pos", "nobody"], capture_output=True,
                                 text=True, env=env, timeout=60)
        assert missing.returncode == 1 and "not in the identity index" in missing.stdout
        watcher.close()
