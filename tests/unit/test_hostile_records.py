"""Hostile records, pure: deep nesting is a schema error (never an internal
error), error details name fields and types but never the submitted values,
and ids that could break out of a Redis key name or a Kafka key (control
characters, braces, pipes) are dead-lettered as invalid_id."""

from __future__ import annotations

import time

import orjson
import pytest

from hub.config import QualityConfig, load_pipeline
from hub.ingest_api import check_batch
from hub.records import StageError
from hub.schemas import CONSENT_EVENT, ERASURE_REQUEST, STEWARD_ACTION, SURVEY_RESPONSE, codec
from hub.stages import decode_or_error
from hub.validation import INVALID_ID, SCHEMA_MISMATCH, validate_raw

NOW = int(time.time() * 1000)
BASE = {"source": "crm", "source_id": "C1", "event_time": NOW - 1000}
SECRET = "Zebulonia Quxworthington zeb@quxmail.example"
RULES = QualityConfig()


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def raw(**fields) -> bytes:
    return orjson.dumps({**BASE, **fields})


@pytest.mark.parametrize("payload", [
    deep(1000),
    b'{"source":"crm","source_id":"C1","event_time":1700000000000,"given_name":' + deep(1000) + b"}",
    b'{"source":"crm","source_id":"C1","event_time":1700000000000,"preferences":' + b'{"a":' * 900 + b"1"
    + b"}" * 900 + b"}",
    b'{"source":"crm","source_id":"C1","event_time":1700000000000,"emails":[' + b'{"address":' * 900 + b'"x"'
    + b"}" * 900 + b"]}",
])
def test_deep_nesting_is_a_schema_error_not_an_internal_error(payload):
    result = validate_raw(payload, "crm", QualityConfig(max_event_bytes=1 << 20), NOW)
    assert isinstance(result, StageError) and result.reason in (SCHEMA_MISMATCH, "not_decodable")


@pytest.mark.parametrize("fields", [
    {"birth_date": 12345},
    {"given_name": {"secret": SECRET}},
    {"op": SECRET},
    {"record_type": SECRET},
    {"emails": [{"address": {"x": SECRET}}]},
    {"phones": [{"number": [SECRET]}]},
    {"addresses": [{"line1": "1 High St", "city": {"x": SECRET}}]},
    {"consents": [{"purpose": "marketing", "channel": "email", "status": SECRET, "legal_basis": "consent",
                   "event_time": 1}]},
    {"consents": [{"purpose": "marketing", "channel": "email", "status": "granted", "legal_basis": SECRET,
                   "event_time": 1}]},
    {"preferences": {SECRET: 5}},
    {"event_time": SECRET},
    {"source_id": 12345},
])
def test_error_details_never_echo_submitted_values(fields):
    result = validate_raw(raw(**fields), "crm", RULES, NOW)
    assert isinstance(result, StageError) and result.reason == SCHEMA_MISMATCH
    assert "Zebulonia" not in result.detail and "12345" not in result.detail and result.detail
    headers = dict(result.dead_letter(_message(raw(**fields)), "dlq.crm").headers)
    assert b"Zebulonia" not in b"".join(headers.values())


def test_enum_errors_name_the_field():
    assert "op" in validate_raw(raw(op=SECRET), "crm", RULES, NOW).detail
    assert "record_type" in validate_raw(raw(record_type=SECRET), "crm", RULES, NOW).detail
    consent = {"purpose": "marketing", "channel": "email", "status": SECRET, "legal_basis": "consent", "event_time": 1}
    assert "consents[0].status" in validate_raw(raw(consents=[consent]), "crm", RULES, NOW).detail


def _message(value: bytes):
    from hub.records import InMessage

    return InMessage("raw.crm", 0, 7, b"crm:C1", value)


@pytest.mark.parametrize("source_id", ["C1\nC2", "C1\x00", "{hub:}idx", "C}1", "a|b", "C1\r", "\u202eC1",
                                       "C\u200b1", "C1\x7f", "C1\x85"])
def test_ids_that_could_break_a_key_are_invalid(source_id):
    result = validate_raw(raw(source_id=source_id), "crm", RULES, NOW)
    assert isinstance(result, StageError) and result.reason == INVALID_ID
    assert "source_id" in result.detail and source_id not in result.detail


@pytest.mark.parametrize("source_id", ["C-1001", "CUST/0001-2", "anna.smith@example.com", "ÉLODIE-1", "003Dn00000X1yZ",
                                       "a:b", "9f1c2d3e-4b5a-6c7d-8e9f-0a1b2c3d4e5f", "名前-1", "id with spaces"])
def test_ordinary_ids_are_accepted(source_id):
    assert not isinstance(validate_raw(raw(source_id=source_id), "crm", RULES, NOW), StageError)


@pytest.mark.parametrize("schema,record,field", [
    (CONSENT_EVENT, {"source": "crm", "source_id": "C1\n", "statement": {
        "purpose": "marketing", "channel": "email", "status": "granted", "legal_basis": "consent",
        "effective_at": None, "expires_at": None, "collection_point": None, "notice_version": None,
        "evidence": None, "event_time": NOW}}, "source_id"),
    (SURVEY_RESPONSE, {"source": "crm", "source_id": "C1", "survey_id": "nps|2026", "score": 9,
                       "responded_at": NOW, "channel": None}, "survey_id"),
    (ERASURE_REQUEST, {"source": None, "source_id": None, "golden_id": "G{1}", "requester": "dpo",
                       "requested_at": NOW}, "golden_id"),
    (STEWARD_ACTION, {"action": "link", "member": "crm:C1", "others": ["pos:P\x001"], "actor": "a", "reason": None,
                      "at": NOW}, "others"),
])
def test_low_volume_topics_refuse_bad_ids_too(schema, record, field):
    for payload in (codec(schema).encode(record), orjson.dumps(record)):
        result = decode_or_error("stage", schema, payload)
        assert isinstance(result, StageError) and result.reason == INVALID_ID and field in result.detail


def test_low_volume_topics_do_not_echo_values():
    bad = {"source": "crm", "source_id": "C1", "statement": {"purpose": "marketing", "status": SECRET,
                                                             "event_time": NOW}}
    result = decode_or_error("consent", CONSENT_EVENT, orjson.dumps(bad))
    assert isinstance(result, StageError) and "Zebulonia" not in result.detail


def test_http_batches_of_deep_or_hostile_json_get_errors_not_exceptions():
    source = load_pipeline(None).source("crm")
    for body in (deep(1000), b"[" + orjson.dumps({**BASE, "given_name": "x"}) + b"," + deep(600) + b"]",
                 b'[{"source_id": "C1", "event_time": 1, "given_name": ' + deep(500) + b"}]"):
        _, errors = check_batch(body, source, RULES, NOW)  # any error: the request gets 400, nothing is written
        assert errors and all(e["reason"] in (SCHEMA_MISMATCH, "not_decodable") for e in errors)
    _, errors = check_batch(orjson.dumps([{**BASE, "op": SECRET}]), source, RULES, NOW)
    assert "Zebulonia" not in orjson.dumps(errors).decode()
