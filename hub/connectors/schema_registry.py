"""Avro with a Confluent Schema Registry's ids, through confluent-kafka's
serdes: what sources write and the ingest stage reads when a source names a
`schema_registry_url` (`mock://...`: confluent-kafka's in-process mock).
Needs the `schemaregistry` extra (imported here, at module level, so that
hub.connectors.registry can name it when it is missing). A registry that
cannot be reached raises ConnectionError (retried as infrastructure); an id
it does not hold raises SchemaError (the record is dead-lettered)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

import httpx2
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from hub.connectors.serdes import standalone_schema
from hub.schemas import CUSTOMER_EVENT, SchemaError, codec


@lru_cache(maxsize=None)
def registry_client(url: str):
    # one client per URL and process: a mock:// registry then keeps its ids between uses
    return SchemaRegistryClient.new_client({"url": url})


class RegistryAvro:
    """Avro in the Confluent wire format with a Schema Registry's ids."""

    def __init__(self, url: str, record_name: str | None = CUSTOMER_EVENT):
        """`record_name` None: decode only, whatever schema each record names."""
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
        try:
            record = self._deserializer(payload, self._context(topic, self._value))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise SchemaError(f"unknown schema id {int.from_bytes(payload[1:5], 'big')} in the schema registry") \
                    from None
            raise ConnectionError(f"schema registry: {exc}") from exc  # retried, never dead-lettered
        except httpx2.HTTPError as exc:
            raise ConnectionError(f"schema registry unreachable: {type(exc).__name__}: {exc}") from exc
        record = _epoch_ms(record)
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
