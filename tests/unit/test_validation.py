"""Unit tests for hub.validation: raw bytes in, a CustomerEvent dict or a StageError out."""

from __future__ import annotations

import io
import random
import struct
from datetime import datetime, timezone

import fastavro
import orjson
import pytest

from hub import schemas
from hub.config import QualityConfig
from hub.records import StageError
from hub.validation import (
    ABSURD_VALUE,
    MISSING_FIELD,
    NOT_DECODABLE,
    OVERSIZED,
    REASONS,
    SCHEMA_MISMATCH,
    SOURCE_MISMATCH,
    STAGE,
    UNKNOWN_SCHEMA,
    check_event,
    decode_event,
    validate_raw,
)

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z
RULES = QualityConfig()
CURRENT_FIELDS = [f["name"] for f in schemas.parsed("hub.CustomerEvent")["fields"]]


def ms(*args) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def raw(**fields) -> dict:
    event = {"source": "crm", "source_id": "C-1001", "event_time": NOW - 60_000,
             "given_name": "Ann", "family_name": "Smith"}
    event.update(fields)
    return event


def full_event() -> dict:
    """Every field of the current schema, explicitly set."""
    return {
        "source": "crm", "source_id": "C-1001", "op": "upsert", "event_time": NOW - 60_000,
        "record_type": "person", "given_name": "Ann", "middle_name": "Marie", "family_name": "Smith",
        "birth_date": "1984-07-12", "gender": "female",
        "emails": [{"address": "ann@example.com", "kind": "personal", "verified": True}],
        "phones": [{"number": "+447911123456", "kind": "mobile", "verified": False}],
        "addresses": [{"line1": "12 High Street", "line2": None, "city": "Leeds", "region": None,
                       "postcode": "LS1 4AB", "country": "GB", "kind": "home", "verified": False}],
        "national_id": "QQ123456C", "loyalty_id": "L-77", "organisation_name": None,
        "account_ref": "crm:A-1", "lifecycle": "customer", "converted_from": None,
        "preferences": {"language": "en"},
        "consents": [{"purpose": "marketing", "channel": "email", "status": "granted",
                      "legal_basis": "consent", "effective_at": None, "expires_at": None,
                      "collection_point": "web", "notice_version": "v3", "evidence": None,
                      "event_time": NOW - 120_000}],
        "invalid_values": {},
    }


def avro(event: dict) -> bytes:
    return schemas.codec("hub.CustomerEvent").encode(event)


def as_json(event: dict) -> bytes:
    return orjson.dumps(event)


def v1_frame(event: dict) -> bytes:
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, 1))
    fastavro.schemaless_writer(buf, schemas.parsed("hub.CustomerEvent.v1"), event)
    return buf.getvalue()


def run(payload, source="crm", rules=RULES, now=NOW):
    return validate_raw(payload, source, rules, now)


def assert_error(result, reason: str):
    assert isinstance(result, StageError), f"expected {reason}, got a decoded event"
    assert result.stage == STAGE
    assert result.reason == reason, result


# ------------------------------------------------------------------ accepted payloads


def test_avro_payload_decodes_to_the_same_event():
    event = full_event()
    assert run(avro(event)) == event


def test_avro_minimal_payload_gets_every_field_with_defaults():
    result = run(avro(raw()))
    assert isinstance(result, dict)
    assert list(result) == CURRENT_FIELDS
    assert result["op"] == "upsert"
    assert result["record_type"] == "person"
    assert result["emails"] == [] and result["phones"] == [] and result["addresses"] == []
    assert result["preferences"] == {} and result["consents"] == []
    assert result["middle_name"] is None and result["organisation_name"] is None


def test_v1_payload_decodes_to_current_shape_with_defaults():
    v1_event = {"source": "crm", "source_id": "C-1", "op": "upsert", "event_time": NOW - 1000,
                "given_name": "Ann", "family_name": "Smith", "birth_date": "1984-07",
                "emails": [{"address": "ann@example.com", "kind": None, "verified": True}],
                "loyalty_id": "L-1"}
    payload = v1_frame(v1_event)
    assert payload[:5] == b"\x00\x00\x00\x00\x01"
    result = run(payload)
    assert isinstance(result, dict), result
    assert sorted(result) == sorted(CURRENT_FIELDS)
    # fields v1 had keep their values
    assert result["given_name"] == "Ann" and result["family_name"] == "Smith"
    assert result["birth_date"] == "1984-07" and result["loyalty_id"] == "L-1"
    assert result["emails"] == [{"address": "ann@example.com", "kind": None, "verified": True}]
    # fields v1 lacked come in with the current schema's defaults
    assert result["record_type"] == "person"
    assert result["organisation_name"] is None
    assert result["preferences"] == {}
    assert result["consents"] == []


def test_v1_and_current_payloads_of_the_same_data_decode_identically():
    event = raw(emails=[{"address": "a@example.com", "kind": None, "verified": False}])
    assert decode_event(v1_frame(event)) == decode_event(avro(event))


def test_json_with_epoch_ms_equals_avro():
    event = full_event()
    from_json = run(as_json(event))
    assert from_json == run(avro(event)) == event


def test_json_minimal_gets_defaults_like_avro():
    assert run(as_json(raw())) == run(avro(raw()))


@pytest.mark.parametrize("text, expected", [
    ("2023-11-14T22:13:19Z", ms(2023, 11, 14, 22, 13, 19)),
    ("2023-11-14T22:13:19.250Z", ms(2023, 11, 14, 22, 13, 19) + 250),
    ("2023-11-14T23:13:19+01:00", ms(2023, 11, 14, 22, 13, 19)),
    ("2023-11-14T22:13:19", ms(2023, 11, 14, 22, 13, 19)),  # naive = UTC
    ("2023-11-14", ms(2023, 11, 14)),
])
def test_json_iso_event_time(text, expected):
    result = run(as_json(raw(event_time=text)))
    assert isinstance(result, dict), result
    assert result["event_time"] == expected


def test_json_integral_float_event_time_is_accepted():
    result = run(b'{"source":"crm","source_id":"1","event_time":1699999999000.0}')
    assert isinstance(result, dict), result
    assert result["event_time"] == 1_699_999_999_000
    assert isinstance(result["event_time"], int)


def test_json_unknown_keys_are_dropped():
    result = run(as_json(raw(shoe_size=44)))
    assert isinstance(result, dict)
    assert "shoe_size" not in result


def test_check_event_accepts_a_good_event():
    event = decode_event(avro(full_event()))
    assert check_event(event, "crm", RULES, NOW) is None


# ------------------------------------------------------------------ not_decodable


@pytest.mark.parametrize("payload", [
    b"garbage",
    b"\xff\xfe\xfd",
    b"{not json",
    b" ",
    b"",
    None,
])
def test_garbage_is_not_decodable(payload):
    assert_error(run(payload), NOT_DECODABLE)


def test_invalid_utf8_json_is_not_decodable():
    payload = b'{"source":"crm","source_id":"1","event_time":1699999999000,"given_name":"\xff\xfe"}'
    assert_error(run(payload), NOT_DECODABLE)


def test_truncated_avro_body_is_not_decodable():
    payload = avro(full_event())
    for cut in (6, 10, len(payload) // 2, len(payload) - 1):
        assert_error(run(payload[:cut]), NOT_DECODABLE)


def test_truncated_avro_header_is_not_decodable():
    payload = avro(raw())
    for cut in (1, 2, 3, 4):
        assert_error(run(payload[:cut]), NOT_DECODABLE)


def test_avro_with_trailing_bytes_is_not_decodable():
    assert_error(run(avro(raw()) + b"\x00\x00"), NOT_DECODABLE)


# ------------------------------------------------------------------ unknown_schema


@pytest.mark.parametrize("schema_id", [0, 5, 99, 2**31])
def test_magic_zero_with_unknown_id_is_unknown_schema(schema_id):
    body = avro(raw())[5:]
    assert_error(run(struct.pack(">BI", 0, schema_id) + body), UNKNOWN_SCHEMA)


def test_known_id_of_another_record_type_is_rejected():
    canonical_id = schemas.registry_ids()["hub.CanonicalCustomer"]
    body = avro(raw())[5:]
    result = run(struct.pack(">bI", 0, canonical_id) + body)
    assert_error(result, UNKNOWN_SCHEMA)
    assert "hub.CanonicalCustomer" in result.detail


# ------------------------------------------------------------------ schema_mismatch


@pytest.mark.parametrize("fields", [
    {"emails": "ann@example.com"},
    {"given_name": ["Ann"]},
    {"given_name": 42},
    {"source_id": 1001},
    {"record_type": "alien"},
    {"op": "merge"},
    {"event_time": "yesterday"},
    {"event_time": {}},
    {"preferences": {"language": 1}},
    {"emails": [{"address": None}]},
    {"consents": [{"purpose": "marketing", "status": "maybe", "event_time": NOW}]},
])
def test_wrong_types_are_schema_mismatch(fields):
    assert_error(run(as_json(raw(**fields))), SCHEMA_MISMATCH)


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"crm"', b"null", b"42"])
def test_json_that_is_not_an_object_is_schema_mismatch(payload):
    assert_error(run(payload), SCHEMA_MISMATCH)


def test_json_string_for_boolean_is_schema_mismatch():
    payload = as_json(raw(phones=[{"number": "+447911123456", "verified": "false"}]))
    assert_error(run(payload), SCHEMA_MISMATCH)


# ------------------------------------------------------------------ missing_field


def _without(key: str) -> dict:
    event = raw()
    del event[key]
    return event


@pytest.mark.parametrize("event, field", [
    (_without("source_id"), "source_id"),
    (_without("event_time"), "event_time"),
    (_without("source"), "source"),
])
def test_absent_required_field_is_missing_field(event, field):
    result = run(as_json(event))
    assert_error(result, MISSING_FIELD)
    assert field in result.detail


@pytest.mark.parametrize("source_id", ["", "   ", "\t"])
def test_empty_source_id_is_missing_field(source_id):
    assert_error(run(as_json(raw(source_id=source_id))), MISSING_FIELD)
    assert_error(run(avro(raw(source_id=source_id))), MISSING_FIELD)


# ------------------------------------------------------------------ absurd_value


@pytest.mark.parametrize("event_time", [
    ms(2999, 1, 1),
    "2999-01-01T00:00:00Z",
    0,
    ms(1970, 6, 1),
    "1970-01-01T00:00:00Z",
    -1,
])
def test_absurd_event_time(event_time):
    assert_error(run(as_json(raw(event_time=event_time))), ABSURD_VALUE)


def test_event_time_bounds_are_min_year_and_future_skew():
    first_ok = ms(RULES.min_event_year, 1, 1)
    latest_ok = NOW + RULES.max_future_skew_s * 1000
    assert isinstance(run(avro(raw(event_time=first_ok))), dict)
    assert_error(run(avro(raw(event_time=first_ok - 1))), ABSURD_VALUE)
    assert isinstance(run(avro(raw(event_time=latest_ok))), dict)
    assert_error(run(avro(raw(event_time=latest_ok + 1))), ABSURD_VALUE)


def test_bounds_follow_the_quality_config():
    rules = QualityConfig(min_event_year=2020, max_future_skew_s=0)
    assert_error(run(avro(raw(event_time=ms(2019, 12, 31))), rules=rules), ABSURD_VALUE)
    assert_error(run(avro(raw(event_time=NOW + 1)), rules=rules), ABSURD_VALUE)
    assert isinstance(run(avro(raw(event_time=NOW)), rules=rules), dict)


def test_over_long_source_id_is_absurd():
    assert isinstance(run(as_json(raw(source_id="x" * 128))), dict)
    assert_error(run(as_json(raw(source_id="x" * 129))), ABSURD_VALUE)
    assert_error(run(avro(raw(source_id="9" * 5000))), ABSURD_VALUE)


def test_consent_statement_with_absurd_time_is_absurd():
    consent = {"purpose": "marketing", "status": "granted", "event_time": ms(1971, 1, 1)}
    assert_error(run(as_json(raw(consents=[consent]))), ABSURD_VALUE)
    consent["event_time"] = NOW - 1
    assert isinstance(run(as_json(raw(consents=[consent]))), dict)


# ------------------------------------------------------------------ oversized


def test_oversized_payload():
    limit = RULES.max_event_bytes
    big_json = as_json(raw(given_name="a" * limit))
    big_avro = avro(raw(given_name="a" * limit))
    assert len(big_json) > limit and len(big_avro) > limit
    assert_error(run(big_json), OVERSIZED)
    assert_error(run(big_avro), OVERSIZED)
    # checked before decoding: oversized garbage is oversized, not not_decodable
    assert_error(run(b"\xff" * (limit + 1)), OVERSIZED)


def test_payload_of_exactly_max_event_bytes_is_accepted():
    rules = QualityConfig(max_event_bytes=1024)
    base = as_json(raw(given_name=""))
    exact = as_json(raw(given_name="a" * (1024 - len(base))))
    assert len(exact) == 1024
    assert isinstance(run(exact, rules=rules), dict)
    assert_error(run(as_json(raw(given_name="a" * (1025 - len(base)))), rules=rules), OVERSIZED)


# ------------------------------------------------------------------ source_mismatch


def test_source_mismatch():
    result = run(avro(raw(source="pos")), source="crm")
    assert_error(result, SOURCE_MISMATCH)
    assert isinstance(run(avro(raw(source="pos")), source="pos"), dict)
    assert_error(run(as_json(raw(source="CRM")), source="crm"), SOURCE_MISMATCH)


# ------------------------------------------------------------------ robustness


def _random_payloads(seed: int = 20240601):
    rng = random.Random(seed)
    valid_avro = avro(full_event())
    valid_json = as_json(full_event())
    header = valid_avro[:5]
    for _ in range(1500):
        yield rng.randbytes(rng.randint(1, 64))
    for _ in range(800):
        yield b"\x00" + rng.randbytes(rng.randint(0, 64))
    for _ in range(800):
        yield header + rng.randbytes(rng.randint(0, 96))
    for source in (valid_avro, valid_json):
        for _ in range(600):
            data = bytearray(source)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            yield bytes(data[: rng.randint(1, len(data))] if rng.random() < 0.3 else data)


def test_random_bytes_never_raise():
    seen = set()
    count = 0
    for payload in _random_payloads():
        result = run(payload)
        assert isinstance(result, (dict, StageError)), type(result)
        if isinstance(result, StageError):
            assert result.stage == STAGE
            assert result.reason in REASONS
            seen.add(result.reason)
        count += 1
    assert count >= 4000
    # the fuzz reached past the first check
    assert {NOT_DECODABLE, UNKNOWN_SCHEMA} <= seen


@pytest.mark.parametrize("field, value", [("op", []), ("op", {"a": 1}), ("record_type", ["person"]), ("op", 3)])
def test_an_enum_field_holding_a_list_or_an_object_is_a_schema_mismatch_naming_the_field(field, value):
    """Found by the fuzz test: a JSON list where an enum's symbol belongs crashed the error's description."""
    payload = orjson.dumps({"source": "crm", "source_id": "1", "event_time": 1_700_000_000_000, field: value})
    found = decode_event(payload)
    assert isinstance(found, StageError) and found.reason == SCHEMA_MISMATCH
    assert found.detail.startswith(f"{field}:") and str(value) not in found.detail
