"""Source connectors on the real broker: Debezium change envelopes from a CDC
topic, `hub load` of a CSV file with a column mapping, Avro through a Schema
Registry (confluent-kafka's mock), and the HTTP ingestion endpoint of a
worker feeding a lookup cache end to end. What cannot become an event is kept
in dlq.<source> with its reason."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest
import yaml

from hub.access import digest
from hub.config import ConnectorConfig, PipelineConfig
from hub.connectors.kafka import ensure_topics
from hub.connectors.lookup_cache import LookupCache
from hub.connectors.runner import SinkConnector, SourceConnector
from hub.metrics import REGISTRY
from hub.records import ERROR_REASON, ERROR_STAGE, ERROR_TOPIC, InMessage
from hub.schemas import CANONICAL, codec
from hub.stages.ingest import IngestStage
from hub.testing.harness import LocalHub, wait_caught_up
from test_connector_delivery import produce, read_topic, running, wait_for

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000) - 60_000
CDC_TOPIC = "dbserver1.public.customers"
MAPPING = {"id": "source_id", "first_name": "given_name", "last_name": "family_name", "email": "emails",
           "loyalty": "loyalty_id"}


def change(op, before=None, after=None, wrapped=False) -> bytes:
    payload = {"before": before, "after": after, "op": op, "ts_ms": NOW + 9,
               "source": {"connector": "postgresql", "name": "dbserver1", "table": "customers", "ts_ms": NOW}}
    return orjson.dumps({"schema": {"type": "struct"}, "payload": payload} if wrapped else payload)


def ingest(pipeline, messages) -> tuple[list[dict], list]:
    """Run what landed on raw.<source> through the worker's own ingest stage."""
    batch = [InMessage(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1], m.headers())
             for m in messages]
    out = IngestStage(pipeline).process(batch).messages
    canonical = [codec(CANONICAL).decode(m.value) for m in out if m.topic == pipeline.topics.canonical]
    return canonical, [m for m in out if m.topic != pipeline.topics.canonical]


def test_debezium_changes_become_canonical_events_and_deletes(local_hub, pipeline):
    ensure_topics(local_hub.bootstrap, [CDC_TOPIC], 2)
    anna = {"id": 1, "first_name": "Anna", "last_name": "Smith", "email": "anna@example.org", "loyalty": "L1"}
    produce(local_hub.bootstrap, CDC_TOPIC, [
        (b'{"id": 1}', change("r", after=anna, wrapped=True), None),
        (b'{"id": 2}', change("c", after={**anna, "id": 2, "first_name": "Bob"}), None),
        (b'{"id": 1}', change("u", before=anna, after={**anna, "email": "anna.smith@example.org"}), None),
        (b'{"id": 2}', change("d", before={"id": 2}), None),
        (b'{"id": 2}', None, None),                     # Debezium's tombstone: skipped
        (b'{"id": 3}', change("t"), None),               # truncate: not a customer change, counted
        (b'{"id": 4}', b"\x00garbage", None),
        # ExtractNewRecordState (add.fields=op,source.ts_ms, delete.handling.mode=rewrite) on the same topic
        (b'{"id": 5}', orjson.dumps({"id": 5, "first_name": "Cara", "last_name": "Lane", "email": "cara@example.org",
                                     "loyalty": None, "__op": "c", "__source_ts_ms": NOW, "__deleted": "false"}), None),
        (b'{"id": 5}', orjson.dumps({"id": 5, "__op": "d", "__source_ts_ms": NOW, "__deleted": "true"}), None),
        (b'{"id": 5}', b'{"schema": null, "payload": null}', None),  # the JSON converter's tombstone
        (b'{"id": 6}', change("x", after=anna), None),   # not a Debezium op: dead-lettered
    ])
    config = ConnectorConfig(name="crm-cdc", source="crm", url=f"debezium:///{CDC_TOPIC}",
                             options={"mapping": MAPPING, "session_timeout_ms": 2000})
    connector = SourceConnector(config, pipeline, local_hub.bootstrap)
    with running(connector):
        raw = read_topic(local_hub.bootstrap, "raw.crm", 6)
        dead = read_topic(local_hub.bootstrap, "dlq.crm", 2)
        wait_for(lambda: connector.source.skipped == 3, timeout_s=30)
    assert connector.report.delivered == 6 and connector.report.rejected == 2
    assert connector.source.skipped_by_kind == {"tombstone": 2, "truncate": 1}
    assert REGISTRY.get_sample_value("hub_cdc_skipped_total", {"source": "crm", "kind": "truncate"}) >= 1
    events = sorted((orjson.loads(m.value()) for m in raw), key=lambda e: (e["source_id"], e["op"]))
    assert [(e["source_id"], e["op"]) for e in events] == [("1", "upsert"), ("1", "upsert"), ("2", "delete"),
                                                           ("2", "upsert"), ("5", "delete"), ("5", "upsert")]
    assert sorted(e["emails"][0]["address"] for e in events if e["source_id"] == "1") == [
        "anna.smith@example.org", "anna@example.org"]
    assert all(m.key() == f"crm:{orjson.loads(m.value())['source_id']}".encode() for m in raw)
    assert {orjson.loads(m.value())["event_time"] for m in raw} == {NOW}
    reasons = sorted(dict(m.headers())[ERROR_REASON] for m in dead)
    assert reasons == [b"not_decodable", b"schema_mismatch"]
    assert {dict(m.headers())[ERROR_TOPIC] for m in dead} == {CDC_TOPIC.encode()}
    assert {dict(m.headers())[ERROR_STAGE] for m in dead} == {b"connector:crm-cdc"}
    assert {m.value() for m in dead} == {change("x", after=anna), b"\x00garbage"}  # the original bytes

    canonical, rejected = ingest(pipeline, raw)
    assert rejected == [] and len(canonical) == 6
    assert sorted(c["record"]["source_id"] for c in canonical if c["record"]["op"] == "delete") == ["2", "5"]

    # offsets committed after delivery: a restart reads only what is new (proof that it runs: the new one
    # arrives; proof that it read all there is: its group at the end of the topic)
    again = SourceConnector(config, pipeline, local_hub.bootstrap)
    with running(again):
        produce(local_hub.bootstrap, CDC_TOPIC, [(b'{"id": 5}', change("c", after={**anna, "id": 5}), None)])
        wait_for(lambda: again.report.delivered >= 1)
        wait_caught_up(local_hub.bootstrap, "hub-cdc-crm", [CDC_TOPIC])
    assert again.report.delivered == 1 and again.report.rejected == 0


def test_hub_load_maps_a_csv_file(local_hub, pipeline, tmp_path):
    csv_file = tmp_path / "crm-export.csv"
    csv_file.write_text("CustNo,First,Last,Mail,Town,Card\n"
                        "C1,Anna,Smith,anna@example.org,Leeds,L9\n"
                        "C2,Bob,Jones,bob@example.org;b.jones@example.org,York,\n"
                        ",Nobody,Without-Id,,,\n")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({"CustNo": "source_id", "First": "given_name", "Last": "family_name",
                                       "Mail": "emails", "Town": "addresses.city", "Card": "loyalty_id"}))
    env = {**os.environ, "HUB_KAFKA__BOOTSTRAP_SERVERS": local_hub.bootstrap}
    done = subprocess.run([sys.executable, "-m", "hub", "load", str(csv_file), "--source", "crm",
                           "--mapping", str(mapping)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "2 events to raw.crm, 1 rejected to dlq.crm" in done.stdout
    raw = read_topic(local_hub.bootstrap, "raw.crm", 2)
    canonical, rejected = ingest(pipeline, raw)
    assert rejected == []
    by_id = {c["record"]["source_id"]: c["record"] for c in canonical}
    assert by_id["C1"]["loyalty_id"] == "L9" and by_id["C1"]["addresses"][0]["city"] == "Leeds"
    assert [e["address"] for e in by_id["C2"]["emails"]] == ["bob@example.org", "b.jones@example.org"]
    dead = read_topic(local_hub.bootstrap, "dlq.crm", 1)
    assert dict(dead[0].headers())[ERROR_REASON] == b"missing_field"
    assert b"line 4" in dict(dead[0].headers())["hub.error.exception"]

    unknown = subprocess.run([sys.executable, "-m", "hub", "load", str(csv_file), "--source", "nope"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "--source nope" in unknown.stderr


def test_avro_with_a_schema_registry(tmp_path):
    registry_url = "mock://hub-connector-test"
    pipeline = PipelineConfig.model_validate({"sources": [{"name": "crm", "schema_registry_url": registry_url}]})
    events = tmp_path / "crm.jsonl"
    events.write_text("\n".join(orjson.dumps({"source_id": f"C{i}", "event_time": NOW, "given_name": f"Ann{i}",
                                              "family_name": "Smith"}).decode() for i in range(3)))
    with LocalHub(pipeline, tmp_path / "hub") as hub:
        config = ConnectorConfig(name="crm-load", source="crm", url=events.as_uri(), **{"value.format": "avro"})
        report = SourceConnector(config, pipeline, hub.bootstrap).run()
        assert report.delivered == 3
        raw = read_topic(hub.bootstrap, "raw.crm", 3)
    from hub.connectors.schema_registry import registry_client

    schema_id = int.from_bytes(raw[0].value()[1:5], "big")
    assert raw[0].value()[0] == 0
    assert "CustomerEvent" in registry_client(registry_url).get_schema(schema_id).schema_str
    canonical, rejected = ingest(pipeline, raw)
    assert rejected == [] and sorted(c["record"]["given_name"] for c in canonical) == ["Ann0", "Ann1", "Ann2"]
    # without the registry the same bytes are not the hub's local schema: kept in the DLQ, not misread
    plain = PipelineConfig.model_validate({"sources": [{"name": "crm"}]})
    _, dead = ingest(plain, raw)
    assert len(dead) == 3


def post(url: str, body: bytes, token: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def test_http_ingestion_to_a_lookup_cache(tmp_path):
    token, other = "crm-secret-token", "pos-secret-token"
    config_file = tmp_path / "hub.yaml"
    config_file.write_text(yaml.safe_dump({
        "sources": [{"name": "crm", "tokens_sha256": [digest(token)], "max_request_bytes": 4096},
                    {"name": "pos", "tokens_sha256": [digest(other)]}],
        "targets": [{"name": "pos_lookup", "key": "loyalty_id", "purposes": ["service"],
                     "fields": ["given_name", "family_name", "loyalty_id"]}],
    }))
    from hub.config import load_pipeline

    pipeline = load_pipeline(config_file)
    with LocalHub(pipeline, tmp_path / "hub") as hub:
        worker = hub.worker(config_file=config_file)
        url = f"{worker.base_url}/sources/crm/events"
        anna = {"source_id": "C1", "event_time": NOW, "given_name": "Anna", "family_name": "Smith",
                "loyalty_id": "L0042"}
        bob = {"source": "crm", "source_id": "C2", "event_time": "2026-01-05T10:00:00Z", "given_name": "Bob",
               "family_name": "Jones", "loyalty_id": "L0043"}
        assert post(url, orjson.dumps(anna), None)[0] == 401
        assert post(url, orjson.dumps(anna), other)[0] == 401          # a token of another source
        # an unknown source answers as a known one does to a wrong token: names cannot be enumerated
        assert post(f"{worker.base_url}/sources/nope/events", b"{}", token) == post(url, b"{}", "guess") == (
            401, {"error": "unauthorized"})
        assert post(f"{worker.base_url}/sources/nope/events", b"{}", None)[0] == 401
        # JSON nested a thousand deep: a 400 naming the problem, not a 500
        status, body = post(url, b'{"source_id": "C9", "event_time": 1, "given_name": ' + b"[" * 1000
                            + b"]" * 1000 + b"}", token)
        assert status == 400 and body["errors"][0]["reason"] == "schema_mismatch"
        status, body = post(url, b"[" * 1000 + b"]" * 1000, token)
        assert status == 400
        # ids that would break out of a key name are refused, and no detail echoes a submitted value
        status, body = post(url, orjson.dumps([{**anna, "source_id": "C1\n{x}|y"}, {**anna, "op": "Anna Smith"}]),
                            token)
        assert status == 400 and [e["reason"] for e in body["errors"]] == ["invalid_id", "schema_mismatch"]
        assert b"Anna" not in orjson.dumps(body) and b"{x}" not in orjson.dumps(body)
        status, body = post(url, orjson.dumps([anna, {"source_id": "C3"}, {**bob, "source": "pos"}, "x"]), token)
        assert status == 400 and body["accepted"] == 0
        assert [(e["index"], e["reason"]) for e in body["errors"]] == [
            (1, "missing_field"), (2, "source_mismatch"), (3, "schema_mismatch")]
        assert post(url, b"[" + b" " * 5000 + b"]", token)[0] == 413
        assert post(url, b"{not json", token)[0] == 400
        status, body = post(url, orjson.dumps([anna, bob]), token)
        assert (status, body["accepted"]) == (202, 2)

        cache_config = ConnectorConfig(name="pos-cache", target="pos_lookup", url=hub.redis_url)
        connector = SinkConnector(cache_config, pipeline, hub.bootstrap, session_timeout_ms=2000)
        cache = LookupCache(hub.redis_url)
        with running(connector):
            wait_for(lambda: cache.get("L0042") is not None and cache.get("L0043") is not None, timeout_s=60)
        assert orjson.loads(cache.get("L0042"))["given_name"] == "Anna"
        assert worker.metric("hub_events_valid_total", source="crm") == 2
        assert worker.metric("hub_dlq_total", source="crm") == 0  # rejected requests never reached the topic


def test_debezium_avro_envelopes_through_a_schema_registry(local_hub, pipeline):
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from hub.connectors.schema_registry import registry_client

    registry_url, topic = "mock://debezium-avro", "dbserver2.public.customers"
    row = {"type": "record", "name": "Value", "namespace": "dbserver2.public.customers", "fields": [
        {"name": "id", "type": "int"}, {"name": "first_name", "type": ["null", "string"]},
        {"name": "last_name", "type": ["null", "string"]}, {"name": "email", "type": ["null", "string"]},
        {"name": "loyalty", "type": ["null", "string"]}]}
    envelope_schema = {"type": "record", "name": "Envelope", "namespace": "dbserver2.public.customers", "fields": [
        {"name": "before", "type": ["null", row], "default": None},
        {"name": "after", "type": ["null", "dbserver2.public.customers.Value"], "default": None},
        {"name": "source", "type": {"type": "record", "name": "Source", "namespace": "io.debezium.connector.postgresql",
                                    "fields": [{"name": "ts_ms", "type": "long"}, {"name": "table", "type": "string"}]}},
        {"name": "op", "type": "string"}, {"name": "ts_ms", "type": ["null", "long"], "default": None}]}
    serialize = AvroSerializer(registry_client(registry_url), orjson.dumps(envelope_schema).decode())
    context = SerializationContext(topic, MessageField.VALUE)
    anna = {"id": 7, "first_name": "Anna", "last_name": "Smith", "email": "anna@example.org", "loyalty": None}
    source = {"ts_ms": NOW, "table": "customers"}
    ensure_topics(local_hub.bootstrap, [topic], 1)
    produce(local_hub.bootstrap, topic, [
        (b"7", serialize({"before": None, "after": anna, "source": source, "op": "c", "ts_ms": NOW}, context), None),
        (b"7", serialize({"before": anna, "after": None, "source": source, "op": "d", "ts_ms": NOW}, context), None),
        (b"8", b"\x00\x00\x00\x03\xe7 not registered", None),
    ])
    config = ConnectorConfig(name="crm-cdc-avro", source="crm", url=f"debezium:///{topic}", options={
        "mapping": MAPPING, "converter": "avro", "schema_registry_url": registry_url, "session_timeout_ms": 2000})
    connector = SourceConnector(config, pipeline, local_hub.bootstrap)
    with running(connector):
        raw = read_topic(local_hub.bootstrap, "raw.crm", 2)
        dead = read_topic(local_hub.bootstrap, "dlq.crm", 1)
    events = [orjson.loads(m.value()) for m in raw]
    assert [(e["source_id"], e["op"]) for e in events] == [("7", "upsert"), ("7", "delete")]
    assert events[0]["given_name"] == "Anna" and events[0]["event_time"] == NOW
    assert dict(dead[0].headers())[ERROR_REASON] == b"not_decodable"
