"""The audit trail on the real broker: a worker starting with a changed
pipeline writes one config_changed event (none when nothing changed), `hub
history --config` lists them; `hub history` opens sealed audit events with
HUB_PII_KEYS and says clearly when a key is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pytest
import redis
import yaml

from hub.access import digest
from hub.audit_trail import config_key, redis_key
from hub.config import load_pipeline
from hub.connectors.kafka import KafkaSink, read_topic
from hub.crypto import Keyring, new_key, parse_keys
from hub.history import diff
from hub.records import OutMessage
from hub.schemas import AUDIT, codec
from hub.testing.harness import LocalHub, open_audits
from hub.topic_seal import seal

pytestmark = pytest.mark.integration

TOKEN, SECOND = "pos-app-token", "pos-app-token-2"


def write_config(path, tokens: list[str], purposes=("service",)) -> None:
    path.write_text(yaml.safe_dump({
        "sources": [{"name": "crm"}],
        "targets": [{"name": "pos", "purposes": list(purposes), "fields": ["given_name"],
                     "tokens_sha256": [digest(t) for t in tokens]}],
        "purposes": [{"name": "service", "granted_by_default": True}, {"name": "marketing"}],
        "partitions": 2}))


def config_events(hub) -> list[dict]:
    return open_audits(hub, read_topic(hub.bootstrap, "audit", {config_key("hub")}))


def wait_for(condition, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.3)
    raise TimeoutError("condition not met")


def history(hub, *args, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub", "history", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HUB_KAFKA__BOOTSTRAP_SERVERS": hub.bootstrap, **env})


def test_a_changed_pipeline_is_recorded_once_per_change(tmp_path, shared_redis):
    config_file = tmp_path / "hub.yaml"
    write_config(config_file, [TOKEN])
    pipeline = load_pipeline(config_file)
    with LocalHub(pipeline, tmp_path / "hub", redis_url=shared_redis) as hub:
        first = hub.worker(config_file=config_file)
        events = wait_for(lambda: config_events(hub), 60)
        assert [e["kind"] for e in events] == ["config_changed"] and "first recorded" in events[0]["cause"]
        first.stop()
        hub.workers.remove(first)

        # restarted as it was: nothing to record
        same = hub.worker(config_file=config_file)
        stored = redis.Redis.from_url(shared_redis).hget(redis_key("hub"), "fingerprint")
        assert stored and stored.decode() in events[0]["audit_id"]
        wait_for(lambda: b"as recorded in the audit trail" in same.log_path.read_bytes(), 60)  # the check ran
        assert len(config_events(hub)) == 1
        same.stop()
        hub.workers.remove(same)

        # a token added and a purpose added to a target: one event naming both, the token by digest
        write_config(config_file, [TOKEN, SECOND], purposes=("service", "marketing"))
        hub.worker(config_file=config_file)
        events = wait_for(lambda: (lambda found: found if len(found) == 2 else None)(config_events(hub)), 60)
        change = events[1]
        assert change["changed_attributes"] == ["targets"]
        assert {c["attribute"] for c in change["changes"]} == {"targets.pos.purposes", "targets.pos.tokens"}
        assert f"token {digest(SECOND)[:12]} added" in change["cause"]
        assert TOKEN not in orjson.dumps(change).decode() and SECOND not in orjson.dumps(change).decode()

        listed = history(hub, "--config", HUB_CONFIG_FILE=str(config_file))
        assert listed.returncode == 0, listed.stderr
        lines = [line for line in listed.stdout.splitlines() if "config_changed" in line]
        assert len(lines) == 2 and "first recorded" in lines[0] and "targets.pos.tokens" in lines[1]
        assert "targets.pos.purposes" in listed.stdout


def test_history_opens_sealed_audit_events(tmp_path):
    keys = f"k2:{new_key()},k1:{new_key()}"
    old_key_only = ",".join(keys.split(",")[1:])
    pipeline = load_pipeline(None)
    with LocalHub(pipeline, tmp_path) as hub:
        golden = {"golden_id": "G42", "given_name": "Zelda", "emails": [{"address": "zelda.q@example.org"}]}
        events = [{"audit_id": "A1", "at": 1_000, "kind": "golden_created", "golden_id": "G42", "subject": "crm:9",
                   "cause": "source_event", "decision": None, "before_version": None, "after_version": 1,
                   "changed_attributes": ["emails", "given_name"], "changes": diff(None, golden)}]
        sink = KafkaSink(hub.bootstrap)
        sink.setup()
        # sealed with the old key k1 (the one first in the keyring back then)
        sealed = seal(Keyring(parse_keys(old_key_only)), AUDIT, events[0], "audit", "G42")
        sink.add(OutMessage("audit", b"G42", codec(AUDIT).encode(sealed)))
        sink.flush()
        raw = b"".join(v for _, v in read_topic(hub.bootstrap, "audit", {b"G42"}))
        assert b"Zelda" not in raw and b"zelda.q" not in raw

        shown = history(hub, "G42", HUB_PII_KEYS=keys)  # k2 now seals, k1 still opens
        assert shown.returncode == 0, shown.stderr
        assert '"Zelda"' in shown.stdout and "zelda.q@example.org" in shown.stdout
        at = history(hub, "G42", "--at", "2000", HUB_PII_KEYS=keys)
        assert orjson.loads(at.stdout)["given_name"] == "Zelda"

        # rotation: Redis values are re-sealed, topic values cannot be: rekey says which keys they still need
        rekey = subprocess.run([sys.executable, "-m", "hub", "rekey", "--topics"], capture_output=True, text=True,
                               timeout=120, env={**os.environ, "HUB_KAFKA__BOOTSTRAP_SERVERS": hub.bootstrap,
                                                 "HUB_REDIS__URL": hub.redis_url, "HUB_PII_KEYS": keys})
        assert rekey.returncode == 0, rekey.stderr
        assert "audit: k1 1" in rekey.stdout
        assert "key k1 still seals 1 values: keep it in HUB_PII_KEYS until retention removes them" in rekey.stdout

        missing = history(hub, "G42", HUB_PII_KEYS=f"k3:{new_key()}")  # k1 dropped too early
        assert missing.returncode == 2
        assert "does not open" in missing.stderr and "HUB_PII_KEYS" in missing.stderr
        assert "Traceback" not in missing.stderr and "Zelda" not in missing.stderr
