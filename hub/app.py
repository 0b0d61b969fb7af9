"""The worker: a Faust app wiring stages, ports and web views together.

Faust runs what it is good at (consumer group, agents, timers, web server);
each agent takes batches of raw bytes and hands them to a StageRunner, which
writes outputs with librdkafka and returns only once they are acknowledged,
before Faust may commit the batch's offsets. The stage reading the source
topics, which carry nearly every event, takes its batches with a librdkafka
consumer of its own instead (hub.connectors.kafka_consumer, Stage.group),
under the same contract: commit only after delivery.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import faust
import redis
from faust.transport.drivers import aiokafka as faust_aiokafka
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub import __version__, access, audit_trail, ingest_api, limits, lookup_api, metrics
from hub.config import ConfigError, PipelineConfig, Settings
from hub.connectors import kafka_security
from hub.connectors.kafka import KafkaSink
from hub.connectors.kafka_consumer import BatchConsumer, group_id
from hub.dataflow import SCHEDULES, Stage, schedule_runner, stage_runners, stages
from hub.engine import stages_of
from hub.matching.comparisons import from_json, with_estimates
from hub.records import InMessage
from hub.runner import StageRunner, deliver, drive, retrying_longest, survives_outages
from hub.stages.match import MatchStage
from hub.stages.schedule import ScheduleStage
from hub.store.redis import RedisStore

log = logging.getLogger(__name__)

_FETCH_WAIT_MS = {"value": 10}
_original_create_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer


def _create_worker_consumer(self, transport):
    # Faust hard-codes fetch_max_wait_ms=1500 and Tansu answers a waiting fetch
    # only when that wait expires: every hop would add up to 1.5 s of latency.
    consumer = _original_create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = _FETCH_WAIT_MS["value"]
    return consumer


faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer


def to_in_message(event) -> InMessage:
    message = event.message
    headers = message.headers
    if isinstance(headers, dict):
        headers = list(headers.items())
    return InMessage(message.topic, message.partition, message.offset, message.key, message.value,
                     int(message.timestamp * 1000) if message.timestamp else None, headers or None)


def agent_fetch_wait_ms(settings: Settings) -> int:
    """The fetch wait of the worker's Faust agents. They carry every hop of the staged engine, but in the fused
    engine only erasure, steward and recompute, whose few events can wait a tenth of a second more: an idle
    consumer at 10 ms costs the embedded broker an empty fetch every 10 ms (docs/performance.md, "Quiet topics")."""
    return settings.kafka.fetch_wait_ms if settings.engine == "staged" else settings.kafka.quiet_fetch_wait_ms


@dataclass
class Hub:
    settings: Settings
    pipeline: PipelineConfig
    app: faust.App
    store: RedisStore
    sink: KafkaSink
    runners: dict[str, StageRunner]
    consumers: dict[str, BatchConsumer] = field(default_factory=dict)  # stage -> its own consumer (Stage.group)


def create_hub(settings: Settings, pipeline: PipelineConfig, bootstrap_servers: str, redis_url: str) -> Hub:
    _FETCH_WAIT_MS["value"] = agent_fetch_wait_ms(settings)
    kafka = kafka_security.connection(settings.kafka, bootstrap_servers)  # TLS/SASL for every client below
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap_servers}",
        store="memory://",
        datadir=str(settings.state_dir / "faust"),
        autodiscover=False,
        web_enabled=True,
        web_host=settings.web.host,
        web_port=settings.web.port,
        web_bind=settings.web.host,
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=min(1.0, settings.kafka.session_timeout_s / 3),
        broker_request_timeout=max(30.0, settings.kafka.session_timeout_s * 2),
        consumer_auto_offset_reset="earliest",
        topic_partitions=pipeline.partitions,
        topic_disable_leader=True,
        topic_allow_declare=True,
        broker_commit_every=1000,
        broker_commit_interval=0.5,
        producer_linger=settings.kafka.linger_ms / 1000,
        stream_buffer_maxsize=settings.batch_size * 4,
        broker_max_poll_records=settings.batch_size,
        consumer_max_fetch_size=settings.kafka.max_fetch_bytes_per_partition,
        stream_wait_empty=False,
        **kafka_security.faust_app_kwargs(settings.kafka),
    )
    if settings.debug.memory_report is not None:
        from hub.testing import memdebug

        memdebug.install(app, settings.debug.memory_report, settings.debug.memory_report_interval_s,
                         settings.debug.tracemalloc_frames)
    store = RedisStore.from_url(redis_url, settings.keyring())
    _claim_engine(store, settings)
    sink = KafkaSink(kafka, linger_ms=settings.kafka.linger_ms, max_message_bytes=settings.kafka.max_message_bytes)
    sink.setup()
    secret = settings.pii_secret()
    # the personal fields of customer.canonical (and so customer.linked), customer.golden and audit values
    # sealed with Redis's keyring (HUB_SEAL_TOPICS)
    runners = stage_runners(pipeline, store, sink, secret, store.keyring if settings.seal_topics else None,
                            settings.engine)
    hub = Hub(settings, pipeline, app, store, sink, runners)
    audit_trail.register(hub)  # a worker starting with a changed pipeline writes one config_changed event

    for stage in stages(settings.engine):
        if stage.group is not None:
            _register_consumer(hub, stage, kafka)
        else:
            _register_agent(hub, stage)
    _register_timers(hub)
    _register_lag_timer(hub)
    _register_views(hub)
    lookup_api.register(hub)
    limits.harden(app.web.web_app, settings.web)
    metrics.BUILD_INFO.info({"version": __version__})
    return hub


# a worker renews its group's engine every ENGINE_RENEW_S; the claim outlives it by ENGINE_TTL_S
ENGINE_RENEW_S, ENGINE_TTL_S = 10.0, 30


def _claim_engine(store: RedisStore, settings: Settings) -> None:
    """One consumer group, one engine (hub.store.redis.leases): ConfigError, naming HUB_ENGINE, when the
    group's running workers run the other one."""
    try:
        other = store.claim_engine(settings.app_id, settings.engine, ENGINE_TTL_S)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        # Redis not up yet: the worker starts and waits for it as for any outage; the timer claims later
        log.warning("Redis unreachable at start: the group's engine is claimed once it is back")
        return
    if other is not None:
        raise ConfigError(f"HUB_ENGINE={settings.engine}: the running workers of {settings.app_id} run the "
                          f"{other} engine; stop them first (their claim lapses {ENGINE_TTL_S} s after the last "
                          f"stops), or start this one with HUB_ENGINE={other}")


def apply_match_parameters(stage: MatchStage, pipeline: PipelineConfig, stored: dict) -> None:
    """m/u (and the merge threshold, unless kept) estimated with `hub estimate`."""
    stage.comparisons = with_estimates(pipeline.match.comparison_rules(), from_json(stored["comparisons"]))
    upper = stored.get("upper_threshold")
    configured = pipeline.match
    stage.rules = configured if upper is None else configured.model_copy(update={
        "upper_threshold": upper, "lower_threshold": min(configured.lower_threshold, upper)})


def raw_topic(app: faust.App, *names: str):
    return app.topic(*names, key_serializer="raw", value_serializer="raw")


async def run_batches(hub: Hub, stage: str, stream) -> None:
    """The loop every agent runs: batches of events through one stage runner."""
    runner = hub.runners[stage]
    async for events in stream.take_events(hub.settings.batch_size, within=hub.settings.batch_wait_s):
        await runner.run([to_in_message(e) for e in events])


def _register_agent(hub: Hub, stage: Stage) -> None:
    """One Faust agent per declared stage (hub.dataflow), over the topics it reads."""
    async def agent(stream):
        await run_batches(hub, stage.name, stream)

    agent.__name__ = agent.__qualname__ = stage.name
    agent.__doc__ = stage.doc
    hub.app.agent(raw_topic(hub.app, *stage.reads(hub.pipeline)), name=stage.name)(agent)


def _register_consumer(hub: Hub, stage: Stage, kafka) -> None:
    """The stage's own consumer (hub.connectors.kafka_consumer) feeding its runner: take a batch (in a thread
    of its own, where librdkafka waits without holding the event loop), run it, commit it once delivered."""
    settings = hub.settings
    consumer = BatchConsumer(kafka, group_id(settings.app_id, stage.group), list(stage.reads(hub.pipeline)),
                             batch_size=settings.batch_size, batch_wait_s=settings.batch_wait_s,
                             fetch_wait_ms=settings.kafka.fetch_wait_ms,
                             max_fetch_bytes=settings.kafka.max_fetch_bytes_per_partition,
                             session_timeout_s=settings.kafka.session_timeout_s, seed_group=settings.app_id)
    hub.consumers[stage.name] = consumer
    runner = hub.runners[stage.name]

    async def consume() -> None:
        await drive(consumer, runner)

    consume.__name__ = consume.__qualname__ = stage.name
    consume.__doc__ = stage.doc
    hub.app.task(consume)


def _register_timers(hub: Hub) -> None:
    schedule = ScheduleStage(hub.pipeline, hub.store)
    mastering = schedule_runner(hub.pipeline, hub.store, hub.sink, hub.settings.pii_secret(),
                                hub.store.keyring if hub.settings.seal_topics else None, hub.settings.engine)
    for entry in SCHEDULES:
        _register_schedule(hub, schedule, entry, mastering)

    match_stage = next(s for s in stages_of(hub.runners) if isinstance(s, MatchStage))
    parameters = {"version": 0}

    @hub.app.timer(interval=10.0, on_leader=False)
    @survives_outages("parameters_timer")
    async def reload_match_parameters() -> None:
        """m and u re-estimated with `hub estimate` reach every worker without a restart."""
        version, stored = await hub.store.load_parameters(parameters["version"])
        if stored is not None:
            apply_match_parameters(match_stage, hub.pipeline, stored)
            parameters["version"] = version
            metrics.MATCH_PARAMETERS_VERSION.set(version)
            log.info("match parameters version %s loaded (estimated from %s records; merge at weight >= %s)",
                     version, stored["records"], match_stage.rules.upper_threshold)

    @hub.app.timer(interval=ENGINE_RENEW_S)
    @survives_outages("engine_timer")
    async def renew_engine_claim() -> None:
        """Keeps the group's engine noted while this worker runs (see _claim_engine)."""
        other = hub.store.claim_engine(hub.settings.app_id, hub.settings.engine, ENGINE_TTL_S)
        if other is not None:  # claimed by the other engine while this worker could not reach Redis
            log.error("HUB_ENGINE=%s: workers of %s run the %s engine too; run one engine per group",
                      hub.settings.engine, hub.settings.app_id, other)

    @hub.app.timer(interval=5.0)
    @survives_outages("gauges_timer")
    async def refresh_gauges() -> None:
        metrics.GOLDEN_RECORDS.set(await hub.store.golden_count())

    @hub.app.timer(interval=1.0)
    async def serve_producer_callbacks() -> None:
        """librdkafka reports broker errors through callbacks that only run inside poll(), which the
        stages call while they deliver: a worker with nothing to send must still count an outage
        (hub_broker_errors_total) as it happens, not at its next batch."""
        hub.sink.poll()


def _register_schedule(hub: Hub, schedule, entry, mastering: StageRunner | None) -> None:
    """One timer per declared schedule (hub.dataflow.SCHEDULES): the schedule stage's work for that kind,
    delivered; a Redis or broker outage skips the tick. With `mastering` (the fused engine), what it asks
    of the master is mastered in the same pass rather than sent round customer.linked."""
    work = getattr(schedule, entry.name)
    linked = hub.pipeline.topics.linked

    async def tick() -> None:
        output = await work(int(time.time() * 1000))
        if mastering is not None:
            asked = [m for m in output.messages if m.topic == linked]
            output.messages = [m for m in output.messages if m.topic != linked]
            await mastering.run([InMessage(m.topic, -1, -1, m.key, m.value) for m in asked])
        await deliver(hub.sink, output)

    tick.__name__ = tick.__qualname__ = f"{entry.name}_schedule"
    tick.__doc__ = entry.doc
    hub.app.timer(interval=entry.interval(hub.pipeline))(survives_outages(f"{entry.name}_timer")(tick))


def _register_lag_timer(hub: Hub) -> None:
    """hub_consumer_lag_records{topic}: for each partition this worker owns, the
    high watermark (as of the last fetch) minus the committed offset, summed
    per topic. Before a first commit, the consumer's fetch position stands in."""
    reported: set[str] = set()

    @hub.app.timer(interval=5.0)
    async def refresh_consumer_lag() -> None:
        consumer = hub.app.consumer
        try:
            assignment = consumer.assignment()
        except Exception:  # consumer not started yet
            return
        committed = getattr(consumer, "_committed_offset", {})  # Faust keeps no public view of it
        lag: dict[str, int] = {}
        for tp in assignment:
            try:
                highwater = consumer.highwater(tp)
                offset = committed.get(tp)
                if offset is None:
                    offset = await consumer.position(tp)
            except Exception:  # partition revoked meanwhile, or not fetched yet
                continue
            if highwater is None or offset is None:
                continue
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, highwater - offset)
        for own in hub.consumers.values():  # the stages' own consumers (Stage.group)
            for topic, records in own.lag().items():
                lag[topic] = lag.get(topic, 0) + records
        for topic, records in lag.items():
            metrics.CONSUMER_LAG.labels(topic).set(records)
        for topic in reported - set(lag):  # no longer assigned here: another worker reports it
            metrics.CONSUMER_LAG.remove(topic)
        reported.clear()
        reported.update(lag)


def _register_views(hub: Hub) -> None:
    app = hub.app
    ingest_api.register(hub)  # POST /sources/{source}/events; the target-scoped routes: lookup_api.register

    @app.page("/metrics")
    async def prometheus_metrics(self, request):
        return self.bytes(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health(self, request):
        try:
            await hub.store.ping()
        except Exception as exc:
            return self.json({"status": "degraded", "redis": type(exc).__name__}, status=503)
        stage, seconds = retrying_longest()
        if seconds > hub.settings.stall_after_s:
            return self.json({"status": "stalled", "stage": stage, "retrying_s": round(seconds, 1)}, status=503)
        return self.json({"status": "ok"})

    @app.page("/explain/{source}/{source_id}")
    async def explain_decision(self, request, source: str, source_id: str):
        """Why a source record belongs to its golden record (steward tokens only)."""
        if access.authorize_steward(hub.pipeline, access.bearer(request.headers.get("Authorization"))) != access.OK:
            return self.json({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
        golden_id, decision = await hub.store.decision(f"{source}:{source_id}")
        if golden_id is None:
            return self.json({"error": "not_found", "source": source, "source_id": source_id}, status=404)
        return self.json({"source": source, "source_id": source_id, "golden_id": golden_id, "decision": decision})
