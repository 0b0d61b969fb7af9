"""Runs connectors: a source connector's events onto raw.<source>, and a
target's records from its topic into a sink, at least once.

A sink connector reads `mastered.<target>` with a consumer group of its own
(`connect-<name>`, as Kafka Connect names them), hands each batch to the
sink and commits the batch's offsets only after `flush()` returned. The hub's
broker is reached with the configured security (a `KafkaConnection`). A failed
flush is retried `errors.retries` times with doubling backoff; after the
last retry, `errors.tolerance: all` delivers the batch record by record and
sends each record that still fails to the dead-letter topic with the
original key, value and headers plus `hub.error.*` headers; `none` stops the
connector without committing, so nothing is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import orjson
from confluent_kafka import Consumer, KafkaException

from hub import metrics
from hub.config import ConnectorConfig, PipelineConfig
from hub.connectors.kafka import KafkaSink, check_connection
from hub.connectors.kafka_security import KafkaConnection, as_connection
from hub.connectors.mapping import to_epoch_ms
from hub.connectors.registry import ConnectorError, load, scheme_of
from hub.connectors.serdes import event_encoder
from hub.ports import Rejected
from hub.records import (ERROR_EXCEPTION, ERROR_OFFSET, ERROR_PARTITION, ERROR_REASON, ERROR_STAGE, ERROR_TOPIC,
                         InMessage, OutMessage, member_key)
from hub.validation import SCHEMA_MISMATCH

log = logging.getLogger(__name__)
DELIVERY_FAILED = "delivery_failed"
GIVE_UP_AFTER = 3  # records failing in a row, one by one, after the batch's last retry


class ConnectorFailed(RuntimeError):
    """A connector stopped (errors.tolerance none, or the broker unreachable): nothing was committed past it."""


@dataclass
class Report:
    delivered: int = 0
    dead_lettered: int = 0
    rejected: int = 0
    rejected_reasons: Counter = field(default_factory=Counter)


def _error_headers(stage: str, reason: str, detail: str, origin: tuple | None) -> list[tuple[str, bytes]]:
    headers = [(ERROR_STAGE, stage.encode()), (ERROR_REASON, reason.encode()),
               (ERROR_EXCEPTION, detail[:1000].encode("utf-8", "replace"))]
    if origin:
        headers += [(ERROR_TOPIC, origin[0].encode()), (ERROR_PARTITION, str(origin[1]).encode()),
                    (ERROR_OFFSET, str(origin[2]).encode())]
    return headers


class _Stopping(Exception):
    """Stop asked for while a delivery was failing: the batch stays uncommitted."""


class _Retrying:
    def __init__(self, config: ConnectorConfig, stop: threading.Event):
        self.config = config
        self.stop = stop
        self._retries = metrics.CONNECTOR_RETRIES.labels(config.name)

    def attempt(self, action) -> Exception | None:
        """Run `action` until it succeeds or retries run out; the last error, or None."""
        delay = self.config.errors_retry_delay_ms / 1000
        for attempt in range(self.config.errors_retries + 1):
            try:
                action()
                return None
            except Exception as exc:  # any sink's failure: retried, then dead-lettered
                last = exc
                if attempt == self.config.errors_retries:
                    break
                if self.stop.is_set():
                    raise _Stopping() from exc  # shutting down: leave the batch uncommitted, not dead-lettered
                self._retries.inc()
                log.warning("connector %s: %s; retry %d/%d in %.2fs", self.config.name, type(exc).__name__,
                            attempt + 1, self.config.errors_retries, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, self.config.errors_retry_delay_max_ms / 1000)
        return last


class SinkConnector:
    """mastered.<target> -> a sink (hub.ports.Sink), at least once."""

    def __init__(self, config: ConnectorConfig, pipeline: PipelineConfig, bootstrap: str | KafkaConnection, sink=None,
                 session_timeout_ms: int = 6000, fetch_wait_ms: int = 20):
        self.config = config
        target = pipeline.target(config.target)
        self.topic = target.output_topic
        self.sink = sink if sink is not None else load("sink", scheme_of(config.url))(config.url, **config.options)
        self.dlq = KafkaSink(bootstrap)
        self.consumer_config = as_connection(bootstrap).config(**{
            "group.id": f"connect-{config.name}", "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": session_timeout_ms, "fetch.wait.max.ms": fetch_wait_ms})
        self.report = Report()
        self._count = {o: metrics.CONNECTOR_RECORDS.labels(config.name, o) for o in ("delivered", "dead_lettered")}

    def _deliver(self, records: list[InMessage], retrying: _Retrying) -> None:
        def whole_batch():
            for record in records:
                self.sink.add(record)
            self.sink.flush()

        error = retrying.attempt(whole_batch)
        if error is None:
            self._done("delivered", len(records))
            return
        if self.config.errors_tolerance == "none":
            raise ConnectorFailed(f"connector {self.config.name}: {type(error).__name__}: {error}") from error
        # after the last retry: one attempt per record (one bad record must not sink the batch), the failing
        # ones to the DLQ; after a few failures in a row the target is down, not the records: stop trying
        failed: list[tuple[InMessage, Exception]] = []
        in_a_row = 0
        for record in records:
            if in_a_row >= GIVE_UP_AFTER:
                failed.append((record, error))
                continue
            try:
                self.sink.add(record)
                self.sink.flush()
                self._done("delivered", 1)
                in_a_row = 0
            except Exception as exc:
                failed.append((record, exc))
                in_a_row += 1
        for record, exc in failed:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            headers = list(record.headers or ()) + _error_headers(
                f"connector:{self.config.name}", DELIVERY_FAILED, detail,
                (record.topic, record.partition, record.offset))
            self.dlq.add(OutMessage(self.config.dlq_topic, record.key, record.value, headers))
        if failed:
            self.dlq.flush()  # raises if the DLQ itself is unreachable: then nothing is committed
            self._done("dead_lettered", len(failed))
            log.error("connector %s: %d records dead-lettered to %s after %d retries (%s)", self.config.name,
                      len(failed), self.config.dlq_topic, self.config.errors_retries, type(failed[0][1]).__name__)

    def _done(self, outcome: str, n: int) -> None:
        self._count[outcome].inc(n)
        setattr(self.report, outcome, getattr(self.report, outcome) + n)

    def run(self, stop: threading.Event | None = None) -> Report:
        stop = stop or threading.Event()
        retrying = _Retrying(self.config, stop)
        self.sink.setup()
        self.dlq.setup()
        consumer = Consumer(self.consumer_config)
        consumer.subscribe([self.topic])
        try:
            while not stop.is_set():
                messages = [m for m in consumer.consume(self.config.batch_size, timeout=0.2) if not m.error()]
                if not messages:
                    continue
                records = [InMessage(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1],
                                     m.headers()) for m in messages]
                try:
                    self._deliver(records, retrying)
                except _Stopping:
                    break
                try:
                    consumer.commit(asynchronous=False)
                except KafkaException as exc:
                    # e.g. the partitions moved to another instance meanwhile: it redelivers them (at least once)
                    log.warning("connector %s: commit failed: %s", self.config.name, exc)
        finally:
            consumer.close()
            close = getattr(self.sink, "close", None)
            if close:
                close()
        return self.report


class SourceConnector:
    """A source (hub.ports.Source) -> raw.<source>; what it cannot read -> dlq.<source>."""

    def __init__(self, config: ConnectorConfig, pipeline: PipelineConfig, bootstrap: str | KafkaConnection,
                 source=None, producer: dict | None = None):
        self.config = config
        self.source_config = pipeline.source(config.source)
        if source is None:
            cls = load("source", scheme_of(config.url))
            options = dict(config.options)
            if getattr(cls, "needs_bootstrap", False):
                options.setdefault("bootstrap_servers", bootstrap)
            source = cls(config.url, self.source_config, **options)
        self.source = source
        self.bootstrap = bootstrap
        # `producer`: librdkafka settings; a bulk load packs records into few, large batches
        self.sink = KafkaSink(bootstrap, **(producer or {}))
        self.encode = event_encoder(config.value_format, self.source_config.schema_registry_url)
        self.report = Report()
        self._count = {o: metrics.CONNECTOR_RECORDS.labels(config.name, o)
                       for o in ("delivered", "rejected")}

    def _message(self, item) -> OutMessage:
        topic = self.source_config.raw_topic
        if isinstance(item, Rejected):
            headers = _error_headers(f"connector:{self.config.name}", item.reason, item.detail, item.origin)
            return OutMessage(self.config.dlq_topic, item.key, item.raw, headers)
        event = dict(item)
        if isinstance(event.get("event_time"), str):
            try:
                event["event_time"] = to_epoch_ms(event["event_time"])
            except ValueError:
                pass  # left for the ingest stage to dead-letter with its reason
        key = member_key(str(event.get("source", "")), str(event.get("source_id", ""))).encode()
        try:
            return OutMessage(topic, key, self.encode(topic, event))
        except Exception as exc:  # an event the Avro writer refuses: kept with why
            detail = f"{type(exc).__name__}: {exc}"[:300]
            return OutMessage(self.config.dlq_topic, key, orjson.dumps(event),
                              _error_headers(f"connector:{self.config.name}", SCHEMA_MISMATCH, detail, None))

    def run(self, stop: threading.Event | None = None, on_batch: Callable[[Report], None] | None = None) -> Report:
        """Until the source is exhausted (None from poll) or `stop`; `on_batch(report)` after each batch."""
        stop = stop or threading.Event()
        retrying = _Retrying(self.config, stop)
        self.source.setup()
        # the input is looked at first (a file without the columns it needs is said before any broker is
        # reached); then a broker that refuses us (TLS, SASL) fails now, in its own words, not as undelivered records
        check_connection(self.bootstrap)
        self.sink.setup()
        try:
            while not stop.is_set():
                batch = self.source.poll(self.config.batch_size)
                if batch is None:
                    break
                if not batch:
                    continue
                messages = [self._message(item) for item in batch]

                def send():
                    for message in messages:
                        self.sink.add(message)
                    self.sink.flush()

                try:
                    error = retrying.attempt(send)
                except _Stopping:
                    break
                if error is not None:
                    raise ConnectorFailed(f"connector {self.config.name}: broker did not acknowledge: {error}")
                self.source.commit()
                reasons = Counter(dict(m.headers)[ERROR_REASON].decode() for m in messages
                                  if m.topic == self.config.dlq_topic)
                rejected = sum(reasons.values())
                self._count["delivered"].inc(len(messages) - rejected)
                self._count["rejected"].inc(rejected)
                self.report.delivered += len(messages) - rejected
                self.report.rejected += rejected
                self.report.rejected_reasons.update(reasons)
                if on_batch is not None:
                    on_batch(self.report)
        finally:
            self.source.close()
        return self.report


def build(config: ConnectorConfig, pipeline: PipelineConfig, bootstrap: str | KafkaConnection, session_timeout_ms: int = 6000):
    if config.target:
        return SinkConnector(config, pipeline, bootstrap, session_timeout_ms=session_timeout_ms)
    return SourceConnector(config, pipeline, bootstrap)


def run_all(pipeline: PipelineConfig, bootstrap: str | KafkaConnection, names: list[str] | None = None,
            stop: threading.Event | None = None, session_timeout_ms: int = 6000) -> dict[str, Exception | None]:
    """Every configured connector (or those named) in a thread each, until `stop`;
    a connector that fails stops alone. Returns each one's error (None: stopped cleanly)."""
    stop = stop or threading.Event()
    chosen = [c for c in pipeline.connectors if not names or c.name in names]
    outcome: dict[str, Exception | None] = {}
    connectors = []
    for config in chosen:
        try:
            connectors.append((config, build(config, pipeline, bootstrap, session_timeout_ms)))
        except ConnectorError:
            raise
        except (TypeError, ValueError) as exc:  # options the connector does not take, or bad values
            raise ConnectorError(f"connector {config.name} ({config.url}): {exc}") from None

    def run(config, connector):
        try:
            connector.run(stop)
            outcome[config.name] = None
        except Exception as exc:
            log.error("connector %s stopped: %s", config.name, exc)
            outcome[config.name] = exc

    threads = [threading.Thread(target=run, args=pair, name=f"connector-{pair[0].name}", daemon=True)
               for pair in connectors]
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join(30)
    return outcome
