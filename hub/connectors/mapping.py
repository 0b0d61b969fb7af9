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


def from_debezium(value, mapping: dict | None, source: str, key=None) -> dict | None:
    """A Debezium change envelope (before/after/op/source) to a CustomerEvent;
    None for what carries no change (Debezium's tombstone after a delete)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MappingError(SCHEMA_MISMATCH, f"expected a change envelope object, got {type(value).__name__}")
    envelope = _row_of_debezium(value)
    op = envelope.get("op")
    if op not in DEBEZIUM_OPS:
        raise MappingError(SCHEMA_MISMATCH, f"op {str(op)[:16]!r} is not one of c, u, r, d")
    meta = envelope.get("source") if isinstance(envelope.get("source"), dict) else {}
    at = meta.get("ts_ms") or envelope.get("ts_ms")
    at = to_epoch_ms(at) if at is not None else None
    if op == "d":
        row = envelope.get("before")
        if row is None and isinstance(key, dict):
            row = _row_of_debezium(key)  # REPLICA IDENTITY DEFAULT: only the key names the deleted row
        if row is None:
            raise MappingError(MISSING_FIELD, "op d with neither a before image nor a key")
        event = map_row(row, mapping, source, at)
        return {"source": source, "source_id": event["source_id"], "event_time": event["event_time"], "op": "delete"}
    row = envelope.get("after")
    if row is None:
        raise MappingError(MISSING_FIELD, f"op {op} without an after image")
    event = map_row(row, mapping, source, at)
    event["op"] = "upsert"
    return event


__all__ = ["MappingError", "map_row", "from_debezium", "check_mapping", "NOT_DECODABLE"]
