"""Golden records on the real broker and Redis: the same events in any order
give the same golden records, and the audit trail rebuilds every past state
(`hub history`)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import orjson
import pytest

from hub.config import load_pipeline
from hub.connectors.kafka import read_topic
from hub.history import rebuild
from hub.schemas import CONSENT_EVENT, CUSTOMER_EVENT, ERASURE_REQUEST, GOLDEN, SURVEY_RESPONSE, codec
from hub.testing.harness import Feeder, LocalHub, Watcher, open_audits, open_goldens

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 600_000
STAMPS = ("updated_at", "trigger_produced_at", "cause")


def held(golden: dict) -> dict:
    """What a rebuilt record holds: every attribute with a value (no stamps)."""
    return {k: v for k, v in golden.items() if k not in STAMPS and v is not None}


def event(source, sid, at, **fields):
    return {"source": source, "source_id": sid, "event_time": at, **fields}


def person(n: int, given: str, family: str) -> list[dict]:
    """One customer in three sources, each source record sent twice (an older and a newer view)."""
    email, phone = f"{given.lower()}.{family.lower()}@example.com", f"07911 2000{n:02d}"
    dob = f"198{n}-0{n}-1{n}"
    return [
        event("crm", f"C{n}", T0, given_name=given, family_name=family, birth_date=dob,
              emails=[{"address": email}], phones=[{"number": phone}], loyalty_id=f"L{n:09d}",
              addresses=[{"line1": f"{n} Old Road", "city": "Leeds", "postcode": "LS1 4AB", "country": "GB"}]),
        event("crm", f"C{n}", T0 + 50_000, given_name=given, family_name=family, birth_date=dob,
              emails=[{"address": email, "verified": True}], phones=[{"number": phone}], loyalty_id=f"L{n:09d}",
              addresses=[{"line1": f"{n} New Street", "city": "York", "postcode": "YO1 7HH", "country": "GB"}],
              preferences={"language": "en"}),
        event("ecommerce", f"E{n}", T0 + 10_000, given_name=given[:-1] + given[-1].upper(), family_name=family,
              birth_date=dob, emails=[{"address": email}], phones=[{"number": phone}], gender="f",
              preferences={"language": "fr", "newsletter": "weekly"}),
        event("ecommerce", f"E{n}", T0 + 20_000, given_name=given, family_name=family, birth_date=dob,
              emails=[{"address": email}, {"address": f"{given.lower()}{n}@work.example"}],
              phones=[{"number": phone}], gender="female"),
        event("pos", f"P{n}", T0 + 30_000, given_name=given.upper(), family_name=family.upper(),
              phones=[{"number": phone}], emails=[{"address": email}], loyalty_id=f"L{n:09d}"),
        event("pos", f"P{n}", T0 + 5_000, given_name=given, family_name=family, phones=[{"number": phone}],
              emails=[{"address": email}], loyalty_id=f"LOLD{n}"),
    ]


EVENTS = person(1, "Alice", "Archer") + person(2, "Brian", "Booth") + person(3, "Chloe", "Carter") + [
    # a contact-centre record of Alice's, deleted by its source: gone whatever arrives after the deletion
    event("contact_center", "K1", T0 + 15_000, given_name="Alice", family_name="Archer",
          emails=[{"address": "alice.archer@example.com"}], phones=[{"number": "07911 200001"}]),
    event("contact_center", "K1", T0 + 45_000, op="delete"),
    event("contact_center", "K1", T0 + 1_000, given_name="Alice", family_name="Archer",
          emails=[{"address": "alice.archer@example.com"}]),
]


def _golden_by_members(events: list[dict], tmp_path) -> dict[tuple, dict]:
    pipeline = load_pipeline(None)
    with LocalHub(pipeline, tmp_path) as hub:
        hub.worker()
        watcher = Watcher(hub.bootstrap, [pipeline.topics.golden])
        feeder = Feeder(hub.bootstrap)
        for record in events:
            feeder.send(f"raw.{record['source']}", f"{record['source']}:{record['source_id']}".encode(),
                        codec(CUSTOMER_EVENT).encode(record))
            feeder.flush()  # one at a time, so the order sent is the order the hub reads
        view = watcher.wait_until(lambda v: sorted(len(codec(GOLDEN).decode(g)["members"])
                                                   for g in v.live(pipeline.topics.golden).values()) == [3, 3, 3],
                                  timeout_s=60, quiet_s=2.0)
        watcher.close()
        goldens = open_goldens(hub, view.live(pipeline.topics.golden)).values()
    return {tuple(g["members"]): {k: v for k, v in g.items() if k not in (*STAMPS, "golden_id", "version")}
            for g in goldens}


def test_shuffled_stream_gives_the_same_golden_records(tmp_path):
    shuffled = list(EVENTS)
    random.Random(4).shuffle(shuffled)
    assert shuffled != EVENTS
    in_order = _golden_by_members(EVENTS, tmp_path / "a")
    out_of_order = _golden_by_members(shuffled, tmp_path / "b")
    assert in_order == out_of_order
    assert sorted(in_order) == [("crm:C1", "ecommerce:E1", "pos:P1"), ("crm:C2", "ecommerce:E2", "pos:P2"),
                                ("crm:C3", "ecommerce:E3", "pos:P3")]  # K1 stays deleted
    alice = in_order[("crm:C1", "ecommerce:E1", "pos:P1")]
    # the newest view of each source record counts, whatever arrived last
    assert alice["addresses"][0]["line1"] == "1 New Street" and len(alice["addresses"]) == 1
    assert alice["loyalty_id"] == "L000000001"  # most_recent: crm's newest view, never pos's older LOLD1
    assert alice["lineage"]["loyalty_id"] == {"source": "crm", "source_id": "C1", "event_time": T0 + 50_000,
                                              "rule": "most_recent", "confirmed_at": T0 + 50_000, "stale": False}
    assert alice["gender"] == "F" and alice["lineage"]["gender"]["source"] == "ecommerce"
    # lineage of every attribute the record holds
    kept = [k for k in ("record_type", "given_name", "family_name", "birth_date", "gender", "loyalty_id") if alice[k]]
    assert sorted(alice["lineage"]) == sorted(kept)
    assert alice["lineage"]["given_name"] == {"source": "crm", "source_id": "C1", "event_time": T0 + 50_000,
                                              "rule": "source_priority", "confirmed_at": T0 + 50_000, "stale": False}
    assert {e["address"]: e["sources"] for e in alice["emails"]} == {
        "alice.archer@example.com": ["crm:C1", "ecommerce:E1", "pos:P1"], "alice1@work.example": ["ecommerce:E1"]}
    assert alice["emails"][0]["preferred"] and alice["emails"][0]["verified"]
    assert alice["preferences"] == {"language": "en"}  # the newest statement of each preference


def test_history_rebuilds_every_past_state(tmp_path):
    pipeline = load_pipeline(None)
    anna = person(1, "Anna", "Smith")
    with LocalHub(pipeline, tmp_path) as hub:
        worker = hub.worker()
        watcher = Watcher(hub.bootstrap, [pipeline.topics.golden])
        feeder = Feeder(hub.bootstrap)
        snapshots: list[tuple[int, dict | None]] = []

        def send(topic: str, key: str, value: bytes, until) -> None:
            feeder.send(topic, key.encode(), value)
            feeder.flush()
            view = watcher.wait_until(lambda v: any(until(g) for g in open_goldens(
                hub, v.live(pipeline.topics.golden)).values()), quiet_s=0.5)
            golden = next(g for g in open_goldens(hub, view.live(pipeline.topics.golden)).values() if until(g))
            snapshots.append((int(time.time() * 1000), golden))
            time.sleep(0.05)

        send("raw.crm", "crm:C1", codec(CUSTOMER_EVENT).encode(anna[0]), lambda g: g["version"] == 1)
        gid = snapshots[0][1]["golden_id"]
        send("raw.pos", "pos:P1", codec(CUSTOMER_EVENT).encode(anna[4]), lambda g: len(g["members"]) == 2)
        send("raw.crm", "crm:C1", codec(CUSTOMER_EVENT).encode(anna[1]),
             lambda g: g["addresses"] and g["addresses"][0]["line1"] == "1 New Street")
        send("consent.events", "crm:C1", codec(CONSENT_EVENT).encode({"source": "crm", "source_id": "C1", "statement": {
            "purpose": "marketing", "channel": "email", "status": "granted", "legal_basis": "consent",
            "effective_at": None, "expires_at": None, "collection_point": "web", "notice_version": "v3",
            "evidence": None, "event_time": T0 + 60_000}}), lambda g: bool(g["consents"]))
        send("survey.events", "pos:P1", codec(SURVEY_RESPONSE).encode(
            {"source": "pos", "source_id": "P1", "survey_id": "nps", "score": 4, "responded_at": T0 + 70_000,
             "channel": "store"}), lambda g: g["survey"] is not None)
        feeder.send("erasure.requests", b"crm:C1", codec(ERASURE_REQUEST).encode(
            {"source": "crm", "source_id": "C1", "golden_id": None, "requester": "dpo",
             "requested_at": int(time.time() * 1000)}))
        feeder.flush()
        watcher.wait_until(lambda v: v.latest[pipeline.topics.golden].get(gid, b"") is None, quiet_s=0.5)
        snapshots.append((int(time.time() * 1000), None))
        watcher.close()

        events = open_audits(hub, read_topic(hub.bootstrap, pipeline.topics.audit))
        assert [g["version"] for _, g in snapshots[:-1]] == [1, 2, 3, 4, 5]
        for at, golden in snapshots:
            expected = None if golden is None else held(golden)
            assert rebuild(events, gid, at) == expected, at
        assert rebuild(events, gid, snapshots[0][0] - 60_000) is None
        causes = [e["cause"] for e in events if e["golden_id"] == gid and e["kind"].startswith("golden_")]
        assert causes == ["source_event", "source_event", "source_event", "consent_changed", "survey_received"]

        # the command line: the history as text, and a past state as JSON
        env = {**os.environ, "HUB_KAFKA__BOOTSTRAP_SERVERS": hub.bootstrap}
        shown = subprocess.run([sys.executable, "-m", "hub", "history", gid], env=env, capture_output=True,
                               text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert "golden_created" in shown.stdout and "cause: consent_changed" in shown.stdout
        assert "erased" in shown.stdout.splitlines()[-1]
        assert '"1 Old Road"' in shown.stdout and '"1 New Street"' in shown.stdout  # before and after
        at, golden = snapshots[1]
        past = subprocess.run([sys.executable, "-m", "hub", "history", gid, "--at", str(at)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert past.returncode == 0, past.stderr
        assert orjson.loads(past.stdout) == held(golden)
        assert worker.metric("hub_golden_changes_total", kind="golden_created") == 1
