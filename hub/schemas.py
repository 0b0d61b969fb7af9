"""Avro schemas of every record that crosses a topic, and their wire format.

Owns loading `avro_schemas/`, the local schema-id table, and encoding and
decoding in the Confluent wire format (magic byte 0, 4-byte big-endian schema
id, schemaless Avro body). Readers resolve old writer schemas to the current
reader schema, so data written with an earlier version stays readable.
Encoding goes through a writer generated from the schema (hub.avro_writers),
with fastavro's for any value that writer does not take.
"""

from __future__ import annotations

import io
import json
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema

from hub import avro_writers

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")

CUSTOMER_EVENT = "hub.CustomerEvent"
CANONICAL = "hub.CanonicalCustomer"
LINKED = "hub.LinkedRecord"
MATCH_DECISION = "hub.MatchDecision"
GOLDEN = "hub.GoldenRecord"
AUDIT = "hub.AuditEvent"
CONSENT_EVENT = "hub.ConsentEvent"
ERASURE_REQUEST = "hub.ErasureRequest"
STEWARD_ACTION = "hub.StewardAction"
SURVEY_RESPONSE = "hub.SurveyResponse"
ACCESS_EVENT = "hub.AccessEvent"


def schema_dir() -> Path:
    """Where the .avsc files live: inside the package, else the repository root."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "avro_schemas", here.parent / "avro_schemas"):
        if (candidate / "registry.json").is_file():
            return candidate
    raise FileNotFoundError("avro_schemas/ not found next to the hub package")


class SchemaError(ValueError):
    """A payload that cannot be decoded with any known schema."""


@lru_cache(maxsize=None)
def registry_ids() -> dict[str, int]:
    table = json.loads((schema_dir() / "registry.json").read_text())
    return {name: ident for name, ident in table.items() if not name.startswith("_")}


def _plain_longs(node: Any) -> Any:
    """Drop timestamp logical types: the hub works in epoch milliseconds, and
    turning every timestamp into a datetime costs time on the hot path."""
    if isinstance(node, dict):
        return {k: _plain_longs(v) for k, v in node.items()
                if not (k == "logicalType" and str(v).startswith("timestamp"))}
    if isinstance(node, list):
        return [_plain_longs(v) for v in node]
    return node


@lru_cache(maxsize=None)
def _all_parsed() -> dict[str, Any]:
    """Every schema, current and historic, parsed with shared named types."""
    base = schema_dir()
    raw = {p.stem: _plain_longs(json.loads(p.read_text())) for p in sorted(base.glob("hub.*.avsc"))}
    named: dict[str, Any] = {}
    result: dict[str, Any] = {}
    pending = dict(raw)
    while pending:
        progressed = False
        for name, schema in list(pending.items()):
            try:
                result[name] = fastavro.parse_schema(schema, named_schemas=named)
            except fastavro.schema.UnknownType:
                continue
            del pending[name]
            progressed = True
        if not progressed:
            raise SchemaError(f"unresolvable named types in {sorted(pending)}")
    for path in sorted((base / "history").glob("hub.*.avsc")):
        schema = _plain_longs(json.loads(path.read_text()))
        # a historic schema redefines its own named types: parse it with a copy
        result[path.stem] = fastavro.parse_schema(schema, named_schemas=dict(named))
    return result


def parsed(name: str) -> Any:
    """The parsed schema of `name` (`hub.X` current, `hub.X.vN` from history/)."""
    try:
        return _all_parsed()[name]
    except KeyError:
        raise KeyError(f"no Avro schema named {name}") from None


@lru_cache(maxsize=None)
def _name_of_id(schema_id: int) -> str:
    for name, ident in registry_ids().items():
        if ident == schema_id:
            return name
    raise SchemaError(f"unknown schema id {schema_id}")


def schema_name(schema_id: int) -> str:
    """The schema (`hub.X` or `hub.X.vN`) a wire-format id stands for."""
    return _name_of_id(schema_id)


_INTERNAL_KEYS = ("__fastavro_parsed", "__named_schemas")


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if k not in _INTERNAL_KEYS}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


@lru_cache(maxsize=None)
def expanded(name: str) -> dict:
    """The schema `name` as plain JSON, every named type written out where it is used (to cut from)."""
    return _clean(fastavro.schema.expand_schema(parsed(name)))


def reader_name(writer_name: str) -> str:
    """The current schema a historic writer schema resolves to."""
    parts = writer_name.split(".")
    return ".".join(parts[:2])


@lru_cache(maxsize=None)
def named_types(name: str) -> dict[str, dict]:
    """Every named type the schema `name` can use, by full name, as plain JSON (a type defined in another
    file stays a name in `expanded`)."""
    return {full: _clean(schema) for full, schema in parsed(name).get("__named_schemas", {}).items()}


def _generated_writer(name: str):
    try:
        return avro_writers.generate(expanded(name), named_types(name))
    except NotImplementedError:
        return None


class AvroCodec:
    """Encode and decode one record type in the Confluent wire format."""

    def __init__(self, name: str):
        self.name = name
        self.schema = parsed(name)
        self.schema_id = registry_ids()[name]
        self._header = _HEADER.pack(MAGIC_BYTE, self.schema_id)
        self._write = _generated_writer(name)

    def encode_plain(self, record: dict) -> bytes:
        """`encode` by the generated writer alone: raises (NotPlain, or what the generated code trips on)
        for a record it does not take, which fastavro may still write or refuse."""
        if self._write is None:
            raise avro_writers.NotPlain
        return self._header + self._write(record)

    def encode(self, record: dict) -> bytes:
        if self._write is not None:
            try:
                return self._header + self._write(record)
            except Exception:  # noqa: BLE001 - NotPlain, or a value the generated code trips on: fastavro decides
                pass
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, payload: bytes) -> dict:
        """Decode a framed payload; a different known writer id is resolved to this schema."""
        if len(payload) < 5 or payload[0] != MAGIC_BYTE:
            raise SchemaError("not in the Avro wire format (magic byte 0 + schema id)")
        _, schema_id = _HEADER.unpack_from(payload)
        buf = io.BytesIO(payload)
        buf.seek(5)
        if schema_id == self.schema_id:
            record = fastavro.schemaless_reader(buf, self.schema, None)
        else:
            writer = _name_of_id(schema_id)
            if reader_name(writer) != self.name:
                raise SchemaError(f"schema id {schema_id} is {writer}, expected {self.name}")
            record = fastavro.schemaless_reader(buf, parsed(writer), self.schema)
        if buf.tell() != len(payload):
            raise SchemaError(f"{len(payload) - buf.tell()} trailing bytes after the Avro record")
        return record


@lru_cache(maxsize=None)
def codec(name: str) -> AvroCodec:
    return AvroCodec(name)


def decode_framed(payload: bytes) -> dict:
    """Any hub record in the Avro wire format, read by the current schema its
    schema id resolves to. SchemaError for an id the hub does not know."""
    if len(payload) < 5 or payload[0] != MAGIC_BYTE:
        raise SchemaError("not in the Avro wire format (magic byte 0 + schema id)")
    return codec(reader_name(_name_of_id(_HEADER.unpack_from(payload)[1]))).decode(payload)


def decode_avro_or_json(name: str, payload: bytes | None) -> dict:
    """A low-volume topic's record, in the Avro wire format or as JSON in the
    same shape (checked and completed with the schema's defaults).
    Raises SchemaError (or ValueError/TypeError/KeyError from bad JSON)."""
    record_codec = codec(name)
    if payload and payload[:1] == b"{":
        import orjson

        return record_codec.decode(record_codec.encode(orjson.loads(payload)))
    return record_codec.decode(payload or b"")
