"""Property-based tests over the hostile edge of the hub: decoders,
validators, standardisers and the ingest stage never raise; every input ends
either as a canonical record or as a dead letter with a reason."""

from __future__ import annotations

import json
import random
import struct
import time

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from hub.config import load_pipeline
from hub.matching.features import blocking_values, features
from hub.records import ERROR_REASON, ERROR_STAGE, InMessage, StageError
from hub.schemas import CANONICAL, CUSTOMER_EVENT, codec, registry_ids
from hub.standardise import standardise_and_score
from hub.stages.ingest import IngestStage
from hub.testing.fuzzing import NASTY_DATES, NASTY_TEXT, hostile_payload, valid_event
from hub.validation import REASONS, decode_event, validate_raw

NOW = int(time.time() * 1000)
PIPELINE = load_pipeline(None)
STAGE = IngestStage(PIPELINE)
FAST = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hostile_text = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=80),
                         st.text(st.characters(codec="utf-8"), max_size=30))
maybe_text = st.one_of(st.none(), hostile_text)


def _ingest_one(value: bytes | None) -> tuple[str, dict]:
    output = STAGE.process([InMessage("raw.crm", 0, 1, b"crm:x", value, NOW)], NOW)
    (message,) = output.messages  # exactly one output per input
    return message.topic, dict(message.headers)


def _assert_accounted(value: bytes | None) -> None:
    topic, headers = _ingest_one(value)
    if topic == "dlq.crm":
        assert headers[ERROR_REASON].decode() in REASONS and headers[ERROR_STAGE] == b"decode"
    else:
        assert topic == PIPELINE.topics.canonical


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(payload):
    result = validate_raw(payload, "crm", PIPELINE.quality, NOW)
    assert isinstance(result, dict) or result.reason in REASONS
    _assert_accounted(payload)


@FAST
@given(st.integers(0, 2**32 - 1), st.binary(max_size=200))
def test_confluent_framing_with_any_schema_id(schema_id, body):
    result = decode_event(b"\x00" + struct.pack(">I", schema_id) + body)
    if schema_id not in registry_ids().values():
        assert isinstance(result, StageError) and result.reason == "unknown_schema"
    else:
        assert isinstance(result, dict) or result.reason in REASONS


@FAST
@given(st.integers(0, 2**31), st.data())
def test_truncated_and_bit_flipped_avro(seed, data):
    r = random.Random(seed)
    full = codec(CUSTOMER_EVENT).encode(valid_event(r, "crm", "C1", NOW))
    cut = data.draw(st.integers(0, len(full)))
    _assert_accounted(full[:cut])
    flipped = bytearray(full)
    flipped[data.draw(st.integers(5, len(full) - 1))] ^= 0xFF
    _assert_accounted(bytes(flipped))


@FAST
@given(st.integers(0, 2**31))
def test_hostile_payloads_from_the_corpus(seed):
    r = random.Random(seed)
    payload, _ = hostile_payload(r, "crm", "C1", NOW)
    _assert_accounted(payload)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     hostile_text),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4),
                           max_leaves=20)


@FAST
@given(st.dictionaries(st.sampled_from(["source", "source_id", "event_time", "given_name", "family_name", "emails",
                                        "phones", "addresses", "birth_date", "consents", "op", "record_type",
                                        "preferences", "gender"]), json_values))
def test_json_objects_of_any_shape(obj):
    # the standard library writes what orjson refuses: huge integers, lone surrogates as \ud800 escapes
    _assert_accounted(json.dumps(obj).encode())


@FAST
@given(given_name=maybe_text, family_name=maybe_text, middle_name=maybe_text, birth=st.sampled_from(NASTY_DATES),
       email=hostile_text, phone=hostile_text, line1=hostile_text, postcode=hostile_text, country=hostile_text,
       organisation=maybe_text, gender=maybe_text)
def test_hostile_text_is_stored_safely(given_name, family_name, middle_name, birth, email, phone, line1, postcode,
                                       country, organisation, gender):
    """A valid event with hostile values decodes, standardises, scores, yields
    match features and blocking keys, and its canonical record encodes."""
    event = {"source": "crm", "source_id": "C1", "event_time": NOW - 1000, "given_name": given_name,
             "family_name": family_name, "middle_name": middle_name, "birth_date": birth, "gender": gender,
             "organisation_name": organisation, "emails": [{"address": email}], "phones": [{"number": phone}],
             "addresses": [{"line1": line1, "postcode": postcode, "country": country}]}
    decoded = validate_raw(orjson.dumps(event), "crm", PIPELINE.quality, NOW)
    assert isinstance(decoded, dict), decoded
    record, quality = standardise_and_score(decoded)
    blocking_values(features(record))
    assert 0 <= quality["score"] <= 1
    canonical = {"record": record, "quality": quality, "ingested_at": NOW,
                 "origin": {"topic": "raw.crm", "partition": 0, "offset": 0, "produced_at": NOW}}
    assert codec(CANONICAL).decode(codec(CANONICAL).encode(canonical))["record"] == record
    topic, _ = _ingest_one(codec(CUSTOMER_EVENT).encode(decoded))
    assert topic == PIPELINE.topics.canonical


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 20_000))
def test_deep_nesting_is_dead_lettered(depth):
    _assert_accounted(b'{"given_name":' + b"[" * depth + b"]" * depth + b"}")
    _assert_accounted(b"[" * depth + b"]" * depth)
