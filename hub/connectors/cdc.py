"""Source connector `debezium://[host:port]/<topic>`: change data capture.

Reads Debezium change envelopes (`before`/`after`/`op`/`source`, with or
without the JSON converter's `schema`/`payload` wrapping, or Avro from a
Schema Registry) from a topic with a consumer group of its own, maps each
row by a column mapping (hub.connectors.mapping) to a CustomerEvent, `op d`
to a delete event. No host: the hub's own broker. Offsets are committed only
after the events are acknowledged on raw.<source>.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import orjson
from confluent_kafka import Consumer

from hub.connectors.mapping import MappingError, check_mapping, from_debezium
from hub.ports import Rejected
from hub.validation import NOT_DECODABLE


class DebeziumSource:
    needs_bootstrap = True  # the connector runner passes the hub's broker

    def __init__(self, url: str, source, bootstrap_servers: str | None = None, mapping: dict | None = None,
                 converter: str = "json", schema_registry_url: str | None = None, group_id: str | None = None,
                 session_timeout_ms: int = 6000, **consumer_options):
        parts = urlsplit(url)
        self.topic = parts.path.strip("/")
        if not self.topic:
            raise ValueError(f"{url}: expected debezium://[host:port]/<topic>")
        self.source = source
        self.mapping = check_mapping(dict(mapping)) if mapping is not None else None
        if converter not in ("json", "avro"):
            raise ValueError(f"converter {converter!r}: json or avro")
        if converter == "avro" and not schema_registry_url:
            raise ValueError("converter avro needs schema_registry_url (Debezium's AvroConverter registers there)")
        self.converter = converter
        self.schema_registry_url = schema_registry_url
        self.config = {"bootstrap.servers": parts.netloc or bootstrap_servers,
                       "group.id": group_id or f"hub-cdc-{source.name}", "enable.auto.commit": False,
                       "auto.offset.reset": "earliest", "session.timeout.ms": session_timeout_ms,
                       "fetch.wait.max.ms": 20, **consumer_options}
        if not self.config["bootstrap.servers"]:
            raise ValueError(f"{url}: no broker (give debezium://host:port/topic)")
        self.consumer: Consumer | None = None
        self.skipped = 0

    def setup(self) -> None:
        self.consumer = Consumer(self.config)
        self.consumer.subscribe([self.topic])
        if self.converter == "avro":
            from hub.connectors.registry import load

            self._avro = load("serde", "schema-registry")(self.schema_registry_url, record_name=None)

    def _decode(self, raw: bytes | None, topic: str):
        if raw is None:
            return None
        if self.converter == "avro":
            return self._avro.decode(topic, raw)
        return orjson.loads(raw)

    def poll(self, max_records: int) -> list:
        out: list = []
        for message in self.consumer.consume(max_records, timeout=0.2):
            if message.error():
                continue
            origin = (message.topic(), message.partition(), message.offset())
            try:
                value = self._decode(message.value(), message.topic())
            except ConnectionError:
                raise  # the registry out of reach: stop uncommitted (a restart resumes here), never dead-letter
            except Exception as exc:  # JSON and Avro decoders raise many types on bad bytes
                out.append(Rejected(message.value(), NOT_DECODABLE, f"{type(exc).__name__}: {exc}"[:300],
                                    message.key(), origin))
                continue
            try:
                key = self._decode(message.key(), message.topic())
            except Exception:  # the key is only needed for deletes without a before image
                key = None
            try:
                event = from_debezium(value, self.mapping, self.source.name, key if isinstance(key, dict) else None)
            except MappingError as exc:
                out.append(Rejected(message.value(), exc.reason, str(exc), message.key(), origin))
                continue
            if event is None:
                self.skipped += 1  # Debezium's tombstone after a delete: the delete event came before it
                continue
            out.append(event)
        return out

    def commit(self) -> None:
        try:
            self.consumer.commit(asynchronous=False)
        except Exception as exc:
            if "NO_OFFSET" not in str(exc):  # nothing consumed since the last commit
                raise

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
