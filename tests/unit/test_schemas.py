"""Unit tests for hub.schemas: loading, the Confluent wire format, and schema evolution."""

from __future__ import annotations

import copy
import io
import json
import struct

import fastavro
import pytest

from hub.schemas import SchemaError, codec, parsed, reader_name, registry_ids, schema_dir

T0 = 1_700_000_000_000
HEADER = struct.Struct(">bI")
HISTORY = sorted(p.stem for p in (schema_dir() / "history").glob("hub.*.avsc"))
CURRENT = sorted(p.stem for p in schema_dir().glob("hub.*.avsc"))


# ------------------------------------------------------------------ realistic examples


def customer_event() -> dict:
    return {
        "source": "crm", "source_id": "C-1001", "op": "upsert", "event_time": T0,
        "record_type": "person", "given_name": "Ann", "middle_name": None, "family_name": "Smith",
        "birth_date": "1984-07-12", "gender": "female",
        "emails": [{"address": "ann.smith@example.com", "kind": "personal", "verified": True}],
        "phones": [{"number": "+447911123456", "kind": "mobile", "verified": False}],
        "addresses": [{"line1": "12 High Street", "line2": None, "city": "Leeds", "region": None,
                       "postcode": "LS1 4AB", "country": "GB", "kind": "home", "verified": False}],
        "national_id": None, "loyalty_id": "L-77", "organisation_name": "Acme Ltd",
        "account_ref": "crm:A-7", "lifecycle": "contact", "converted_from": "marketing:L-5",
        "preferences": {"language": "en"},
        "consents": [consent_statement()],
        "invalid_values": {"birth_date": "1984-16-07"},
    }


def consent_statement(**overrides) -> dict:
    statement = {"purpose": "marketing", "channel": "email", "status": "granted", "legal_basis": "consent",
                 "effective_at": None, "expires_at": T0 + 86_400_000, "collection_point": "web-signup",
                 "notice_version": "2023-01", "evidence": None, "event_time": T0 - 5000}
    statement.update(overrides)
    return statement


def match_decision() -> dict:
    return {
        "decision_id": "D-3f2a", "source": "pos", "source_id": "P-9", "golden_id": "G0123456789abcdef0123",
        "outcome": "merge", "score": 24.0102, "upper_threshold": 8.0, "lower_threshold": 3.0,
        "merged_golden_ids": ["G9"],
        "candidates": [{"golden_id": "G0123456789abcdef0123", "member": "crm:C-1001", "score": 24.0102,
                        "comparisons": [{"attribute": "given_name", "level": "jaro_winkler>=0.92", "weight": 4.0},
                                        {"attribute": "email", "level": "exact", "weight": 12.5507}]}],
        "blocking_keys_skipped": 1, "decided_at": T0 + 10,
        "held_for_review": "the golden record would hold 101 source records, more than max_golden_size 100",
    }


def canonical() -> dict:
    return {
        "record": customer_event(),
        "quality": {"completeness": 0.8571, "validity": 1.0, "score": 0.9143, "issues": ["phone.invalid"]},
        "ingested_at": T0 + 5,
        "origin": {"topic": "raw.crm", "partition": 3, "offset": 12345, "produced_at": T0 + 1},
        "sealed": None,
    }


def linked() -> dict:
    return {"golden_id": "G0123456789abcdef0123", "kind": "contribution", "canonical": canonical(),
            "decision": match_decision(), "absorbed_golden_ids": ["G9"], "cause": "source_event",
            "split_member": None, "split_to": None}


def split_instruction() -> dict:
    return {"golden_id": "G1", "kind": "split", "canonical": None, "decision": None, "absorbed_golden_ids": [],
            "cause": "steward", "split_member": "pos:P-9", "split_to": "G2"}


def erasure_request() -> dict:
    return {"source": "crm", "source_id": "C-1", "golden_id": None, "requester": "dpo", "requested_at": T0}


def steward_action() -> dict:
    return {"action": "split", "member": "pos:P-9", "others": ["crm:C-1", "web:W-2"], "actor": "steward-7",
            "reason": "different people at one address", "at": T0}


def golden() -> dict:
    return {
        "golden_id": "G0123456789abcdef0123", "version": 3, "record_type": "person",
        "given_name": "Ann", "middle_name": None, "family_name": "Smith", "birth_date": "1984-07-12",
        "gender": "female", "national_id": None, "loyalty_id": "L-77", "organisation_name": None,
        "account_ref": "crm:A-7", "lifecycle": "contact", "account_golden_id": "G9", "household_id": "HH1f",
        "emails": [{"address": "ann.smith@example.com", "verified": True, "preferred": True,
                    "sources": ["crm:C-1001", "pos:P-9"], "confirmed_at": T0, "stale": False}],
        "phones": [{"number": "+447911123456", "verified": False, "preferred": True, "sources": ["crm:C-1001"],
                    "confirmed_at": T0 - 900 * 86_400_000, "stale": True}],
        "addresses": [{"line1": "12 High Street", "line2": None, "city": "Leeds", "region": None,
                       "postcode": "LS1 4AB", "country": "GB", "verified": False, "preferred": True,
                       "sources": ["crm:C-1001"], "confirmed_at": T0, "stale": False}],
        "preferences": {"language": "en"},
        "consents": [{"subject": "crm:C-1001", "statement": consent_statement()}],
        "lineage": {"given_name": {"source": "crm", "source_id": "C-1001", "event_time": T0, "rule": "source_priority",
                                   "confirmed_at": T0, "stale": False}},
        "freshness": 0.6667, "stale_attributes": ["phones"],
        "members": ["crm:C-1001", "pos:P-9"], "quality_score": 0.88, "updated_at": T0 + 20,
        "last_event_time": T0, "trigger_produced_at": T0 + 1, "cause": "source_event",
        "survey": {"last_survey_at": T0 - 10, "last_survey_id": "nps-2026-q4", "last_score": 3,
                   "last_category": "detractor", "responses": 2, "average_score": 5.5, "source": "crm:C-1001"},
        "sealed": None,
    }


def audit() -> dict:
    return {"audit_id": "A-1", "at": T0 + 30, "kind": "golden_merged", "golden_id": "G0123456789abcdef0123",
            "subject": "pos:P-9", "cause": "source_event", "decision": match_decision(),
            "before_version": 2, "after_version": 3, "changed_attributes": ["emails", "members"],
            "changes": [{"attribute": "members", "before": '["crm:C-1001"]', "after": '["crm:C-1001","pos:P-9"]'}],
            "sealed": None}


def consent_event() -> dict:
    return {"source": "ecommerce", "source_id": "E-5", "statement": consent_statement(channel="sms", status="revoked")}


def survey_response() -> dict:
    return {"source": "crm", "source_id": "C-1001", "survey_id": "nps-2026-q4", "score": 3,
            "responded_at": T0 - 10, "channel": "email"}


EXAMPLES = {
    "hub.SurveyResponse": survey_response,
    "hub.CustomerEvent": customer_event,
    "hub.CanonicalCustomer": canonical,
    "hub.LinkedRecord": linked,
    "hub.MatchDecision": match_decision,
    "hub.GoldenRecord": golden,
    "hub.AuditEvent": audit,
    "hub.ConsentEvent": consent_event,
    "hub.ErasureRequest": erasure_request,
    "hub.StewardAction": steward_action,
}


# ------------------------------------------------------------------ a generic example builder


def _collect_named(node, table: dict) -> None:
    if isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed") and "name" in node:
            table.setdefault(node["name"], node)
        for value in node.values():
            _collect_named(value, table)
    elif isinstance(node, list):
        for value in node:
            _collect_named(value, table)


def _global_named() -> dict:
    table: dict = {}
    for name in CURRENT:
        _collect_named(parsed(name), table)
    return table


def example_for(schema, local: dict | None = None, field: str = "v"):
    """A deterministic, fully populated datum for a parsed schema (non-null union branches)."""
    if local is None:
        local = {}
        _collect_named(schema, local)
        for name, node in _global_named().items():
            local.setdefault(name, node)
    if isinstance(schema, str):
        primitives = {"string": f"{field}-value", "long": T0, "int": 7, "double": 0.25, "float": 0.5,
                      "boolean": True, "bytes": b"\x01\x02", "null": None}
        if schema in primitives:
            return primitives[schema]
        return example_for(local[schema], local, field)
    if isinstance(schema, list):
        branch = next(b for b in schema if b != "null")
        return example_for(branch, local, field)
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: example_for(f["type"], local, f["name"]) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][-1]
    if kind == "array":
        return [example_for(schema["items"], local, field)]
    if kind == "map":
        return {"key": example_for(schema["values"], local, field)}
    if kind == "fixed":
        return b"\x00" * schema["size"]
    return example_for(kind, local, field)


def write(schema, datum) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, datum)
    return buf.getvalue()


def read(data: bytes, writer, reader):
    buf = io.BytesIO(data)
    result = fastavro.schemaless_reader(buf, writer, reader)
    assert buf.tell() == len(data)
    return result


# ------------------------------------------------------------------ loading


def test_registry_lists_the_record_types():
    ids = registry_ids()
    assert not any(name.startswith("_") for name in ids)
    for name in EXAMPLES:
        assert name in ids
    assert len(set(ids.values())) == len(ids), "schema ids must never be reused"


@pytest.mark.parametrize("name", sorted(registry_ids()))
def test_every_registered_schema_loads(name):
    avro = codec(name)
    assert avro.schema_id == registry_ids()[name]
    assert avro.schema["type"] == "record"
    assert avro.schema["name"] == ".".join(name.split(".")[:2])
    path = schema_dir() / f"{name}.avsc"
    assert path.is_file() or (schema_dir() / "history" / f"{name}.avsc").is_file()


@pytest.mark.parametrize("name", CURRENT + HISTORY)
def test_every_schema_file_parses(name):
    assert parsed(name)["name"] == ".".join(name.split(".")[:2])


def test_timestamp_logical_types_are_plain_longs():
    text = json.dumps(parsed("hub.GoldenRecord"))
    assert "timestamp-millis" not in text
    decoded = codec("hub.GoldenRecord").decode(codec("hub.GoldenRecord").encode(golden()))
    assert isinstance(decoded["updated_at"], int)


def test_unknown_schema_name():
    with pytest.raises(KeyError):
        parsed("hub.NoSuchRecord")


# ------------------------------------------------------------------ wire format round trips


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_round_trip(name):
    example = EXAMPLES[name]()
    original = copy.deepcopy(example)
    payload = codec(name).encode(example)
    assert example == original  # encoding does not mutate
    magic, schema_id = HEADER.unpack_from(payload)
    assert magic == 0 and schema_id == registry_ids()[name]
    assert codec(name).decode(payload) == original


def test_minimal_records_get_defaults():
    decision = {k: v for k, v in match_decision().items()
                if k not in ("score", "merged_golden_ids", "candidates", "blocking_keys_skipped")}
    out = codec("hub.MatchDecision").decode(codec("hub.MatchDecision").encode(decision))
    assert out["score"] is None and out["merged_golden_ids"] == [] and out["candidates"] == []
    assert out["blocking_keys_skipped"] == 0

    recompute = codec("hub.LinkedRecord").decode(codec("hub.LinkedRecord").encode(
        {"golden_id": "G1", "kind": "recompute"}))
    assert recompute == {"golden_id": "G1", "kind": "recompute", "canonical": None, "decision": None,
                         "absorbed_golden_ids": [], "cause": "source_event", "split_member": None,
                         "split_to": None}

    statement = {"purpose": "marketing", "status": "denied", "event_time": T0}
    out = codec("hub.ConsentEvent").decode(codec("hub.ConsentEvent").encode(
        {"source": "crm", "source_id": "1", "statement": statement}))
    assert out["statement"]["channel"] == "any"
    assert out["statement"]["legal_basis"] == "consent"
    assert out["statement"]["expires_at"] is None


def test_encode_rejects_an_invalid_record():
    bad = golden()
    del bad["members"]
    with pytest.raises((ValueError, TypeError)):
        codec("hub.GoldenRecord").encode(bad)


# ------------------------------------------------------------------ evolution


@pytest.mark.parametrize("name", CURRENT)
def test_current_schema_reads_its_own_data(name):
    schema = parsed(name)
    datum = example_for(schema)
    assert read(write(schema, datum), schema, schema) == datum


def test_there_is_history_to_check():
    assert "hub.CustomerEvent.v1" in HISTORY


def _check_resolved(written, resolved, writer_schema, reader_schema, local):
    """Every field the writer had keeps its value; every field it lacked has the reader default."""
    if isinstance(reader_schema, str) and reader_schema in local:
        reader_schema = local[reader_schema]
    if isinstance(writer_schema, str) and writer_schema in local:
        writer_schema = local[writer_schema]
    if isinstance(reader_schema, dict) and reader_schema.get("type") == "record":
        writer_fields = {f["name"]: f for f in writer_schema["fields"]}
        assert set(resolved) == {f["name"] for f in reader_schema["fields"]}
        for field in reader_schema["fields"]:
            fname = field["name"]
            if fname in writer_fields:
                _check_resolved(written[fname], resolved[fname], writer_fields[fname]["type"], field["type"], local)
            else:
                assert "default" in field, f"{fname} added without a default"
                assert resolved[fname] == field["default"], fname
    elif isinstance(reader_schema, list) and written is not None:  # a union: the branch the writer used
        branch = next(b for b in reader_schema if _branch_name(b, local) == _type_name(written, writer_schema, local))
        writer_branch = next(b for b in writer_schema if _branch_name(b, local) == _branch_name(branch, local))
        _check_resolved(written, resolved, writer_branch, branch, local)
    elif isinstance(reader_schema, dict) and reader_schema.get("type") == "array":
        assert len(resolved) == len(written)
        for w, r in zip(written, resolved):
            _check_resolved(w, r, writer_schema["items"], reader_schema["items"], local)
    elif isinstance(reader_schema, dict) and reader_schema.get("type") == "map":
        assert set(resolved) == set(written)
        for key in written:
            _check_resolved(written[key], resolved[key], writer_schema["values"], reader_schema["values"], local)
    else:
        assert resolved == written


def _branch_name(branch, local) -> str:
    if isinstance(branch, str):
        return branch
    return branch.get("name") or branch["type"]


def _type_name(value, union, local) -> str:
    """Which branch of a union the writer used for `value` (records by their fields)."""
    if isinstance(value, dict):
        for branch in union:
            node = local.get(branch, branch) if isinstance(branch, str) else branch
            if isinstance(node, dict) and node.get("type") == "record" and set(value) == {
                    f["name"] for f in node["fields"]}:
                return _branch_name(branch, local)
    for branch in union:
        if _branch_name(branch, local) in ("string", "bytes", "long", "int", "double", "boolean") \
                and not isinstance(value, dict):
            return _branch_name(branch, local)
    raise AssertionError(f"no branch for {value!r}")


@pytest.mark.parametrize("history_name", HISTORY)
def test_history_data_is_readable_by_the_current_schema(history_name):
    writer = parsed(history_name)
    current = reader_name(history_name)
    assert current != history_name and current in CURRENT
    reader = parsed(current)
    datum = example_for(writer)
    resolved = read(write(writer, datum), writer, reader)
    local: dict = {}
    _collect_named(reader, local)
    for name, node in _global_named().items():
        local.setdefault(name, node)
    _check_resolved(datum, resolved, writer, reader, local)
    # and through the wire format, with the historic id
    framed = HEADER.pack(0, registry_ids()[history_name]) + write(writer, datum)
    assert codec(current).decode(framed) == resolved


def test_reader_name():
    assert reader_name("hub.CustomerEvent.v1") == "hub.CustomerEvent"
    assert reader_name("hub.CustomerEvent.v12") == "hub.CustomerEvent"
    assert reader_name("hub.GoldenRecord") == "hub.GoldenRecord"


# ------------------------------------------------------------------ decode errors


def test_wrong_but_known_schema_id_raises():
    payload = codec("hub.CustomerEvent").encode(customer_event())
    for name in ("hub.GoldenRecord", "hub.CanonicalCustomer", "hub.ConsentEvent"):
        with pytest.raises(SchemaError, match="expected " + name):
            codec(name).decode(payload)


def test_history_reader_does_not_accept_current_data():
    payload = codec("hub.CustomerEvent").encode(customer_event())
    with pytest.raises(SchemaError):
        codec("hub.CustomerEvent.v1").decode(payload)


def test_unknown_schema_id_raises():
    body = codec("hub.CustomerEvent").encode(customer_event())[5:]
    with pytest.raises(SchemaError, match="unknown schema id 12345"):
        codec("hub.CustomerEvent").decode(HEADER.pack(0, 12345) + body)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_trailing_bytes_raise(name):
    payload = codec(name).encode(EXAMPLES[name]())
    with pytest.raises(SchemaError, match="trailing"):
        codec(name).decode(payload + b"\x00")
    with pytest.raises(SchemaError, match="3 trailing"):
        codec(name).decode(payload + b"abc")


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x00\x00\x00", b"\x01\x00\x00\x00\x02abc", b"{}"])
def test_unframed_payload_raises(payload):
    with pytest.raises(SchemaError):
        codec("hub.CustomerEvent").decode(payload)
