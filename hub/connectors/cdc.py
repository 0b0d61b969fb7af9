"""Source connector `debezium://[host:port]/<topic>`: change data capture.

Reads Debezium records (with or without the JSON converter's
`schema`/`payload` wrapping, or Avro from a Schema Registry) from a topic
with a consumer group of its own, maps each row by a column mapping
(hub.connectors.mapping) to a CustomerEvent, a delete to a delete event. No
host: the hub's own broker. Offsets are committed only after the events are
acknowledged on raw.<source>.

Options: `envelope` `auto` (default: the full envelope
`before`/`after`/`op`/`source` when a record is one, else a flattened row),
`full` or `flattened` (Debezium's ExtractNewRecordState: the row itself,
with `__op`, `__deleted` (delete.handling.mode=rewrite) and `__source_ts_ms`
when add.fields asks for them; `prefix` when add.fields.prefix is not
`__`); `tombstones` `skip` (default: Debezium's tombstone follows a delete
event) or `delete` (delete.handling.mode=none: the tombstone is the delete).
Tombstones (also the JSON converter's printed `{"schema": null, "payload":
null}`), truncates and logical-decoding messages change no customer: they
are counted in hub_cdc_skipped_total{source,kind}, a truncate is logged
(the hub deletes nothing on one), none is dead-lettered. A record with no
time of its own takes its Kafka timestamp.
"""

from __future__ import annotations

import logging
from collections import Counter
from urllib.parse import urlsplit

import orjson
from confluent_kafka import Consumer

from hub import metrics
from hub.connectors.kafka_security import KafkaConnection, as_connection
from hub.connectors.mapping import ENVELOPES, TOMBSTONES, MappingError, NoChange, check_mapping, from_debezium
from hub.ports import Rejected
from hub.validation import NOT_DECODABLE

log = logging.getLogger(__name__)


class DebeziumSource:
    needs_bootstrap = True  # the connector runner passes the hub's broker

    def __init__(self, url: str, source, bootstrap_servers: "str | KafkaConnection | None" = None, mapping: dict | None = None,
                 converter: str = "json", schema_registry_url: str | None = None, group_id: str | None = None,
                 session_timeout_ms: int = 6000, envelope: str = "auto", prefix: str = "__",
                 tombstones: str = "skip", **consumer_options):
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
        if envelope not in ENVELOPES:
            raise ValueError(f"envelope {envelope!r}: one of {', '.join(ENVELOPES)}")
        if tombstones not in TOMBSTONES:
            raise ValueError(f"tombstones {tombstones!r}: one of {', '.join(TOMBSTONES)}")
        self.forms = {"envelope": envelope, "prefix": prefix, "tombstones": tombstones}
        self.schema_registry_url = schema_registry_url
        if not (parts.netloc or bootstrap_servers):
            raise ValueError(f"{url}: no broker (give debezium://host:port/topic)")
        # another cluster (host:port in the URL) takes its security settings from the options;
        # the hub's own broker is reached as every hub client reaches it (hub.connectors.kafka_security)
        cluster = KafkaConnection(parts.netloc) if parts.netloc else as_connection(bootstrap_servers)
        self.config = cluster.config(**{"group.id": group_id or f"hub-cdc-{source.name}", "enable.auto.commit": False,
                                        "auto.offset.reset": "earliest", "session.timeout.ms": session_timeout_ms,
                                        "fetch.wait.max.ms": 20, **consumer_options})
        self.consumer: Consumer | None = None
        self.skipped_by_kind: Counter = Counter()

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
                out.append(Rejected(message.value(), NOT_DECODABLE, f"not a {self.converter} record "
                                    f"({type(exc).__name__})", message.key(), origin))
                continue
            try:
                key = self._decode(message.key(), message.topic())
            except Exception:  # the key is only needed for deletes without a before image
                key = None
            stamp_type, at_ms = message.timestamp()
            try:
                event = from_debezium(value, self.mapping, self.source.name, key if isinstance(key, dict) else None,
                                      at_ms=at_ms if stamp_type else None, **self.forms)
            except MappingError as exc:
                out.append(Rejected(message.value(), exc.reason, str(exc), message.key(), origin))
                continue
            if isinstance(event, NoChange):
                self._skip(event, origin)
                continue
            out.append(event)
        return out

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by_kind.values())

    def _skip(self, event: NoChange, origin: tuple) -> None:
        self.skipped_by_kind[event.kind] += 1
        metrics.CDC_SKIPPED.labels(self.source.name, event.kind).inc()
        if event.kind == "truncate":
            log.warning("source %s: TRUNCATE of %s at %s[%s]@%s; the hub deletes no customer on a truncate "
                        "(send deletes or erasure requests for those that must go)", self.source.name,
                        event.table or "a table", *origin)

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
