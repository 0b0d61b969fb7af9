"""Structured logs carry no personal data: a worker with HUB_LOG_JSON=true,
fed customers with distinctive names, e-mails and phones (merged, consented,
dead-lettered, erased), writes only JSON log lines and none of those values;
neither does its /metrics page."""

from __future__ import annotations

import json
import time

import orjson
import pytest
import yaml

from hub.config import DEFAULT_CONFIG
from hub.schemas import CONSENT_EVENT, CUSTOMER_EVENT, ERASURE_REQUEST, codec
from hub.testing.harness import Watcher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NOW = int(time.time() * 1000) - 60_000
PROBE_TARGET = "log_probe"  # a target the worker creates: the hub logs that it did

GIVEN, FAMILY = "Zebulonia", "Quxworthington"
EMAIL = "zebulonia.quxworthington@quxmail.example"
PHONE, PHONE_DIGITS, PHONE_E164 = "07700 900461", "7700900461", "+447700900461"
STREET, BIRTH = "Quxhollow Lane", "1971-07-19"
SECRETS = [GIVEN, FAMILY, EMAIL, EMAIL.split("@")[0], "quxmail", PHONE, PHONE_DIGITS, PHONE_E164, STREET, BIRTH,
           GIVEN.upper(), FAMILY.lower()]


def customer(source: str, source_id: str, at: int = NOW, **extra) -> dict:
    return {"source": source, "source_id": source_id, "event_time": at, "given_name": GIVEN, "family_name": FAMILY,
            "birth_date": BIRTH, "emails": [{"address": EMAIL, "verified": True}], "phones": [{"number": PHONE}],
            "addresses": [{"line1": f"7 {STREET}", "city": "Leeds", "postcode": "LS1 4AB", "country": "GB"}],
            **extra}


def test_json_logs_and_metrics_hold_no_personal_data(local_hub, feeder, pipeline, tmp_path):
    config = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    config["targets"].append({"name": PROBE_TARGET, "purposes": ["service"], "fields": ["given_name", "emails"]})
    config_file = tmp_path / "hub.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    worker = local_hub.worker(config_file=config_file, env={"HUB_LOG_JSON": "true", "HUB_LOG_LEVEL": "INFO"})
    probe_topic = f"mastered.{PROBE_TARGET}"
    watcher = Watcher(local_hub.bootstrap, [probe_topic, "dlq.pos", "dlq.crm", "mastered.marketing"])
    try:
        avro = codec(CUSTOMER_EVENT).encode
        feeder.send("raw.crm", b"crm:ZQ1", avro(customer("crm", "ZQ1")))
        feeder.send("raw.ecommerce", b"ecommerce:ZQ2", orjson.dumps(customer("ecommerce", "ZQ2", at=NOW + 1)))
        # dead-lettered, each with personal data in it: not decodable, another source, a missing field
        feeder.send("raw.pos", b"pos:ZQ3", orjson.dumps(customer("pos", "ZQ3"))[:-20])
        feeder.send("raw.pos", b"pos:ZQ4", orjson.dumps(customer("crm", "ZQ4")))
        feeder.send("raw.crm", b"crm:ZQ5", orjson.dumps({k: v for k, v in customer("crm", "ZQ5").items()
                                                         if k != "event_time"}))
        # consent: a marketing opt-in for the merged customer, and one for a record not seen yet
        consent = codec(CONSENT_EVENT).encode
        for source_id in ("ZQ1", "ZQ9"):
            feeder.send("consent.events", f"crm:{source_id}".encode(), consent({
                "source": "crm", "source_id": source_id, "statement": {
                    "purpose": "marketing", "channel": "email", "status": "granted", "legal_basis": "consent",
                    "effective_at": None, "expires_at": None, "collection_point": f"web form of {GIVEN}",
                    "notice_version": "v3", "evidence": f"signed by {EMAIL}", "event_time": NOW + 2}}))
        feeder.flush()
        watcher.wait_until(lambda v: v.live(probe_topic) and v.live("mastered.marketing")
                           and v.counts["dlq.pos"] + v.counts["dlq.crm"] == 3, timeout_s=30)

        feeder.send("erasure.requests", b"crm:ZQ1", codec(ERASURE_REQUEST).encode({
            "source": "crm", "source_id": "ZQ1", "golden_id": None, "requester": "dpo-desk",
            "requested_at": int(time.time() * 1000)}))
        feeder.flush()
        watcher.wait_until(lambda v: v.reasons[(probe_topic, "erased")] >= 1, timeout_s=20)
    finally:
        watcher.close()

    status, body = worker.get("/metrics")
    assert status == 200
    page = body.decode()
    assert 'hub_events_in_total{source="crm"}' in page
    worker.stop()  # flushes what it logs on the way out, too

    text = worker.log_path.read_text(encoding="utf-8", errors="replace")
    for value in SECRETS:
        assert value.lower() not in text.lower(), f"{value!r} in the worker log {worker.log_path}"
        assert value.lower() not in page.lower(), f"{value!r} on /metrics"

    entries = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("%"):  # librdkafka's own stderr lines (plain text)
            continue
        entry = json.loads(line)  # every Python log line is one JSON object
        assert {"ts", "level", "logger", "message"} <= set(entry), line
        entries.append(entry)
    loggers = {e["logger"] for e in entries}
    assert any(name == "hub" or name.startswith("hub.") for name in loggers), loggers
    assert any(name.startswith("faust") for name in loggers), loggers
    assert any(probe_topic in e["message"] for e in entries if e["logger"].startswith("hub"))
