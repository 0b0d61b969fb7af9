"""The lookup API on the real broker and Redis: a customer found by golden
id, loyalty id, e-mail, phone and source record, in the target's projection
with an ETag; the same 404 for unknown and withheld; the index following
updates and erasure; NPS answers visible through it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import orjson
import pytest
import redis

from hub.config import load_pipeline
from hub.demo import with_demo_tokens
from hub.connectors.embedded import free_port, stop_process
from hub.schemas import CUSTOMER_EVENT, ERASURE_REQUEST, SURVEY_RESPONSE, codec
from hub.testing.harness import Feeder, LocalHub, Watcher, open_goldens

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 60_000


def event(source, sid, at=T0, **fields):
    return {"source": source, "source_id": sid, "event_time": at, **fields}


ANNA_CRM = event("crm", "C1", given_name="Anna", family_name="Smith", birth_date="1980-02-03",
                 emails=[{"address": "anna.smith@gmail.com", "verified": True}], phones=[{"number": "07911 123456"}])
ANNA_POS = event("pos", "P3", at=T0 + 1, given_name="ANNA", family_name="SMITH", phones=[{"number": "+447911123456"}],
                 emails=[{"address": "anna.smith@gmail.com"}], loyalty_id="L000000042")
BOB_CRM = event("crm", "C2", given_name="Bob", family_name="Jones", birth_date="1975-11-30",
                emails=[{"address": "bob.jones@yahoo.co.uk"}], phones=[{"number": "07911 654321"}])
DORA_CRM = event("crm", "C9", given_name="Dora", family_name="Quill", birth_date="1990-01-01",
                 emails=[{"address": "dora.quill@gmail.com"}], loyalty_id="L000000099",
                 consents=[{"purpose": "service", "channel": "any", "status": "denied", "legal_basis": "contract",
                            "effective_at": None, "expires_at": None, "collection_point": "app",
                            "notice_version": "v1", "evidence": None, "event_time": T0}])


def _get(base: str, path: str, token: str | None, etag: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if etag:
        headers["If-None-Match"] = etag
    request = urllib.request.Request(base + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


class _Server(str):
    process: subprocess.Popen


def _lookup_server(redis_url: str, config_path, tmp_path) -> _Server:
    port = free_port()
    log = open(tmp_path / "lookup-server.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "hub", "lookup-server", "--port", str(port), "--config",
                                str(config_path)], env={**os.environ, "HUB_REDIS__URL": redis_url},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = _Server(f"http://127.0.0.1:{port}")
    base.process = process
    assert _until(lambda: _probe(base + "/health")), (tmp_path / "lookup-server.log").read_text()
    return base


def _probe(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _until(probe, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_lookup_by_every_identifier_scoped_and_following_changes(tmp_path):
    config_path = tmp_path / "hub.yaml"
    pipeline, tokens = with_demo_tokens(load_pipeline(None), config_path)
    pos_fields = {"golden_id", *next(t for t in pipeline.targets if t.name == "pos").fields}
    with LocalHub(pipeline, tmp_path) as hub:
        worker = hub.worker(config_file=config_path)
        watcher = Watcher(hub.bootstrap, pipeline.all_topics())
        feeder = Feeder(hub.bootstrap)
        for record in (ANNA_CRM, ANNA_POS, BOB_CRM, DORA_CRM):
            feeder.send(f"raw.{record['source']}", f"{record['source']}:{record['source_id']}".encode(),
                        codec(CUSTOMER_EVENT).encode(record))
        feeder.flush()
        view = watcher.wait_until(lambda v: len(v.live("customer.golden")) == 3, quiet_s=1.5)
        golden = {g["given_name"]: g for g in open_goldens(hub, view.live("customer.golden")).values()}
        anna = golden["Anna"]
        assert anna["members"] == ["crm:C1", "pos:P3"]
        base = worker.base_url + "/targets/pos/lookup?"

        def lookup(token=tokens.targets["pos"], etag=None, **query):
            return _get(base, urllib.parse.urlencode(query), token, etag)

        status, body, headers = lookup(golden_id=anna["golden_id"])
        assert status == 200, body
        found = orjson.loads(body)
        assert set(found) == pos_fields and found["loyalty_id"] == "L000000042" and "birth_date" not in found
        etag = headers["ETag"]
        # every identifier, written as people write them, finds the same customer and the same bytes
        for query in ({"loyalty_id": "l-0000-00042"}, {"email": " Anna.Smith@GMAIL.com"},
                      {"phone": "+44 7911 123456"}, {"phone": "07911123456"}, {"phone": "7911 123456", "region": "GB"},
                      {"source": "crm", "source_id": "C1"}, {"source": "pos", "source_id": "P3"}):
            status, again, headers = lookup(**query)
            assert (status, again, headers["ETag"]) == (200, body, etag), query
        assert lookup(etag=etag, email="anna.smith@gmail.com")[0] == 304

        # unknown and withheld (Dora denied service processing) answer alike: 404, a clear body
        unknown = lookup(email="nobody@example.com")
        withheld = lookup(email="dora.quill@gmail.com")
        assert unknown[0] == withheld[0] == 404 and unknown[1] == withheld[1]
        assert orjson.loads(unknown[1])["error"] == "not_found" and orjson.loads(unknown[1])["lookup"] == "email"
        assert lookup(loyalty_id="L000000099")[0] == 404
        assert lookup(golden_id="G-does-not-exist")[0] == 404
        assert lookup(source="crm", source_id="C404")[0] == 404
        # bad requests, scoped tokens
        status, body, _ = lookup(phone="12")
        assert status == 400 and orjson.loads(body)["error"] == "invalid_value"
        assert lookup(email="a@b.com", phone="07911123456")[0] == 400
        assert lookup(token=None, email="anna.smith@gmail.com")[0] == 401
        status, body, _ = lookup(token=tokens.targets["marketing"], email="anna.smith@gmail.com")
        assert status == 403 and b"Anna" not in body
        # the contact centre sees its own, wider slice of the same customer
        status, body, _ = _get(worker.base_url, "/targets/contact_center/lookup?phone=07911123456",
                               tokens.targets["contact_center"])
        assert status == 200 and orjson.loads(body)["birth_date"] == "1980-02-03"

        # `hub lookup-server` beside the worker answers from the same Redis with the same bytes
        server = _lookup_server(hub.redis_url, config_path, tmp_path)
        try:
            for query in ("phone=07911123456", "golden_id=" + anna["golden_id"], "email=nobody%40example.com"):
                expected = _get(worker.base_url, "/targets/pos/lookup?" + query, tokens.targets["pos"])
                got = _get(server, "/targets/pos/lookup?" + query, tokens.targets["pos"])
                assert (got[0], got[1], got[2].get("ETag")) == (expected[0], expected[1], expected[2].get("ETag"))
            assert _get(server, "/targets/pos/lookup?phone=07911123456", tokens.targets["marketing"])[0] == 403
        finally:
            stop_process(server.process)

        # the index follows the golden record: a changed e-mail finds Anna, the old one no longer does
        feeder.send("raw.crm", b"crm:C1", codec(CUSTOMER_EVENT).encode(
            {**ANNA_CRM, "event_time": T0 + 5000, "emails": [{"address": "anna@smith.example", "verified": True}]}))
        feeder.send("raw.pos", b"pos:P3", codec(CUSTOMER_EVENT).encode(
            {**ANNA_POS, "event_time": T0 + 5000, "emails": []}))
        feeder.flush()
        assert _until(lambda: lookup(email="anna@smith.example")[0] == 200)
        assert _until(lambda: lookup(email="anna.smith@gmail.com")[0] == 404)
        assert lookup(loyalty_id="L000000042")[0] == 200

        # NPS: an unhappy answer reaches the contact centre's view before the next call; a bad one is dead-lettered
        feeder.send("survey.events", b"pos:P3", codec(SURVEY_RESPONSE).encode(
            {"source": "pos", "source_id": "P3", "survey_id": "nps-2026-q4", "score": 3,
             "responded_at": T0 + 7000, "channel": "email"}))
        feeder.send("survey.events", b"crm:C1", orjson.dumps(  # JSON works too; older, other survey
            {"source": "crm", "source_id": "C1", "survey_id": "nps-2026-q3", "score": 9, "responded_at": T0}))
        feeder.send("survey.events", b"crm:C1", orjson.dumps(
            {"source": "crm", "source_id": "C1", "survey_id": "nps-2026-q3", "score": 42, "responded_at": T0}))
        feeder.send("survey.events", b"web:W9", orjson.dumps(  # a record not seen yet: waits for it
            {"source": "ecommerce", "source_id": "W9", "survey_id": "nps-2026-q4", "score": 10,
             "responded_at": T0}))
        feeder.flush()

        def survey_of(query: str, target: str = "contact_center"):
            status, body, _ = _get(worker.base_url, f"/targets/{target}/lookup?{query}", tokens.targets[target])
            return orjson.loads(body).get("survey") if status == 200 else None

        assert _until(lambda: (survey_of("loyalty_id=L000000042") or {}).get("responses") == 2)
        survey = survey_of("loyalty_id=L000000042")
        # contact_center receives no provenance (members, lineage): not which record answered either
        assert survey == {"last_survey_at": T0 + 7000, "last_survey_id": "nps-2026-q4", "last_score": 3,
                          "last_category": "detractor", "responses": 2, "average_score": 6.0}
        assert survey_of("phone=07911123456", target="pos")["last_category"] == "detractor"
        view = watcher.wait_until(lambda v: v.counts["dlq.survey"] == 1, quiet_s=0.2)
        assert view.reasons[("dlq.survey", "absurd_value")] == 1
        feeder.send("raw.ecommerce", b"ecommerce:W9", codec(CUSTOMER_EVENT).encode(
            event("ecommerce", "W9", given_name="Walt", family_name="Nine", emails=[{"address": "walt9@example.com"}])))
        feeder.flush()
        assert _until(lambda: (survey_of("email=walt9@example.com") or {}).get("last_category") == "promoter")
        assert worker.metric("hub_survey_events_total", outcome="pending") == 1

        # erasure: no identifier finds her any more, and no lookup key in Redis names her
        feeder.send("erasure.requests", b"pos:P3", codec(ERASURE_REQUEST).encode(
            {"source": "pos", "source_id": "P3", "golden_id": None, "requester": "dpo",
             "requested_at": int(time.time() * 1000)}))
        feeder.flush()
        assert _until(lambda: lookup(loyalty_id="L000000042")[0] == 404)
        for query in ({"golden_id": anna["golden_id"]}, {"email": "anna@smith.example"}, {"phone": "07911123456"},
                      {"source": "crm", "source_id": "C1"}):
            assert lookup(**query)[0] == 404, query
        client = redis.Redis.from_url(hub.redis_url)
        for key in client.scan_iter(match="hub:lk:*", count=1000):
            assert anna["golden_id"].encode() not in client.smembers(key)
        assert not client.exists("hub:srv:{pos:P3}", "hub:srv:{crm:C1}")  # her survey answers went too
        assert lookup(email="bob.jones@yahoo.co.uk")[0] == 200  # everybody else is still there

        status, body, _ = _get(worker.base_url, "/openapi.json", None)
        assert status == 200 and "/targets/{target}/lookup" in orjson.loads(body)["paths"]
        assert worker.metric("hub_lookup_requests_total", kind="email", status="200") >= 2
        assert worker.metric("hub_lookup_requests_total", kind="phone", status="400") == 1
        watcher.close()
