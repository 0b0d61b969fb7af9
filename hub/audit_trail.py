"""Configuration, match parameters and reads in the audit trail: the events
hub.config_audit describes, written to the audit topic.

- `register(hub)` / `record_config`: as a worker starts. When the pipeline's
  fingerprint differs from the last one recorded (Redis hash
  `hub:config:{<app id>}`: fingerprint, normalised summary, time), one
  `config_changed` event (what changed, tokens by digest) goes to the audit
  topic under key `config:<app id>`, and once the broker acknowledged it the
  new fingerprint is remembered. Workers starting together may each write
  it: the event's id is the same (old and new fingerprint), and readers
  count it once. The first start records the whole configuration.
- `record_parameters`: `hub estimate` storing new m/u and thresholds writes
  one `parameters_changed` event with the values before and after.
- `AccessAudit`: an access event (hub.AccessEvent, on audit.access beside the
  workbench's) per lookup of a target configured with `audit_reads: true`:
  actor `<target>:<token digest, shortened>`, role `target`, action
  `lookup`, the kind of lookup (e-mail, phone...) and the answer's status,
  the golden id found; never the identifier looked up. Best effort: the read
  is answered before the event is acknowledged; one the broker refused is
  counted in hub_audit_undelivered_total.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import orjson

from hub import config_audit, metrics
from hub.config import PipelineConfig, Settings
from hub.connectors.kafka import KafkaSink
from hub.records import OutMessage
from hub.schemas import ACCESS_EVENT, AUDIT, codec
from hub.topic_seal import TopicValues

log = logging.getLogger(__name__)


def config_key(app_id: str) -> bytes:
    """The audit topic key of configuration events (`hub history --config` reads it)."""
    return f"{config_audit.CONFIG_KEY_PREFIX}{app_id}".encode()


def redis_key(app_id: str) -> str:
    return f"hub:config:{{{app_id}}}"


def record_config(settings: Settings, pipeline: PipelineConfig, kafka, client,
                  now_ms: int | None = None) -> dict | None:
    """The config_changed event written (`kafka`: the hub's KafkaConnection; `client`: a redis-py client),
    or None when the pipeline is the one recorded last."""
    new = config_audit.summary(pipeline)
    new_fingerprint = config_audit.fingerprint(new)
    stored = {k.decode() if isinstance(k, bytes) else k: v
              for k, v in client.hgetall(redis_key(settings.app_id)).items()}
    old_fingerprint = _text(stored.get("fingerprint"))
    if old_fingerprint == new_fingerprint:
        log.info("pipeline configuration %s: as recorded in the audit trail", new_fingerprint)
        return None
    old = orjson.loads(stored["summary"]) if "summary" in stored else None
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    event = config_audit.config_event(settings.app_id, new, old, old_fingerprint, now_ms)
    sink = KafkaSink(kafka)  # its own producer: the stages' sink flushes their batches
    sink.setup()
    sink.add(OutMessage(pipeline.topics.audit, config_key(settings.app_id), _audit_value(settings, pipeline, event)))
    # acknowledged before it is remembered: a crash in between writes it again, with the same id
    sink.flush(30.0)
    client.hset(redis_key(settings.app_id), mapping={"fingerprint": new_fingerprint,
                                                           "summary": orjson.dumps(new), "at": now_ms})
    log.info("pipeline configuration %s recorded in the audit trail: %s", new_fingerprint, event["cause"][:300])
    return event


def _audit_value(settings: Settings, pipeline: PipelineConfig, event: dict) -> bytes:
    """The event on the audit topic, its `changes` sealed as the workers seal theirs (HUB_SEAL_TOPICS)."""
    keyring = settings.keyring() if settings.seal_topics else None
    return TopicValues(AUDIT, pipeline.topics.audit, keyring).encode(event, config_key(settings.app_id))


def _text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def register(hub) -> None:
    """The worker start-up hook: record the pipeline configuration once the worker runs, retrying
    (Kafka or Redis briefly away) until it is recorded."""
    @hub.app.task
    async def record_configuration() -> None:
        delay = 1.0
        while True:
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, record_config, hub.settings, hub.pipeline, hub.sink.kafka, hub.store.client)
                return
            except Exception as exc:
                log.error("pipeline configuration not recorded in the audit trail yet (%s: %s); retry in %.0f s",
                          type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)


def record_parameters(settings: Settings, pipeline: PipelineConfig, sink: KafkaSink, old: dict, new: dict,
                      records: int) -> dict:
    """`hub estimate`: the parameters_changed event, acknowledged (old/new from config_audit.parameters_summary)."""
    event = config_audit.parameters_event(settings.app_id, old, new, records, int(time.time() * 1000))
    sink.add(OutMessage(pipeline.topics.audit, config_key(settings.app_id), _audit_value(settings, pipeline, event)))
    sink.flush(30)
    return event


class _BestEffortSink(KafkaSink):
    """Reads are answered without waiting: a failed delivery is counted, never kept in memory."""

    def _on_delivery(self, err, _msg) -> None:
        if err is not None:
            metrics.AUDIT_UNDELIVERED.inc()
            log.error("an access audit event was not delivered: %s", err)


class AccessAudit:
    """Access events for the lookup API, for the targets that ask for them."""

    def __init__(self, pipeline: PipelineConfig, kafka, app_id: str):
        self.topic = pipeline.topics.access_audit
        self.audited = {t.name for t in pipeline.targets if t.audit_reads}
        self.app_id = app_id
        self.sink = _BestEffortSink(kafka, linger_ms=20)
        self.sink.setup()
        self._codec = codec(ACCESS_EVENT)

    @classmethod
    def wanted(cls, pipeline: PipelineConfig) -> bool:
        return any(t.audit_reads for t in pipeline.targets)

    def record(self, target: str, token: str, kind: str, status: int, golden_ids: list[str]) -> None:
        if target not in self.audited:
            return
        golden_id = golden_ids[0] if len(golden_ids) == 1 else None
        actor = f"{target}:{token}"
        event = {"audit_id": f"L{uuid.uuid4().hex}", "at": int(time.time() * 1000), "actor": actor,
                 "role": "target", "action": "lookup", "golden_id": golden_id, "subject": None,
                 "detail": f"by {kind}: {status}" + (f" ({len(golden_ids)} customers)" if len(golden_ids) > 1 else "")}
        self.sink.add(OutMessage(self.topic, (golden_id or actor).encode(), self._codec.encode(event)))
        self.sink.poll()

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self.sink.flush(timeout_s)
        except Exception as exc:  # counted per event already
            log.error("access audit events left undelivered at shutdown: %s", exc)
