"""Decoding and validating raw source events: bytes in, a CustomerEvent dict or
a StageError out. Nothing here touches Kafka or Redis.

Accepted payloads: Avro in the Confluent wire format (magic byte 0 + schema
id; any known version of hub.CustomerEvent) and JSON objects in the same
shape (`event_time` as epoch milliseconds or an ISO-8601 string). JSON is
checked by writing it with the Avro schema, which both validates types and
fills defaults, so both formats come out identical.

An error's detail names the field and what is wrong with it, never the
value: details go to DLQ headers and to HTTP 400 answers, and a value may be
someone's name. Ids (`source_id`, and every id of the low-volume topics) may
hold any printable character but `{`, `}` and `|`: those, and control or
invisible characters (NUL, newline, bidi overrides, zero-width), would break
out of a Redis key name (`{...}` is a hash tag, `|` a separator) or a Kafka
key, so such a record is dead-lettered as `invalid_id`; ids are restricted,
not encoded, so every id the hub holds is the id its source sent.
"""

from __future__ import annotations

import io
import re
from functools import lru_cache
from datetime import datetime, timezone

import fastavro
import orjson

from hub.config import QualityConfig
from hub.records import StageError
from hub.schemas import CUSTOMER_EVENT, SchemaError, codec

STAGE = "decode"
# The reason vocabulary: each becomes a label value, so keep it closed.
NOT_DECODABLE = "not_decodable"
UNKNOWN_SCHEMA = "unknown_schema"
SCHEMA_MISMATCH = "schema_mismatch"
MISSING_FIELD = "missing_field"
ABSURD_VALUE = "absurd_value"
OVERSIZED = "oversized"
SOURCE_MISMATCH = "source_mismatch"
INVALID_ID = "invalid_id"
REASONS = (NOT_DECODABLE, UNKNOWN_SCHEMA, SCHEMA_MISMATCH, MISSING_FIELD, ABSURD_VALUE,
           OVERSIZED, SOURCE_MISMATCH, INVALID_ID)

_MAX_ID_LENGTH = 128
_KEY_BREAKERS = frozenset("{}|")
_ID_FIELDS = ("source_id", "golden_id", "member", "survey_id", "account_ref")


def id_problem(name: str, value: str) -> str | None:
    """Why `value` cannot be an id (never repeating it), or None."""
    # isprintable() is False for control, format (invisible), surrogate, private and separator characters but space
    if value.isprintable() and _KEY_BREAKERS.isdisjoint(value):
        return None
    return f"{name} holds a character ids may not: a control or invisible character, '{{', '}}' or '|'"


def ids_problem(record: dict) -> str | None:
    """Why an id of a decoded record (any record type: `_ID_FIELDS`, and `others`) cannot be one, or None."""
    for name in _ID_FIELDS:
        value = record.get(name)
        if isinstance(value, str) and (problem := id_problem(name, value)):
            return problem
    for value in record.get("others") or ():
        if isinstance(value, str) and (problem := id_problem("others", value)):
            return problem
    return None


_TYPE_MISMATCH = re.compile(r"\(type <class '(\w+)'>\) do not match .* on field (\w+)$", re.S)
_MUST_BE = re.compile(r"^must be (\w+)((?: on field \w+)+)$")


@lru_cache(maxsize=1)
def _enum_symbols() -> dict[str, set[str]]:
    from hub.schemas import parsed

    found: dict[str, set[str]] = {}

    def collect(node):
        if isinstance(node, dict):
            if node.get("type") == "enum":
                found[node["name"].rsplit(".", 1)[-1]] = set(node["symbols"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)
    collect(parsed(CUSTOMER_EVENT))
    return found


def _enum_field(data) -> str:
    """Where a JSON event holds a value outside an enum's symbols (fastavro's message names neither)."""
    symbols = _enum_symbols()

    def outside(value, enum: str) -> bool:  # a list or an object is no symbol (and cannot be looked up in a set)
        return not isinstance(value, str) or value not in symbols.get(enum, ())

    if isinstance(data, dict):
        for name, enum in (("op", "Op"), ("record_type", "RecordType")):
            if name in data and outside(data[name], enum):
                return name
        consents = data.get("consents")
        for i, statement in enumerate(consents if isinstance(consents, list) else ()):
            if isinstance(statement, dict):
                for name, enum in (("status", "ConsentStatus"), ("legal_basis", "LegalBasis")):
                    if name in statement and outside(statement[name], enum):
                        return f"consents[{i}].{name}"
    return "an enum field"


def describe_schema_error(exc: BaseException, data=None) -> str:
    """What a schema error says about the record, without the values in it."""
    if isinstance(exc, RecursionError):
        return "a value is nested too deeply"
    if isinstance(exc, SchemaError):  # the hub's own words: ids and counts, never values
        return str(exc)
    text = str(exc)
    if isinstance(exc, ValueError):
        found = _TYPE_MISMATCH.search(text)
        if found:
            return f"{found.group(2)}: a {found.group(1)} does not match its schema"
        found = _MUST_BE.match(text)
        if found:
            path = list(dict.fromkeys(reversed(found.group(2).split(" on field ")[1:])))
            return f"{'.'.join(path)} must be a {found.group(1)}"
        if text.endswith("is not in list"):
            return f"{_enum_field(data)}: not one of the allowed values"
        if text.startswith("no value and no default for "):
            return f"{text.rsplit(' ', 1)[-1]} is required"
    return f"does not match the schema ({type(exc).__name__})"


def _error(reason: str, detail: str) -> StageError:
    return StageError(STAGE, reason, detail)


def _iso_to_ms(value: str) -> int:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


def _non_boolean_flag(data: dict) -> str | None:
    """The Avro writer takes any truthy value for a boolean ("false" included),
    so JSON flags are checked here; full schema validation costs ~80 µs."""
    for attr in ("emails", "phones", "addresses"):
        items = data.get(attr)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and not isinstance(item.get("verified", False), bool):
                    return attr
    return None


def _from_json(payload: bytes) -> dict | StageError:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return _error(NOT_DECODABLE, f"not Avro and not JSON: {exc}")
    if not isinstance(data, dict):
        return _error(SCHEMA_MISMATCH, f"expected a JSON object, got {type(data).__name__}")
    event_time = data.get("event_time")
    if isinstance(event_time, str):
        try:
            data["event_time"] = _iso_to_ms(event_time)
        except ValueError:
            return _error(SCHEMA_MISMATCH, "event_time: not epoch milliseconds nor ISO-8601")
    elif isinstance(event_time, float) and event_time.is_integer():
        data["event_time"] = int(event_time)
    wrong_flag = _non_boolean_flag(data)
    if wrong_flag:
        return _error(SCHEMA_MISMATCH, f"{wrong_flag}.verified must be true or false")
    avro = codec(CUSTOMER_EVENT)
    try:
        # what fastavro would write, when the generated writer takes the values (hub.avro_writers)
        return avro.decode(avro.encode_plain(data))
    except Exception:  # noqa: BLE001 - fastavro below writes it or says what is wrong, as it always has
        pass
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, avro.schema, data)
    except ValueError as exc:
        text = str(exc)
        if text.startswith("no value and no default for "):
            field = text.rsplit(" ", 1)[-1]
            if field in data or field in ("source", "source_id", "event_time"):
                return _error(MISSING_FIELD, f"{field} is required")
            return _error(SCHEMA_MISMATCH, f"a nested record lacks {field}")
        return _error(SCHEMA_MISMATCH, describe_schema_error(exc, data))
    except (TypeError, AttributeError, OverflowError, UnicodeError, RecursionError) as exc:
        # RecursionError: fastavro quotes a mismatching value in its message, and a value nested
        # a thousand deep cannot be quoted
        return _error(SCHEMA_MISMATCH, describe_schema_error(exc, data))
    buf.seek(0)
    return fastavro.schemaless_reader(buf, avro.schema, None)


def decode_event(payload: bytes | None, avro_decode=None) -> dict | StageError:
    """Bytes of a raw event to a CustomerEvent dict with every field present.
    `avro_decode` reads the Avro wire format instead of the local schema ids
    (a Schema Registry's, hub.connectors.serdes)."""
    if not payload:
        return _error(NOT_DECODABLE, "empty payload")
    if payload[0] == 0:
        try:
            return (avro_decode or codec(CUSTOMER_EVENT).decode)(payload)
        except SchemaError as exc:
            reason = UNKNOWN_SCHEMA if str(exc).startswith(("unknown schema id", "schema id ")) else NOT_DECODABLE
            return _error(reason, str(exc))
        except ConnectionError:
            raise  # a schema registry out of reach: the stage retries, the record is not bad
        except Exception as exc:  # fastavro raises many types on truncated or hostile bytes
            return _error(NOT_DECODABLE, f"not a valid Avro payload for its schema ({type(exc).__name__})")
    return _from_json(payload)


@lru_cache(maxsize=8)
def _year_start_ms(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def check_event(event: dict, expected_source: str, rules: QualityConfig, now_ms: int) -> StageError | None:
    """Semantic checks the schema cannot express."""
    source_id = event["source_id"].strip()
    if not source_id:
        return _error(MISSING_FIELD, "source_id is empty")
    if len(source_id) > _MAX_ID_LENGTH:
        return _error(ABSURD_VALUE, f"source_id longer than {_MAX_ID_LENGTH} characters")
    bad_id = ids_problem(event)
    if bad_id:
        return _error(INVALID_ID, bad_id)
    if event["source"] != expected_source:
        return _error(SOURCE_MISMATCH, f"event says source {event['source'][:64]!r}, topic belongs to {expected_source!r}")
    event_time = event["event_time"]
    earliest = _year_start_ms(rules.min_event_year)
    if event_time < earliest or event_time > now_ms + rules.max_future_skew_s * 1000:
        return _error(ABSURD_VALUE, f"event_time {event_time} outside [{rules.min_event_year}, now + {rules.max_future_skew_s}s]")
    for statement in event["consents"]:
        if statement["event_time"] < earliest or statement["event_time"] > now_ms + rules.max_future_skew_s * 1000:
            return _error(ABSURD_VALUE, "a consent statement's event_time is out of range")
    return None


def validate_raw(payload: bytes | None, expected_source: str, rules: QualityConfig, now_ms: int,
                 avro_decode=None) -> dict | StageError:
    """The whole decode stage for one raw event."""
    if payload is not None and len(payload) > rules.max_event_bytes:
        return _error(OVERSIZED, f"{len(payload)} bytes > max_event_bytes {rules.max_event_bytes}")
    event = decode_event(payload, avro_decode)
    if isinstance(event, StageError):
        return event
    problem = check_event(event, expected_source, rules, now_ms)
    return problem or event
