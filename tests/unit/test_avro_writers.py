"""hub.avro_writers: the generated writers give fastavro's bytes, and fastavro's
answer (its bytes, or its refusal) for every value they do not take."""

from __future__ import annotations

import io
import math

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub import avro_writers
from hub.schemas import codec, expanded, named_types, parsed, registry_ids
from hub.testing.generator import generate

ALL = sorted(registry_ids())  # every record type with a wire id, current and historic
LONG = (-(1 << 63), (1 << 63) - 1)


def fastavro_bytes(name: str, record) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed(name), record)
    return buf.getvalue()


def fastavro_answer(name: str, record):
    """fastavro's bytes for `record`, or the type of the error it raises."""
    try:
        return fastavro_bytes(name, record)
    except Exception as error:  # noqa: BLE001 - the error is the answer compared
        return type(error)


def hub_answer(name: str, record):
    try:
        return codec(name).encode(record)[5:]
    except Exception as error:  # noqa: BLE001
        return type(error)


def values(schema, named: dict, depth: int = 0) -> st.SearchStrategy:
    """Plain values of an (expanded) Avro schema, as the hub's records hold them."""
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, list):
        return st.one_of(*(values(branch, named, depth) for branch in schema))
    kind = schema if isinstance(schema, str) else schema["type"]
    if isinstance(schema, dict) and "name" in schema:
        named[schema["name"]] = schema
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "int":
        return st.integers(-(1 << 31), (1 << 31) - 1)
    if kind == "long":
        return st.one_of(st.integers(*LONG), st.integers(0, 5000), st.integers(1_600_000_000_000, 1_900_000_000_000))
    if kind in ("double", "float"):
        return st.floats(allow_nan=False, width=64 if kind == "double" else 32)
    if kind == "string":
        return st.text(max_size=12)
    if kind == "bytes":
        return st.binary(max_size=20)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(values(schema["items"], named, depth + 1), max_size=0 if depth > 2 else 3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=6), values(schema["values"], named, depth + 1),
                               max_size=0 if depth > 2 else 3)
    if kind == "record":
        fields = {f["name"]: values(f["type"], named, depth + 1) for f in schema["fields"]}
        optional = [f["name"] for f in schema["fields"] if "default" in f]
        return st.fixed_dictionaries(fields).flatmap(
            lambda record: st.sets(st.sampled_from(optional) if optional else st.nothing()).map(
                lambda dropped: {k: v for k, v in record.items() if k not in dropped}))
    raise AssertionError(f"no strategy for {kind}")


@pytest.mark.parametrize("name", ALL)
def test_every_schema_has_a_generated_writer(name):
    assert codec(name)._write is not None


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_generated_writer_gives_fastavros_bytes(name, data):
    record = data.draw(values(expanded(name), dict(named_types(name))))
    write = codec(name)._write
    assert write(record) == fastavro_bytes(name, record)


def test_the_generators_events_come_out_as_fastavro_writes_them():
    events = [e for e in generate(200, seed=11) if e.value is not None and e.topic.startswith("raw.")]
    assert len(events) > 100
    write = codec("hub.CustomerEvent")._write
    for event in events:
        assert write(event.value) == fastavro_bytes("hub.CustomerEvent", event.value)


def base_event() -> dict:
    return {"source": "crm", "source_id": "C-1", "event_time": 1_700_000_000_000, "given_name": "Ann",
            "emails": [{"address": "a@example.com"}], "preferences": {"language": "en"}}


@pytest.mark.parametrize("change", [
    {"event_time": True},                     # a bool for a long
    {"event_time": 1.5e12},                   # a float for a long
    {"event_time": 1 << 63},                  # past a long
    {"event_time": -(1 << 63)},               # the least long, taken
    {"given_name": 12},                       # an int for a string
    {"given_name": b"Ann"},                   # bytes for a string
    {"given_name": "\ud800"},                 # a lone surrogate: not UTF-8
    {"given_name": "é" * 5000},               # a length past the table
    {"op": "upsert-ish"},                     # not a symbol
    {"op": ["upsert"]},                       # unhashable for the symbol table
    {"emails": ({"address": "a@example.com"},)},  # a tuple for an array
    {"emails": [{"kind": "work"}]},           # an item without its required field
    {"preferences": {1: "x"}},                # a map key not a string
    {"source": None},                         # null for a required string
    {"consents": [{"purpose": "marketing"}]},  # a record short of required fields
])
def test_a_value_the_generated_writer_does_not_take_gets_fastavros_answer(change):
    record = {**base_event(), **change}
    assert hub_answer("hub.CustomerEvent", record) == fastavro_answer("hub.CustomerEvent", record)


def test_a_record_missing_its_required_field_is_refused_as_fastavro_refuses_it():
    record = base_event()
    del record["source_id"]
    assert isinstance(fastavro_answer("hub.CustomerEvent", record), type)
    assert hub_answer("hub.CustomerEvent", record) == fastavro_answer("hub.CustomerEvent", record)


def test_doubles_and_the_tuple_notation_of_a_union():
    decision = {"audit_id": "a1", "at": 1, "kind": "match_decision", "cause": "c",
                "decision": ("hub.MatchDecision", None)}
    # a union branch named by fastavro's (name, value) tuple: the generated writer takes only its own name
    decision["decision"] = ("hub.Other", {})
    assert hub_answer("hub.AuditEvent", decision) == fastavro_answer("hub.AuditEvent", decision)
    golden = {"golden_id": "G1", "version": 1, "freshness": 1, "quality_score": math.inf}
    assert hub_answer("hub.GoldenRecord", golden) == fastavro_answer("hub.GoldenRecord", golden)


def test_timestamps_kept_for_reuse_stay_bounded():
    write = codec("hub.CustomerEvent")._write
    for n in range(avro_writers._LONGS_KEPT + 10):
        write({**base_event(), "event_time": 1_700_000_000_000 + n})
    assert len(avro_writers._LONGS) <= avro_writers._LONGS_KEPT
    assert write(base_event()) == fastavro_bytes("hub.CustomerEvent", base_event())
