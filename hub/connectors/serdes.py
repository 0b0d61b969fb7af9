"""How source connectors write events and read Avro: JSON, Avro with the hub's
local schema ids, or Avro with the ids of a Confluent Schema Registry
(confluent-kafka's serdes; `mock://` URLs give its in-process mock registry).

The registry path needs the `schemaregistry` extra; `RegistryAvro` is loaded
through hub.connectors.registry so a missing extra names its pip command.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

import orjson

from hub.schemas import CUSTOMER_EVENT, codec, schema_dir


@lru_cache(maxsize=None)
def standalone_schema(name: str) -> str:
    """A schema with the named types it uses written inline, as a registry stores it."""
    base = schema_dir()
    seen: set[str] = set()

    def inline(node):
        if isinstance(node, str) and node.startswith("hub.") and (base / f"{node}.avsc").is_file():
            if node in seen:
                return node
            seen.add(node)
            return inline(json.loads((base / f"{node}.avsc").read_text()))
        if isinstance(node, dict):
            if node.get("type") in ("record", "enum", "fixed"):
                seen.add(f"{node.get('namespace', 'hub')}.{node['name']}" if "." not in node["name"] else node["name"])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return json.dumps(inline(name))


@lru_cache(maxsize=None)
def registry_client(url: str):
    # one client per URL and process: a mock:// registry then keeps its ids between uses
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client({"url": url})


class RegistryAvro:
    """Avro in the Confluent wire format with a Schema Registry's ids."""

    def __init__(self, url: str, record_name: str | None = CUSTOMER_EVENT):
        """`record_name` None: decode only, whatever schema each record names."""
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        self._context = SerializationContext
        self._value = MessageField.VALUE
        client = registry_client(url)
        self.record_name = record_name
        self._serializer = (AvroSerializer(client, standalone_schema(record_name), conf={"auto.register.schemas": True})
                            if record_name else None)
        # no reader schema: each record is read with the schema its id names
        self._deserializer = AvroDeserializer(client)

    def encode(self, topic: str, record: dict) -> bytes:
        return self._serializer(record, self._context(topic, self._value))

    def decode(self, topic: str, payload: bytes) -> dict:
        """The record as the hub's current schema reads it (epoch-ms times, defaults filled)."""
        record = _epoch_ms(self._deserializer(payload, self._context(topic, self._value)))
        if self.record_name in _LOCAL_NAMES:
            local = codec(self.record_name)
            record = local.decode(local.encode(record))
        return record


_LOCAL_NAMES = (CUSTOMER_EVENT,)


def _epoch_ms(node):
    # a writer schema with timestamp-millis makes the deserializer return datetimes
    if isinstance(node, datetime):
        return int(node.timestamp() * 1000)
    if isinstance(node, dict):
        return {k: _epoch_ms(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_epoch_ms(v) for v in node]
    return node


@lru_cache(maxsize=None)
def registry_avro(url: str) -> RegistryAvro:
    from hub.connectors.registry import load

    return load("serde", "schema-registry")(url)


def event_encoder(value_format: str, registry_url: str | None):
    """topic, CustomerEvent dict -> bytes as the ingest stage reads them."""
    if value_format == "json":
        return lambda _topic, event: orjson.dumps(event)
    if registry_url:
        avro = registry_avro(registry_url)
        return lambda topic, event: avro.encode(topic, _complete(event))
    local = codec(CUSTOMER_EVENT)
    return lambda _topic, event: local.encode(_complete(event))


def _complete(event: dict) -> dict:
    """Fill the defaults the Avro writer needs (JSON lets them be absent)."""
    return codec(CUSTOMER_EVENT).decode(codec(CUSTOMER_EVENT).encode(event))
