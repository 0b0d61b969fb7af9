"""Debezium's records as they really come (the tutorial's MySQL inventory
customers, its docs' ExtractNewRecordState and PostgreSQL truncate events):
the full envelope, the flattened form with `__op` / `__deleted` /
`__source_ts_ms` (delete.handling.mode=rewrite), deletes as tombstones
(delete.handling.mode=none), the JSON converter's printed tombstone
`{"schema": null, "payload": null}`, truncates and logical-decoding
messages: what changes a customer becomes an event, the rest is a counted
`NoChange`, never a dead letter."""

from __future__ import annotations

import pytest

from hub.connectors.mapping import MappingError, NoChange, from_debezium

MAPPING = {"id": "source_id", "first_name": "given_name", "last_name": "family_name", "email": "emails"}
ANNE = {"id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}
SCHEMA = {"type": "struct", "fields": [], "optional": False, "name": "dbserver1.inventory.customers.Value"}

# the tutorial's snapshot read of customer 1004 (JSON converter, schemas.enable=true)
TUTORIAL_READ = {"schema": SCHEMA, "payload": {
    "before": None, "after": ANNE,
    "source": {"version": "2.7.0.Final", "connector": "mysql", "name": "dbserver1", "ts_ms": 1486500577000,
               "snapshot": "true", "db": "inventory", "table": "customers", "server_id": 0, "file": "mysql-bin.000003",
               "pos": 154, "row": 0, "thread": None, "query": None},
    "op": "r", "ts_ms": 1486500577691}}
PRINTED_TOMBSTONE = {"schema": None, "payload": None}
# a PostgreSQL TRUNCATE (the docs: no before, no after)
TRUNCATE = {"schema": SCHEMA, "payload": {
    "source": {"version": "2.7.0.Final", "connector": "postgresql", "name": "PostgreSQL_server",
               "ts_ms": 1559033904863, "snapshot": False, "db": "postgres", "sequence": '["24023119","24023128"]',
               "schema": "public", "table": "customers", "txId": 556, "lsn": 46523128, "xmin": None},
    "op": "t", "ts_ms": 1559033904961}}
# pg_logical_emit_message: no row at all
MESSAGE = {"op": "m", "ts_ms": 1559033904961, "source": {"connector": "postgresql", "table": ""},
           "message": {"prefix": "audit", "content": "aGVsbG8="}}


def flattened(row: dict, **meta) -> dict:
    """ExtractNewRecordState with add.fields=op,source.ts_ms and delete.handling.mode=rewrite."""
    return {**row, **{f"__{k}": v for k, v in meta.items()}}


def test_the_tutorials_full_envelope_still_maps():
    event = from_debezium(TUTORIAL_READ, MAPPING, "crm")
    assert event == {"source": "crm", "source_id": "1004", "given_name": "Anne", "family_name": "Kretchmar",
                     "emails": [{"address": "annek@noanswer.org"}], "event_time": 1486500577000, "op": "upsert"}


@pytest.mark.parametrize("envelope", ["auto", "flattened"])
def test_the_flattened_form_maps_and_its_deletes_are_deletes(envelope):
    created = flattened(ANNE, op="c", source_ts_ms=1486500577000, deleted="false")
    event = from_debezium(created, MAPPING, "crm", envelope=envelope)
    assert event["op"] == "upsert" and event["source_id"] == "1004" and event["event_time"] == 1486500577000
    assert "__op" not in event and event["given_name"] == "Anne"
    # delete.handling.mode=rewrite: the row (or its key columns) with __deleted=true
    for gone in (flattened(ANNE, op="d", source_ts_ms=1486500578000, deleted="true"),
                 flattened({"id": 1004}, deleted=True, source_ts_ms=1486500578000)):
        assert from_debezium(gone, MAPPING, "crm", envelope=envelope) == {
            "source": "crm", "source_id": "1004", "event_time": 1486500578000, "op": "delete"}
    # with only the row (add.fields unset), the record's own timestamp is the event time
    plain = from_debezium(dict(ANNE), MAPPING, "crm", envelope=envelope, at_ms=1486500579000)
    assert plain["op"] == "upsert" and plain["event_time"] == 1486500579000


def test_a_flattened_row_wrapped_by_the_json_converter():
    wrapped = {"schema": SCHEMA, "payload": flattened(ANNE, op="u", source_ts_ms=1486500577000)}
    assert from_debezium(wrapped, MAPPING, "crm")["given_name"] == "Anne"


def test_a_custom_prefix():
    row = {**ANNE, "cdc_op": "d", "cdc_source_ts_ms": 1486500577000}
    assert from_debezium(row, MAPPING, "crm", envelope="flattened", prefix="cdc_")["op"] == "delete"


def test_tombstones_are_no_change_or_deletes_when_configured():
    key = {"schema": {"type": "struct"}, "payload": {"id": 1004}}
    for tombstone in (None, PRINTED_TOMBSTONE):
        assert from_debezium(tombstone, MAPPING, "crm", key=key) == NoChange("tombstone")
        # delete.handling.mode=none: the tombstone is the delete, the key names the row
        assert from_debezium(tombstone, MAPPING, "crm", key=key, tombstones="delete", at_ms=1486500580000) == {
            "source": "crm", "source_id": "1004", "event_time": 1486500580000, "op": "delete"}


def test_truncates_and_messages_change_no_customer():
    assert from_debezium(TRUNCATE, MAPPING, "crm") == NoChange("truncate", "public.customers")
    assert from_debezium(flattened({}, op="t"), MAPPING, "crm", envelope="flattened") == NoChange("truncate")
    assert from_debezium(MESSAGE, MAPPING, "crm") == NoChange("message")


def test_what_is_still_wrong_says_why_without_values():
    with pytest.raises(MappingError) as unknown:
        from_debezium({**TUTORIAL_READ["payload"], "op": "x"}, MAPPING, "crm")
    assert unknown.value.reason == "schema_mismatch"
    with pytest.raises(MappingError) as no_id:
        from_debezium(flattened({"first_name": "Anne"}, op="c", source_ts_ms=1), MAPPING, "crm",
                      envelope="flattened")
    assert no_id.value.reason == "missing_field"
    with pytest.raises(MappingError):
        from_debezium(TUTORIAL_READ, MAPPING, "crm", envelope="bogus")
