"""What a target record looks like outside Kafka (webhook bodies, file lines):
one JSON document per record, an upsert or a delete, with an idempotency key.

The key is derived from the record, not from when it was sent: an upsert's
from its target topic, key and value (the same projection re-sent after a
crash or a replay gets the same key, so the receiver can drop it); a delete's
from its topic, key and position in the topic (two withdrawals at different
times stay two).
"""

from __future__ import annotations

import base64
import hashlib

import orjson

from hub.records import REASON_HEADER

UPSERT, DELETE = "upsert", "delete"


def _header(record, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return value
    return None


def idempotency_key(record) -> str:
    digest = hashlib.sha256()
    digest.update(record.topic.encode() + b"\0" + (record.key or b"") + b"\0")
    if record.value is None:
        digest.update(f"delete\0{getattr(record, 'partition', '')}\0{getattr(record, 'offset', '')}".encode())
    else:
        digest.update(record.value)
    return digest.hexdigest()[:32]


def document(record) -> dict:
    """One record as a JSON-ready dict."""
    doc = {"op": DELETE if record.value is None else UPSERT,
           "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
           "idempotency_key": idempotency_key(record), "topic": record.topic}
    if record.value is None:
        reason = _header(record, REASON_HEADER)
        doc["reason"] = reason.decode("utf-8", "replace") if reason else None
        return doc
    try:
        doc["value"] = orjson.loads(record.value)
    except orjson.JSONDecodeError:  # a target with format avro: the wire-format bytes
        doc["value_base64"] = base64.b64encode(record.value).decode()
    return doc
