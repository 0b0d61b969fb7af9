"""Connector logic without a broker: column mappings, Debezium envelopes, the
connector table (schemes, entry points, missing extras), the documents sinks
write, and the webhook sink against a real HTTP server on loopback."""

from __future__ import annotations

import sys

import orjson
import pytest

from hub.config import ConfigError, ConnectorConfig, SourceConfig, load_pipeline
from hub.connectors import registry
from hub.connectors.documents import document, idempotency_key
from hub.connectors.files import FileSink, FileSource
from hub.connectors.mapping import MappingError, NoChange, check_mapping, from_debezium, map_row
from hub.connectors.webhook import WebhookError, WebhookSink
from hub.ports import Rejected
from hub.records import REASON_HEADER, InMessage
from hub.testing.harness import WebhookRecorder

CSV_MAPPING = {"CustNo": "source_id", "First": "given_name", "Last": "family_name", "Mail": "emails",
               "Street": "addresses.line1", "Town": "addresses.city", "Zip": "addresses.postcode",
               "Changed": "event_time", "Newsletter": "preferences.newsletter"}


def test_a_csv_row_maps_to_a_customer_event():
    row = {"CustNo": " 17 ", "First": "Anna", "Last": "Smith", "Mail": "a@x.org; anna@y.org", "Street": "1 High St",
           "Town": "Leeds", "Zip": "LS1 4AB", "Changed": "2026-11-24T09:30:00Z", "Newsletter": "weekly", "Other": "x"}
    event = map_row(row, CSV_MAPPING, "crm")
    assert event == {"source": "crm", "source_id": "17", "given_name": "Anna", "family_name": "Smith",
                     "emails": [{"address": "a@x.org"}, {"address": "anna@y.org"}],
                     "addresses": [{"line1": "1 High St", "city": "Leeds", "postcode": "LS1 4AB"}],
                     "event_time": 1795512600000, "preferences": {"newsletter": "weekly"}}


def test_empty_cells_are_absent_and_event_time_defaults():
    event = map_row({"CustNo": "9", "First": "", "Mail": " "}, CSV_MAPPING, "crm", event_time_ms=123)
    assert event == {"source": "crm", "source_id": "9", "event_time": 123}


def test_rows_that_cannot_be_events_say_why():
    with pytest.raises(MappingError) as missing:
        map_row({"First": "Anna"}, CSV_MAPPING, "crm", event_time_ms=1)
    assert missing.value.reason == "missing_field" and "source_id" in str(missing.value)
    with pytest.raises(MappingError) as no_time:
        map_row({"CustNo": "1"}, CSV_MAPPING, "crm")
    assert no_time.value.reason == "missing_field" and "event_time" in str(no_time.value)
    with pytest.raises(MappingError) as bad_time:
        map_row({"CustNo": "1", "Changed": "yesterday"}, CSV_MAPPING, "crm")
    assert bad_time.value.reason == "schema_mismatch" and "Changed" in str(bad_time.value)


def test_a_mapping_naming_an_unknown_field_is_refused():
    with pytest.raises(ValueError, match="'Mail'.*'email'"):
        check_mapping({"Mail": "email"})
    assert check_mapping({"a": "addresses.city", "b": "preferences.x"})


DEBEZIUM_MAPPING = {"id": "source_id", "first_name": "given_name", "last_name": "family_name", "email": "emails",
                    "dob": "birth_date"}


def envelope(op, before=None, after=None, ts_ms=1795490000000, wrapped=False):
    payload = {"before": before, "after": after, "op": op, "ts_ms": ts_ms + 5,
               "source": {"connector": "postgresql", "db": "crm", "table": "customers", "ts_ms": ts_ms}}
    return {"schema": {"type": "struct", "name": "crm.public.customers.Envelope"}, "payload": payload} if wrapped \
        else payload


@pytest.mark.parametrize("op", ["c", "r", "u"])
@pytest.mark.parametrize("wrapped", [False, True])
def test_debezium_creates_updates_and_snapshots_are_upserts(op, wrapped):
    row = {"id": 42, "first_name": "Anna", "last_name": "Smith", "email": "anna@x.org", "dob": 3685, "extra": 1}
    event = from_debezium(envelope(op, after=row, wrapped=wrapped), DEBEZIUM_MAPPING, "crm")
    assert event == {"source": "crm", "source_id": "42", "given_name": "Anna", "family_name": "Smith",
                     "emails": [{"address": "anna@x.org"}], "birth_date": "1980-02-03",
                     "event_time": 1795490000000, "op": "upsert"}


def test_debezium_deletes_become_delete_events():
    before = {"id": 42, "first_name": "Anna"}
    assert from_debezium(envelope("d", before=before), DEBEZIUM_MAPPING, "crm") == {
        "source": "crm", "source_id": "42", "event_time": 1795490000000, "op": "delete"}
    # without a before image (REPLICA IDENTITY DEFAULT) the key names the row
    key = {"schema": {}, "payload": {"id": 43}}
    assert from_debezium(envelope("d"), DEBEZIUM_MAPPING, "crm", key=key)["source_id"] == "43"
    assert from_debezium(None, DEBEZIUM_MAPPING, "crm") == NoChange("tombstone")  # Debezium's, after the delete


def test_debezium_microsecond_times_and_bad_envelopes():
    event = from_debezium(envelope("c", after={"id": 1}, ts_ms=1795490000000123), DEBEZIUM_MAPPING, "crm")
    assert event["event_time"] == 1795490000000
    # a truncate changes no customer: counted by the connector, not dead-lettered (test_debezium_forms)
    assert from_debezium(envelope("t"), DEBEZIUM_MAPPING, "crm") == NoChange("truncate", "crm.customers")
    with pytest.raises(MappingError) as no_after:
        from_debezium(envelope("u"), DEBEZIUM_MAPPING, "crm")
    assert no_after.value.reason == "missing_field"
    with pytest.raises(MappingError):
        from_debezium([1, 2], DEBEZIUM_MAPPING, "crm")


# --- the connector table --------------------------------------------------

@pytest.mark.parametrize("url, cls", [
    ("http://h/x", "WebhookSink"), ("https://h/x", "WebhookSink"), ("file:///tmp/x.jsonl", "FileSink"),
    ("redis://h:6379/0", "LookupCacheSink"), ("unix:///tmp/r.sock", "LookupCacheSink"),
    ("redis+cluster://h1:7000,h2:7000", "LookupCacheSink"), ("kafka://h:9092/t", "KafkaTopicSink")])
def test_sinks_are_chosen_by_scheme(url, cls):
    assert registry.load("sink", registry.scheme_of(url)).__name__ == cls


def test_an_unknown_scheme_names_the_known_ones_and_the_entry_point_group():
    with pytest.raises(registry.ConnectorError, match=r"'ftp'.*'http'.*hub\.sinks"):
        registry.load("sink", "ftp")


def test_a_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.delitem(sys.modules, "hub.connectors.schema_registry", raising=False)
    monkeypatch.setitem(sys.modules, "confluent_kafka.schema_registry", None)  # as if not installed
    with pytest.raises(registry.MissingExtra, match=r"pip install 'cmdm-hub\[schemaregistry\]'"):
        registry.load("serde", "schema-registry")


def test_third_party_connectors_register_through_an_entry_point(tmp_path, monkeypatch):
    (tmp_path / "acme_sinks.py").write_text("class ListSink:\n    def __init__(self, url, **options):\n"
                                            "        self.url = url\n        self.options = options\n")
    dist = tmp_path / "acme_sinks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-sinks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hub.sinks]\nacme = acme_sinks:ListSink\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sink = registry.sink_for("acme://somewhere", batch=3)
    assert type(sink).__name__ == "ListSink" and sink.url == "acme://somewhere" and sink.options == {"batch": 3}


# --- configuration --------------------------------------------------------

def test_connectors_are_configured_with_kafka_connect_names(tmp_path):
    path = tmp_path / "hub.yaml"
    path.write_text("""
sources: [{name: crm}]
targets: [{name: pos, fields: [given_name]}]
connectors:
  - name: pos-webhook
    target: pos
    url: https://pos.example/hook
    errors.tolerance: none
    errors.retries: 3
    errors.deadletterqueue.topic.name: dlq.pos-hook
  - {name: crm-cdc, source: crm, url: "debezium:///dbserver1.public.customers"}
""")
    pipeline = load_pipeline(path)
    hook, cdc = pipeline.connectors
    assert (hook.errors_tolerance, hook.errors_retries, hook.dlq_topic) == ("none", 3, "dlq.pos-hook")
    assert cdc.dlq_topic == "dlq.crm" and cdc.errors_tolerance == "all"
    assert "dlq.pos-hook" in pipeline.all_topics()


@pytest.mark.parametrize("entry, message", [
    ("{name: x, target: nope, url: 'http://h'}", "no target named 'nope'"),
    ("{name: x, url: 'http://h'}", "exactly one of target"),
    ("{name: x, target: pos, url: 'nothing'}", "scheme://"),
    ("{name: x, target: pos, url: 'http://h', errors.tolerance: some}", "errors.tolerance"),
])
def test_bad_connector_entries_name_the_field(tmp_path, entry, message):
    path = tmp_path / "hub.yaml"
    path.write_text(f"sources: [{{name: crm}}]\ntargets: [{{name: pos, fields: [given_name]}}]\nconnectors: [{entry}]\n")
    with pytest.raises(ConfigError, match=message):
        load_pipeline(path)


# --- documents, file sink and source -------------------------------------

def upsert(key=b"G1", value=b'{"golden_id": "G1"}', offset=0):
    return InMessage("mastered.pos", 0, offset, key, value, None, [])


def tombstone(key=b"G1", offset=1, reason=b"consent_revoked"):
    return InMessage("mastered.pos", 0, offset, key, None, None, [(REASON_HEADER, reason)])


def test_idempotency_keys_follow_content_for_upserts_and_position_for_deletes():
    assert idempotency_key(upsert(offset=1)) == idempotency_key(upsert(offset=9))  # the same projection re-sent
    assert idempotency_key(upsert()) != idempotency_key(upsert(value=b'{"golden_id": "G1", "x": 1}'))
    assert idempotency_key(tombstone(offset=1)) != idempotency_key(tombstone(offset=5))
    assert document(tombstone())["op"] == "delete" and document(tombstone())["reason"] == "consent_revoked"
    assert document(upsert(value=b"\x00\x00\x00\x00\x07avro"))["value_base64"] == "AAAAAAdhdnJv"


def test_file_sink_appends_upserts_and_deletes(tmp_path):
    sink = FileSink((tmp_path / "out" / "pos.jsonl").as_uri())
    sink.setup()
    sink.add(upsert())
    sink.add(tombstone())
    sink.flush()
    sink.flush()  # nothing pending: nothing written
    lines = [orjson.loads(line) for line in (tmp_path / "out" / "pos.jsonl").read_bytes().splitlines()]
    assert [(d["op"], d["key"]) for d in lines] == [("upsert", "G1"), ("delete", "G1")]
    assert lines[0]["value"] == {"golden_id": "G1"}


def test_file_source_reads_jsonl_and_keeps_bad_lines(tmp_path):
    path = tmp_path / "crm.jsonl"
    path.write_text('{"source_id": "C1", "event_time": 1}\n\nnot json\n[1]\n{"source_id": "C2", "event_time": 2}\n')
    source = FileSource(path.as_uri(), SourceConfig(name="crm"))
    source.setup()
    items = source.poll(2) + source.poll(10)
    assert source.poll(10) is None
    source.close()
    assert [i["source_id"] for i in items if isinstance(i, dict)] == ["C1", "C2"]
    assert all(i["source"] == "crm" for i in items if isinstance(i, dict))
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert [(r.reason, r.detail.split(":")[0]) for r in rejected] == [("not_decodable", "line 3"),
                                                                      ("schema_mismatch", "line 4")]


def test_file_source_maps_csv_columns(tmp_path):
    path = tmp_path / "crm.csv"
    path.write_text("CustNo,First,Last,Mail\n1,Anna,Smith,a@x.org\n,No,Id,\n")
    source = FileSource(str(path), SourceConfig(name="crm"), mapping=CSV_MAPPING, event_time_ms=77)
    source.setup()
    first, second = source.poll(10)
    assert first == {"source": "crm", "source_id": "1", "given_name": "Anna", "family_name": "Smith",
                     "emails": [{"address": "a@x.org"}], "event_time": 77}
    assert isinstance(second, Rejected) and second.reason == "missing_field" and "line 3" in second.detail


def _csv_items(path, mapping=CSV_MAPPING):
    source = FileSource(str(path), SourceConfig(name="crm"), mapping=mapping, event_time_ms=77)
    source.setup()
    items = []
    while (batch := source.poll(1000)) is not None:
        items += batch
    source.close()
    return items


def test_a_malformed_csv_line_is_rejected_alone_with_its_line_number(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text("CustNo,First,Last,Mail\n"
                    "C1,Anna,Smith,a@x.org\n"
                    'C2,"Bob,Jones,b@x.org\n'          # an unclosed quote
                    "C3,Cara,Brown,c@x.org\n"
                    'C4,Dan,"Grey, Jr",d@x.org\n'      # a quoted delimiter: fine
                    "C5,Eve,White,e@x.org,extra\n"    # one field too many
                    'C6,Fay,"Black\nSmith",f@x.org\n'  # a quoted field over two lines: fine
                    "C7,Gil,Green,g@x.org\n")
    items = _csv_items(path)
    assert [i["source_id"] for i in items if isinstance(i, dict)] == ["C1", "C3", "C4", "C6", "C7"]
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert [(r.reason, r.detail.split(":")[0], r.raw) for r in rejected] == [
        ("not_decodable", "line 3", b'C2,"Bob,Jones,b@x.org'), ("not_decodable", "line 6", b"C5,Eve,White,e@x.org,extra")]
    assert next(i for i in items if isinstance(i, dict) and i["source_id"] == "C4")["family_name"] == "Grey, Jr"


def test_an_unclosed_quote_does_not_swallow_the_rest_of_a_large_file(tmp_path):
    path = tmp_path / "big.csv"
    rows = [f"C{n},Name{n},Family{n},m{n}@x.org" for n in range(6000)]  # past csv's 128 KB field limit
    rows[2] = 'C2,"Unclosed,Family2,m2@x.org'
    path.write_text("CustNo,First,Last,Mail\n" + "\n".join(rows) + "\n")
    items = _csv_items(path)
    assert len(items) == 6000
    assert [(i.reason, i.detail.split(":")[0]) for i in items if isinstance(i, Rejected)] == [("not_decodable", "line 4")]


def test_a_csv_without_a_mapping_needs_a_column_for_source_id(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("CustNo,First\n1,Anna\n")
    with pytest.raises(ValueError, match="no column is named like an event field for source_id.*--mapping"):
        FileSource(str(path), SourceConfig(name="crm")).setup()
    with pytest.raises(ValueError, match="the mapping gives source_id no column"):
        FileSource(str(path), SourceConfig(name="crm"), mapping={"First": "given_name"}).setup()
    named = tmp_path / "named.csv"
    named.write_text("\ufeffsource_id,given_name,event_time\n1,Anna,2026-01-01T00:00:00Z\n")  # a BOM, as Excel writes
    assert _csv_items(named, mapping=None) == [{"source": "crm", "source_id": "1", "given_name": "Anna",
                                                "event_time": 1767225600000}]


# --- webhook sink against a real HTTP server ------------------------------

def test_webhook_sink_batches_and_sends_an_idempotency_key():
    server = WebhookRecorder()
    try:
        sink = WebhookSink(server.url, max_records=2, headers={"Authorization": "Bearer t"})
        sink.setup()
        for i in range(4):
            sink.add(upsert(key=f"G{i}".encode(), value=orjson.dumps({"golden_id": f"G{i}"}), offset=i))
        sink.add(tombstone(key=b"G0", offset=4))
        sink.flush()
        assert [len(body["records"]) for _, body in server.requests] == [2, 2, 1]
        headers, body = server.requests[-1]
        assert headers["Idempotency-Key"] == body["records"][0]["idempotency_key"]
        assert headers["Authorization"] == "Bearer t"
        assert body["records"][0]["op"] == "delete"
    finally:
        server.close()


def test_webhook_sink_raises_on_an_error_status_and_holds_nothing_after():
    server = WebhookRecorder(fail_first=1, status=503)
    try:
        sink = WebhookSink(server.url)
        sink.add(upsert())
        with pytest.raises(WebhookError, match="503"):
            sink.flush()
        sink.flush()  # the failed record is not kept: the caller re-adds what it retries
        assert server.requests == []
    finally:
        server.close()


def test_webhook_sink_raises_when_nothing_listens():
    server = WebhookRecorder()
    url = server.url
    server.close()
    sink = WebhookSink(url, timeout_s=2)
    sink.add(upsert())
    with pytest.raises(WebhookError):
        sink.flush()


def test_connector_config_keeps_options():
    config = ConnectorConfig(name="x", target="pos", url="http://h", options={"max_records": 10})
    assert config.options == {"max_records": 10} and config.batch_size == 500


def test_an_option_a_connector_does_not_take_names_the_connector():
    from hub.config import PipelineConfig
    from hub.connectors.runner import run_all

    pipeline = PipelineConfig.model_validate({
        "sources": [{"name": "crm"}], "targets": [{"name": "pos", "fields": ["given_name"]}],
        "connectors": [{"name": "pos-hook", "target": "pos", "url": "http://h/x", "options": {"retries": 3}}]})
    with pytest.raises(registry.ConnectorError, match=r"connector pos-hook \(http://h/x\):.*retries"):
        run_all(pipeline, "127.0.0.1:1")


def test_schema_registry_ids_it_does_not_hold_and_a_registry_out_of_reach():
    """An unknown id is bad input (dead-lettered as unknown_schema); a registry that
    cannot be reached is infrastructure (ConnectionError: the stage retries)."""
    from hub.config import QualityConfig
    from hub.connectors.schema_registry import RegistryAvro
    from hub.validation import validate_raw

    known = RegistryAvro("mock://unit-registry")
    payload = known.encode("raw.crm", {"source": "crm", "source_id": "C1", "event_time": 1795490000000})
    decode = lambda p: known.decode("raw.crm", p)  # noqa: E731
    assert validate_raw(payload, "crm", QualityConfig(), 1795490000000, decode)["source_id"] == "C1"
    unknown = validate_raw(b"\x00\x00\x00\x03\xe7abc", "crm", QualityConfig(), 1795490000000, decode)
    assert unknown.reason == "unknown_schema" and "999" in unknown.detail
    away = RegistryAvro("http://127.0.0.1:1", record_name=None)
    with pytest.raises(ConnectionError, match="schema registry"):
        validate_raw(payload, "crm", QualityConfig(), 1795490000000, lambda p: away.decode("raw.crm", p))
