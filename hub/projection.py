"""Data minimisation: the slice of a golden record one target may receive,
and how it is written (JSON, or Avro with the target's own schema).

Pure. A projection holds `golden_id` and the target's configured fields only;
its hash tells whether a golden change matters to that target at all.
Minimisation reaches inside values: which source records a value came from
(`emails[].sources`, `consents[].subject`, `survey.source`...) is provenance,
and only a target that receives provenance (`members` or `lineage` among its
fields) gets it; for the others those nested fields are left out of the
record and of its Avro schema. A
target's Avro schema is the golden-record schema cut down to those fields,
named `hub.target.<name>`; its wire-format id is derived from the schema
text, so the same fields always give the same id.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from functools import lru_cache

import fastavro
import orjson

from hub.config import TargetConfig
from hub.schemas import GOLDEN, expanded

# golden-record field -> the field inside its values that names member source records
NESTED_PROVENANCE = {"emails": "sources", "phones": "sources", "addresses": "sources", "consents": "subject",
                     "survey": "source"}
PROVENANCE_FIELDS = ("members", "lineage")


def sees_provenance(fields) -> bool:
    return any(name in fields for name in PROVENANCE_FIELDS)


def _without(value, inner: str):
    if isinstance(value, list):
        return [{k: v for k, v in item.items() if k != inner} for item in value]
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != inner}
    return value


def project(golden: dict, target: TargetConfig) -> dict:
    view = {"golden_id": golden["golden_id"]}
    minimise = not sees_provenance(target.fields)
    for name in target.fields:
        value = golden.get(name)
        if minimise and name in NESTED_PROVENANCE:
            value = _without(value, NESTED_PROVENANCE[name])
        view[name] = value
    return view


def target_key(golden: dict, target: TargetConfig) -> str | None:
    return golden.get(target.key)


def encode_json(view: dict) -> bytes:
    return orjson.dumps(view, option=orjson.OPT_SORT_KEYS)


def fingerprint(payload: bytes) -> str:
    return hashlib.blake2s(payload, digest_size=12).hexdigest()


@lru_cache(maxsize=None)
def _target_schema(name: str, fields: tuple[str, ...]) -> tuple[dict, int, object]:
    golden = expanded(GOLDEN)
    by_name = {f["name"]: f for f in golden["fields"]}
    if not sees_provenance(fields):
        by_name.update({name: _schema_without(by_name[name], inner) for name, inner in NESTED_PROVENANCE.items()})
    schema = {"type": "record", "name": name, "namespace": "hub.target",
              "doc": f"What target {name} receives of a golden record (hub.GoldenRecord cut to its fields).",
              "fields": [by_name["golden_id"], *(by_name[f] for f in fields if f != "golden_id")]}
    text = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    schema_id = 0x40000000 | (zlib.crc32(text) & 0x3FFFFFFF)  # above the hub's own fixed ids
    return schema, schema_id, fastavro.parse_schema(schema)


def _schema_without(field: dict, inner: str) -> dict:
    """A golden-record field's schema with `inner` left out of its record type (in an array or a union)."""
    def cut(node):
        if isinstance(node, list):
            return [cut(branch) for branch in node]
        if isinstance(node, dict) and node.get("type") == "array":
            return {**node, "items": cut(node["items"])}
        if isinstance(node, dict) and node.get("type") == "record":
            return {**node, "fields": [f for f in node["fields"] if f["name"] != inner]}
        return node
    return {**field, "type": cut(field["type"])}


def target_schema(target: TargetConfig) -> tuple[dict, int]:
    """The target's Avro schema (JSON) and its wire-format id."""
    schema, schema_id, _ = _target_schema(target.name, tuple(target.fields))
    return schema, schema_id


def encode_avro(view: dict, target: TargetConfig) -> bytes:
    _, schema_id, compiled = _target_schema(target.name, tuple(target.fields))
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(buf, compiled, view)
    return buf.getvalue()


def decode_avro(payload: bytes, target: TargetConfig) -> dict:
    _, schema_id, compiled = _target_schema(target.name, tuple(target.fields))
    magic, found = struct.unpack_from(">bI", payload)
    if magic != 0 or found != schema_id:
        raise ValueError(f"not a {target.name} record (schema id {found}, expected {schema_id})")
    return fastavro.schemaless_reader(io.BytesIO(payload[5:]), compiled, None)


def encode(view: dict, target: TargetConfig) -> bytes:
    return encode_avro(view, target) if target.format == "avro" else encode_json(view)
