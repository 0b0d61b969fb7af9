"""`hub tail`: the records of a topic as a person reads them, one line each,
from the beginning and then as they arrive: JSON as it is, the hub's Avro
records decoded (sealed personal fields opened when the key is at hand),
tombstones with the reason a target was given, dead letters with theirs.
Filters by text or by customer; stops after a count or a time. A tool for
exploring and for support, not a consumer to build on.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from hub.connectors.kafka_security import as_connection
from hub.crypto import Keyring, SealError, key_id
from hub.records import ERROR_EXCEPTION, ERROR_REASON, REASON_HEADER
from hub.schemas import LINKED, SchemaError, decode_framed, reader_name, schema_name
from hub.topic_seal import PERSONAL, SEALED_FIELD, open_linked, open_record

CANONICAL_TOPIC = "customer.canonical"


def _shown_sealed(record: dict) -> dict:
    """A record whose payload was not opened: which key would open it."""
    sealed = record.get(SEALED_FIELD)
    if not isinstance(sealed, bytes):
        return record
    return {**record, SEALED_FIELD: f"<{len(sealed)} bytes sealed with key {key_id(sealed)}>"}


def readable(value: bytes | None, keyring: Keyring | None = None, topic: str = "", key: bytes | None = None,
             canonical_topic: str = CANONICAL_TOPIC) -> str:
    """A record's value as one line of text; a golden record, audit event or canonical record sealed on `topic`
    (hub.topic_seal), or the canonical record a linked record carries (sealed for `canonical_topic`), opened
    with `keyring` when it holds the key, shown sealed otherwise."""
    if value is None:
        return "null"
    if value[:1] in (b"{", b"["):
        try:
            return orjson.dumps(orjson.loads(value)).decode()
        except orjson.JSONDecodeError:
            pass
    if value[:1] == b"\x00":
        try:
            record = decode_framed(value)
        except (SchemaError, ValueError, EOFError, IndexError):
            return f"<{len(value)} bytes, Avro schema id {int.from_bytes(value[1:5], 'big')}>"
        name = reader_name(schema_name(int.from_bytes(value[1:5], "big")))
        if keyring is not None and record.get(SEALED_FIELD) is not None and name in PERSONAL:
            try:
                record = open_record(keyring, name, record, topic, key)
            except SealError:
                pass  # not this keyring's, or not this topic's: shown as it is
        if name == LINKED and record.get("canonical"):
            if keyring is not None:
                try:
                    record = open_linked(keyring, record, canonical_topic)
                except SealError:
                    pass
            record = {**record, "canonical": _shown_sealed(record["canonical"])}
        return orjson.dumps(_shown_sealed(record)).decode()
    return f"<{len(value)} bytes>"


def describe(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
             headers: list | None, keyring: Keyring | None = None, canonical_topic: str = CANONICAL_TOPIC) -> str:
    """One record, one line: where it is, its key, and its value (sealed personal fields opened with
    `keyring`) or why there is none."""
    found = {name: raw.decode(errors="replace") for name, raw in headers or () if raw is not None}
    where = f"{topic}[{partition}]@{offset} {key.decode(errors='replace') if key else '-'}"
    if value is None:
        return f"{where} (withdrawn: {found.get(REASON_HEADER, 'no reason given')})"
    line = f"{where} {readable(value, keyring, topic, key, canonical_topic)}"
    if ERROR_REASON in found:
        line += f"  (dead letter: {found[ERROR_REASON]}: {found.get(ERROR_EXCEPTION, '')[:200]})"
    return line


def records(bootstrap, topic: str, deadline: float | None, stop: Callable[[], bool]) -> Iterator[tuple]:
    """Every record of `topic` from the beginning, then as they arrive, until `deadline` (monotonic) or
    `stop()`; None whenever nothing came for a moment (so a caller waiting on something else can look again)."""
    consumer = Consumer(as_connection(bootstrap).config(**{"group.id": "hub-tail", "enable.auto.commit": False,
                                                           "fetch.wait.max.ms": 100, "enable.partition.eof": False}))
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise LookupError(f"no topic {topic} on {bootstrap}")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)])
        while not stop() and (deadline is None or time.monotonic() < deadline):
            messages = consumer.consume(500, timeout=0.2)
            if not messages:
                yield None
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise LookupError(f"no topic {topic} on {bootstrap}")
                    continue
                yield (message.topic(), message.partition(), message.offset(), message.key(), message.value(),
                       message.headers())
    finally:
        consumer.close()
