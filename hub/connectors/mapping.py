"""From a source system's row (a CSV line, a Debezium `after` image) to a
hub.CustomerEvent dict, by a column mapping. Pure: no I/O.

A mapping names, for each column, the CustomerEvent field it fills:
a scalar field (`source_id`, `given_name`, `birth_date`, `event_time`, ...),
`emails` or `phones` (one value, or several separated by `;`), `addresses.<part>`
(`line1`, `line2`, `city`, `region`, `postcode`, `country`: the columns make
one address) or `preferences.<key>`. Columns not in the mapping are ignored;
with no mapping, columns named like fields fill them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from hub.validation import MISSING_FIELD, NOT_DECODABLE, SCHEMA_MISMATCH, _iso_to_ms

SCALARS = ("source_id", "event_time", "op", "record_type", "given_name", "middle_name", "family_name",
           "birth_date", "gender", "national_id", "loyalty_id", "organisation_name")
ADDRESS_PARTS = ("line1", "line2", "city", "region", "postcode", "country")
LISTS = ("emails", "phones")
_LIST_ITEM = {"emails": "address", "phones": "number"}
_EPOCH = date(1970, 1, 1)
DEBEZIUM_OPS = {"c": "upsert", "u": "upsert", "r": "upsert", "d": "delete"}


class MappingError(ValueError):
    """A row that cannot become a customer event; `reason` is a validation reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def check_mapping(mapping: dict) -> dict:
    """The mapping itself, or ValueError naming the first unusable field."""
    for column, field in mapping.items():
        head, _, part = str(field).partition(".")
        ok = (field in SCALARS or field in LISTS or (head == "addresses" and part in ADDRESS_PARTS)
              or (head == "preferences" and part))
        if not ok:
            raise ValueError(f"column {column!r}: unknown field {field!r}; use one of {list(SCALARS)}, "
                             f"{list(LISTS)}, addresses.<{'|'.join(ADDRESS_PARTS)}>, preferences.<key>")
    return mapping


def default_mapping(columns) -> dict:
    mapping = {}
    for column in columns:
        try:
            check_mapping({column: column})
        except ValueError:
            continue
        mapping[column] = column
    return mapping


def to_epoch_ms(value) -> int:
    """Epoch ms from ms, µs (Debezium MicroTimestamp), seconds as text, or ISO-8601."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, (int, float)):
        number = int(value)
        return number // 1000 if number > 10**14 else number
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return to_epoch_ms(int(text))
    return _iso_to_ms(text)


def _scalar(field: str, value):
    if field == "event_time":
        return to_epoch_ms(value)
    if field == "birth_date" and isinstance(value, int) and not isinstance(value, bool):
        return (_EPOCH + timedelta(days=value)).isoformat()  # Debezium io.debezium.time.Date: days since epoch
    return str(value).strip()


def map_row(row: dict, mapping: dict | None, source: str, event_time_ms: int | None = None) -> dict:
    """One row to a CustomerEvent dict (the hub validates it again at ingest)."""
    if not isinstance(row, dict):
        raise MappingError(SCHEMA_MISMATCH, f"expected a row of columns, got {type(row).__name__}")
    mapping = mapping if mapping is not None else default_mapping(row)
    event: dict = {"source": source}
    address: dict = {}
    for column, field in mapping.items():
        value = row.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        head, _, part = field.partition(".")
        try:
            if field in SCALARS:
                event[field] = _scalar(field, value)
            elif field in LISTS:
                items = [v.strip() for v in str(value).split(";") if v.strip()]
                event.setdefault(field, []).extend({_LIST_ITEM[field]: v} for v in items)
            elif head == "addresses":
                address[part] = str(value).strip()
            else:
                event.setdefault("preferences", {})[part] = str(value).strip()
        except (ValueError, OverflowError) as exc:
            # the reason, never the value (it goes to DLQ headers)
            raise MappingError(SCHEMA_MISMATCH, f"column {column!r} -> {field}: not a valid value "
                                                f"({type(exc).__name__})") from None
    if address:
        event["addresses"] = [address]
    if "event_time" not in event:
        if event_time_ms is None:
            raise MappingError(MISSING_FIELD, "event_time: no column maps to it and no default was given")
        event["event_time"] = event_time_ms
    if not event.get("source_id"):
        raise MappingError(MISSING_FIELD, "source_id: empty or not mapped")
    return event


def _row_of_debezium(value: dict) -> dict:
    # the JSON converter with schemas.enable wraps the envelope as {"schema": ..., "payload": ...}
    payload = value.get("payload")
    return payload if isinstance(payload, dict) and "schema" in value else value


@dataclass(frozen=True)
class NoChange:
    """A Debezium record that changes no customer: a tombstone, a truncate (`table` names it), a
    logical-decoding message. Counted by the connector, never dead-lettered."""

    kind: str
    table: str | None = None


ENVELOPES = ("auto", "full", "flattened")
TOMBSTONES = ("skip", "delete")
_FULL_KEYS = ("before", "after", "source")


def _is_envelope(value: dict) -> bool:
    """Debezium's change envelope: an op and its before / after / source (a truncate has no row images)."""
    return "op" in value and any(k in value for k in _FULL_KEYS)


def _table(meta: dict) -> str | None:
    table = meta.get("table")
    if not table:
        return None
    owner = meta.get("schema") or meta.get("db")
    return f"{owner}.{table}" if owner else table


def _delete(row, mapping: dict | None, source: str, at) -> dict:
    event = map_row(row, mapping, source, at)
    return {"source": source, "source_id": event["source_id"], "event_time": event["event_time"], "op": "delete"}


def from_debezium(value, mapping: dict | None, source: str, key=None, *, envelope: str = "auto",
                  prefix: str = "__", tombstones: str = "skip", at_ms: int | None = None) -> dict | NoChange:
    """A Debezium record to a CustomerEvent (`op d` and flattened `__deleted` rows: a delete event), or
    NoChange. `envelope`: `full` (before/after/op/source), `flattened` (ExtractNewRecordState: the row,
    with `<prefix>op`, `<prefix>deleted`, `<prefix>source_ts_ms` when configured to add them) or `auto`
    (the full envelope when the record is one). `tombstones`: `skip` (Debezium's tombstone after a delete
    event), or `delete` (delete.handling.mode=none: the tombstone is the delete; the key names the row).
    `at_ms`: the record's own timestamp, the event time when the record carries none."""
    if envelope not in ENVELOPES:
        raise MappingError(SCHEMA_MISMATCH, f"envelope must be one of {', '.join(ENVELOPES)}")
    if isinstance(value, dict) and value.get("payload") is None and "schema" in value:
        value = None  # the JSON converter's tombstone, {"schema": null, "payload": null}
    if value is None:
        if tombstones == "delete" and isinstance(key, dict):
            return _delete(_row_of_debezium(key), mapping, source, at_ms)
        return NoChange("tombstone")
    if not isinstance(value, dict):
        raise MappingError(SCHEMA_MISMATCH, f"expected a change envelope object, got {type(value).__name__}")
    record = _row_of_debezium(value)
    if envelope == "flattened" or (envelope == "auto" and not _is_envelope(record)):
        return _from_flattened(record, mapping, source, prefix, at_ms)
    op = record.get("op")
    meta = record.get("source") if isinstance(record.get("source"), dict) else {}
    if op == "t":
        return NoChange("truncate", _table(meta))
    if op == "m":
        return NoChange("message")
    if op not in DEBEZIUM_OPS:
        raise MappingError(SCHEMA_MISMATCH, "op is not one of c, u, r, d (t and m change no customer)")
    at = meta.get("ts_ms") or record.get("ts_ms")
    at = to_epoch_ms(at) if at is not None else at_ms
    if op == "d":
        row = record.get("before")
        if row is None and isinstance(key, dict):
            row = _row_of_debezium(key)  # REPLICA IDENTITY DEFAULT: only the key names the deleted row
        if row is None:
            raise MappingError(MISSING_FIELD, "op d with neither a before image nor a key")
        return _delete(row, mapping, source, at)
    row = record.get("after")
    if row is None:
        raise MappingError(MISSING_FIELD, f"op {op} without an after image")
    event = map_row(row, mapping, source, at)
    event["op"] = "upsert"
    return event


def _from_flattened(record: dict, mapping: dict | None, source: str, prefix: str, at_ms: int | None):
    meta = {k[len(prefix):]: v for k, v in record.items() if k.startswith(prefix)}
    row = {k: v for k, v in record.items() if not k.startswith(prefix)}
    op = meta.get("op")
    if op == "t":
        return NoChange("truncate", _table(meta))
    if op == "m":
        return NoChange("message")
    if op is not None and op not in DEBEZIUM_OPS:
        raise MappingError(SCHEMA_MISMATCH, f"{prefix}op is not one of c, u, r, d (t and m change no customer)")
    at = meta.get("source_ts_ms") or meta.get("ts_ms")
    at = to_epoch_ms(at) if at is not None else at_ms
    if op == "d" or meta.get("deleted") in (True, "true"):  # delete.handling.mode=rewrite
        return _delete(row, mapping, source, at)
    event = map_row(row, mapping, source, at)
    event["op"] = "upsert"
    return event


__all__ = ["MappingError", "NoChange", "map_row", "from_debezium", "check_mapping", "NOT_DECODABLE"]
