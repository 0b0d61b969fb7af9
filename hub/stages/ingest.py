"""Ingest stage: raw source bytes to canonical records, or to the source's DLQ.

Decode and validate (hub.validation), standardise and score (hub.standardise),
and wrap the result as a hub.CanonicalCustomer keyed <source>:<source_id>
(its personal fields sealed with a topic keyring: hub.topic_seal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hub import metrics
from hub.config import PipelineConfig
from hub.crypto import Keyring
from hub.quality_tally import tally
from hub.records import InMessage, OutMessage, StageError, member_key
from hub.schemas import CANONICAL
from hub.stages import StageOutput
from hub.standardise import standardise_and_score
from hub.topic_seal import TopicValues
from hub.validation import validate_raw

STAGE = "ingest"
_FRESHNESS_HALF_LIFE_MS = 365 * 86_400_000


def freshness(event_time_ms: int, now_ms: int) -> float:
    """How current an event's data is: 1 when just changed, halving every year
    (customer data decays: people move, change e-mail and phone)."""
    return 0.5 ** (max(0, now_ms - event_time_ms) / _FRESHNESS_HALF_LIFE_MS)


@dataclass(slots=True)
class _SourceCount:
    """A pass's count of one source's events and the quality of those kept, observed once per pass."""

    events: int = 0
    completeness: list[float] = field(default_factory=list)
    validity: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    freshness: list[float] = field(default_factory=list)


class IngestStage:
    hand_on_only = False  # canonical records only handed on to the match step (hub.engine), not written
    def __init__(self, config: PipelineConfig, quality_tally=None, topic_keyring: Keyring | None = None):
        """`topic_keyring`: seals the personal fields of the canonical records written (hub.topic_seal,
        HUB_SEAL_TOPICS); None writes them in clear."""
        self.config = config
        self.quality_tally = quality_tally  # counters for the data-quality report (hub.quality_tally), optional
        self.by_topic = {s.raw_topic: s for s in config.sources}
        self.out_topic = config.topics.canonical
        self.values = TopicValues(CANONICAL, config.topics.canonical, topic_keyring)
        self._counters = {}
        self._avro_decoders = {}
        for source in config.sources:
            self._avro_decode(source)  # a missing schemaregistry extra stops the worker at start, not per record

    def _avro_decode(self, source):
        """The Schema Registry's decoder when the source names one (else the local ids)."""
        if not source.schema_registry_url:
            return None
        decode = self._avro_decoders.get(source.name)
        if decode is None:
            from hub.connectors.serdes import registry_avro

            avro, topic = registry_avro(source.schema_registry_url), source.raw_topic
            decode = self._avro_decoders[source.name] = lambda payload: avro.decode(topic, payload)
        return decode

    def _count(self, source: str):
        counters = self._counters.get(source)
        if counters is None:
            counters = self._counters[source] = (
                metrics.EVENTS_IN.labels(source), metrics.EVENTS_VALID.labels(source),
                metrics.QUALITY.labels(source, "completeness"), metrics.QUALITY.labels(source, "validity"),
                metrics.QUALITY.labels(source, "score"), metrics.QUALITY.labels(source, "freshness"))
        return counters

    def process(self, batch: list[InMessage], now_ms: int | None = None) -> StageOutput:
        now_ms = now_ms or int(time.time() * 1000)
        out: list[OutMessage] = []
        kept: list[tuple[dict, dict]] = []
        rejected: list[tuple[str, str]] = []
        counted: dict[str, _SourceCount] = {}
        for message in batch:
            source = self.by_topic[message.topic]
            count = counted.get(source.name)
            if count is None:
                count = counted[source.name] = _SourceCount()
            count.events += 1
            result = validate_raw(message.value, source.name, self.config.quality, now_ms,
                                  self._avro_decode(source))
            if isinstance(result, StageError):
                metrics.DLQ.labels(source.name, result.stage, result.reason).inc()
                out.append(result.dead_letter(message, source.dlq_topic))
                rejected.append((source.name, result.reason))
                continue
            record, quality = standardise_and_score(result, default_region=source.default_region)
            kept.append((record, quality))
            count.completeness.append(quality["completeness"])
            count.validity.append(quality["validity"])
            count.score.append(quality["score"])
            count.freshness.append(freshness(record["event_time"], now_ms))
            canonical = {
                "record": record, "quality": quality, "ingested_at": now_ms,
                "origin": {"topic": message.topic, "partition": message.partition, "offset": message.offset,
                           "produced_at": message.timestamp_ms},
            }
            key = member_key(record["source"], record["source_id"]).encode()
            if self.hand_on_only:  # to the match step of the same pass (hub.engine): as it would decode it
                out.append(OutMessage(self.out_topic, key, None, record=canonical))
            else:
                out.append(OutMessage(self.out_topic, key, self.values.encode(canonical, key)))
        for source_name, count in counted.items():
            events_in, events_valid, *histograms = self._count(source_name)
            events_in.inc(count.events)
            if count.completeness:
                events_valid.inc(len(count.completeness))
            for histogram, values in zip(histograms, (count.completeness, count.validity, count.score,
                                                      count.freshness)):
                metrics.observe_all(histogram, values)
        self._tally(kept, rejected, now_ms)
        return StageOutput(out)

    def _tally(self, kept: list, rejected: list, now_ms: int) -> None:
        """One write per batch. Statistics must not hold up customer data: a
        failed write is counted (hub_redis_errors_total) and the batch goes on."""
        if self.quality_tally is None:
            return
        try:
            self.quality_tally.add(tally(kept, rejected, now_ms))
        except Exception:
            metrics.REDIS_ERRORS.labels("quality_tally").inc()
