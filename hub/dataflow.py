"""The pipeline's stages, declared once: what each reads, how it is built over
the ports, where a record that fails in it goes, and where it stands in a
replay. The worker (hub.app) makes one Faust agent per entry (or, for the
stage reading the source topics, a consumer of its own: `group`), `hub replay`
(hub.replay) drives the same entries in their declared order, and the tools
that follow the workers' progress (hub.follow) read the same topics. A new
stage is one entry here plus its module under hub/stages.

Order matters: a replay runs a batch through the stages in this order, each
once with everything addressed to it (the batch's records of the topics it
reads, what the stages before it wrote for it), so the master gets a batch's
consent and survey recomputes with its links, as the fused engine's pass
hands them on.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Callable

from hub.config import DEFAULT_ENGINE, PipelineConfig
from hub.crypto import Keyring
from hub.engine import Chain, Step
from hub.quality_tally import RedisTallyStore
from hub.records import InMessage
from hub.runner import StageRunner
from hub.stages.consent import ConsentStage
from hub.stages.erasure import ErasureStage
from hub.stages.ingest import IngestStage
from hub.stages.master import MasterStage
from hub.stages.match import MatchStage
from hub.stages.steward import StewardStage
from hub.stages.survey import SurveyStage
from hub.stages.syndicate import SyndicateStage


@dataclass(frozen=True)
class Stage:
    name: str
    doc: str
    reads: Callable[[PipelineConfig], tuple[str, ...]]
    # (pipeline, store, secret, topic keyring) -> the stage; the store serves every port (hub.ports); the
    # topic keyring seals what the stage writes to the internal topics (hub.topic_seal; None: in clear)
    build: Callable[[PipelineConfig, object, bytes, Keyring | None], object]
    is_async: bool = True
    # reads topics from outside the hub (sources, consent, ...): where a replay starts
    entry: bool = False
    # replay: batched alone, after everything read before it (an erasure, a steward's action must
    # follow what preceded it; consent statements and survey answers keep the latest per slot whatever
    # the order, so they share a batch with source events)
    ordered: bool = False
    # read by a consumer of the stage's own (hub.connectors.kafka_consumer) in the group `<app_id>.<group>`,
    # not by a Faust agent in the workers' group: the source topics, which carry nearly every event
    group: str | None = None


def _ingest(pipeline, store, secret, topic_keyring):
    tallies = getattr(store, "quality_tallies", None)  # a store in memory keeps its own (hub.store.memory_store)
    return IngestStage(pipeline, tallies if tallies is not None else RedisTallyStore(store.client), topic_keyring)


def _match(pipeline, store, secret, topic_keyring):
    # opens with the store's keyring even when sealing is off: values sealed before stay readable
    return MatchStage(pipeline, store, secret, topic_keyring=topic_keyring or getattr(store, "keyring", None))


def _master(pipeline, store, secret, topic_keyring):
    return MasterStage(pipeline, store, store, store, secret, store, topic_keyring)


def _syndicate(pipeline, store, secret, topic_keyring):
    # opens with the store's keyring even when sealing is off: values sealed before stay readable
    return SyndicateStage(pipeline, store, topic_keyring or getattr(store, "keyring", None), goldens=store)


def _consent(pipeline, store, secret, topic_keyring):
    return ConsentStage(pipeline, store, store)


def _survey(pipeline, store, secret, topic_keyring):
    return SurveyStage(pipeline, store, store)


def _erasure(pipeline, store, secret, topic_keyring):
    return ErasureStage(pipeline, store, store, store)


def _steward(pipeline, store, secret, topic_keyring):
    return StewardStage(pipeline, store)


# the group of the stage reading the source topics, in either engine: a worker switching engines carries on
# where the other left them
SOURCES = "sources"

STAGES: tuple[Stage, ...] = (
    # consent and survey first: a replay batch's recomputes reach the master with its links, in one master
    # batch, as the fused engine's pass hands them on (hub.engine)
    Stage("consent", "consent statements -> the consent store, and a recompute of the golden record",
          lambda p: (p.topics.consent,), _consent, entry=True),
    Stage("survey", "survey answers -> the survey store, and a recompute of the golden record",
          lambda p: (p.topics.survey,), _survey, entry=True),
    Stage("ingest", "raw source events -> canonical records, or the source's dead-letter topic",
          lambda p: tuple(s.raw_topic for s in p.sources), _ingest, is_async=False, entry=True, group=SOURCES),
    Stage("match", "canonical records -> golden ids through the identity index (customer.linked)",
          lambda p: (p.topics.canonical,), _match),
    Stage("master", "linked records -> golden records (survivorship, consent, lineage, history)",
          lambda p: (p.topics.linked,), _master),
    Stage("syndicate", "golden records -> each target's slice on its own topic",
          lambda p: (p.topics.golden,), _syndicate),
    Stage("erasure", "erasure requests -> every trace of the customer removed, tombstones to the targets",
          lambda p: (p.topics.erasure,), _erasure, entry=True, ordered=True),
    Stage("steward", "a steward's split and link -> the identity index, and a recompute",
          lambda p: (p.topics.steward,), _steward, entry=True, ordered=True),
)


@dataclass(frozen=True)
class Schedule:
    """Time-driven work of the schedule stage (hub.stages.schedule): run every `interval(pipeline)` seconds
    by each worker, its outputs delivered like any stage's."""
    name: str  # the ScheduleStage method; the timer is <name>_timer in hub_stage_retries_total
    doc: str
    interval: Callable[[PipelineConfig], float]


SCHEDULES: tuple[Schedule, ...] = (
    Schedule("consent", "consent that expires (or starts) takes effect with no new event", lambda p: 1.0),
    Schedule("decay", "a value about to go stale is recomputed when that time comes (cause data_decay)",
             lambda p: p.survivorship.decay_check_interval_s),
    Schedule("retention", "customers no source confirmed for the retention period: flagged or erased",
             lambda p: p.retention.check_interval_s),
)


def schedule_runner(pipeline: PipelineConfig, store, sink, secret: bytes, topic_keyring: Keyring | None,
                    engine: str) -> StageRunner | None:
    """The fused engine masters what the schedules ask (recompute, erase) in the timer's own pass, under
    leases of its own; the staged engine sends it round customer.linked (None)."""
    if engine != "fused":
        return None
    return StageRunner("schedule", _mastered(None)(pipeline, store, secret, topic_keyring), sink,
                       dead_letter_topics(pipeline), is_async=True)


def stage(name: str) -> Stage:
    """A stage of the staged engine, by name."""
    return next(s for s in STAGES if s.name == name)


# A master pass holds a golden record's lease until its outputs are delivered; one that dies holding it
# keeps others off that record for this long at most.
LEASE_TTL_MS = 30_000


_WORKER_OWNER: dict[int, str] = {}


def _lease_owner() -> str:
    """One per worker process: its passes (the hot path, consent, survey, schedule) share its leases in Redis
    and take turns on a golden record in the process (hub.stages.master.GoldenClaims), where a pass waits for
    the one holding the record instead of being refused and sleeping."""
    return _WORKER_OWNER.setdefault(os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")


def _leased_master(pipeline, store, secret, topic_keyring):
    return MasterStage(pipeline, store, store, store, secret, store, topic_keyring,
                       leases=store, lease_owner=_lease_owner(), lease_ttl_ms=LEASE_TTL_MS)


def _writes_together(store):
    """The store's scope in which writes nobody reads the replies of go out with the next round trip
    (hub.store.redis.base.RedisBase.writes_together); a store without one (in memory) writes at once."""
    return getattr(store, "writes_together", None)


def _reading_ahead(chain: Chain) -> Chain:
    """The master step reads what the syndicate step after it will read (SyndicateStage.read_ahead) with its
    save, so the pass makes one round trip fewer."""
    stages = [step.stage for step in chain.steps]
    for master, syndicate in zip(stages, stages[1:]):
        if isinstance(master, MasterStage) and isinstance(syndicate, SyndicateStage):
            master.read_ahead = syndicate.read_ahead
    return chain


def _hot_path(pipeline, store, secret, topic_keyring):
    """Consent statements and survey answers come with the source events (their own steps, first), and what
    they ask of the master joins the match step's links in one master step."""
    topics = pipeline.topics
    chain = Chain([Step("consent", _consent(pipeline, store, secret, topic_keyring), True, topics.linked,
                        reads=(topics.consent,)),
                   Step("survey", _survey(pipeline, store, secret, topic_keyring), True, topics.linked,
                        reads=(topics.survey,)),
                   Step("ingest", _ingest(pipeline, store, secret, topic_keyring), False, topics.canonical,
                        reads=tuple(s.raw_topic for s in pipeline.sources)),
                   Step("match", _match(pipeline, store, secret, topic_keyring), True, topics.linked,
                        reads=(topics.canonical,)),
                   Step("master", _leased_master(pipeline, store, secret, topic_keyring), True,
                        topics.golden, keeps=True, reads=(topics.linked,)),
                   Step("syndicate", _syndicate(pipeline, store, secret, topic_keyring), reads=(topics.golden,))],
                  together=_writes_together(store))
    return _reading_ahead(chain)


def _mastered(first: Stage | None):
    """`first`'s stage (none: the linked records read), then master and syndicate, in one pass: what `first`
    asks of the master (a recompute, an erasure, a steward's split) handed on, not sent round customer.linked."""
    def build(pipeline, store, secret, topic_keyring):
        steps = [Step(first.name, first.build(pipeline, store, secret, topic_keyring), first.is_async,
                      pipeline.topics.linked)] if first is not None else []
        chain = Chain([*steps,
                       Step("master", _leased_master(pipeline, store, secret, topic_keyring), True,
                            pipeline.topics.golden, keeps=True),
                       Step("syndicate", _syndicate(pipeline, store, secret, topic_keyring))],
                      runner=first.name if first is not None else None, together=_writes_together(store))
        return _reading_ahead(chain)
    return build


def _fused(name: str) -> Stage:
    staged = stage(name)
    return Stage(name, f"{staged.doc}, mastered in the same pass", staged.reads, _mastered(staged),
                 entry=True, ordered=staged.ordered)


# The fused engine (hub.engine, HUB_ENGINE=fused): source events, consent statements and survey answers through
# consent, survey, ingest, match, master and syndicate in one pass; erasure and steward each through their stage,
# master and syndicate in one (the timers too: schedule_runner); customer.linked read only for what a staged
# worker left there.
FUSED: tuple[Stage, ...] = (
    Stage("hot", "raw source events, consent statements and survey answers -> golden records and each target's "
          "slice, in one pass (hub.engine)",
          lambda p: (*(s.raw_topic for s in p.sources), p.topics.consent, p.topics.survey), _hot_path, entry=True,
          group=SOURCES),
    *(_fused(name) for name in ("erasure", "steward")),
    Stage("recompute", "what a staged worker left on customer.linked -> golden records and target slices, "
          "in one pass", lambda p: (p.topics.linked,), _mastered(None)),
)


def stages(engine: str = DEFAULT_ENGINE) -> tuple[Stage, ...]:
    """The stages a worker runs with this engine (Settings.engine: staged or fused)."""
    return FUSED if engine == "fused" else STAGES


def entry_stages(pipeline: PipelineConfig, engine: str = DEFAULT_ENGINE) -> dict[str, str]:
    """Topic -> the stage that reads it, for the topics from outside the hub."""
    return {topic: s.name for s in stages(engine) if s.entry for topic in s.reads(pipeline)}


def internal_stages(pipeline: PipelineConfig, engine: str = DEFAULT_ENGINE) -> dict[str, str]:
    """Topic -> the stage that reads it, for the topics the hub writes to itself."""
    return {topic: s.name for s in stages(engine) if not s.entry for topic in s.reads(pipeline)}


def input_topics(pipeline: PipelineConfig, engine: str = DEFAULT_ENGINE) -> list[str]:
    """Every topic the workers' consumer group reads: the entry stages' first."""
    return [*entry_stages(pipeline, engine), *internal_stages(pipeline, engine)]


def worker_groups(app_id: str) -> list[str]:
    """Every consumer group the workers of `app_id` commit in (either engine): Faust's, then the stages'
    own (Stage.group)."""
    from hub.connectors.kafka_consumer import group_id

    own = sorted({s.group for s in (*STAGES, *FUSED) if s.group is not None})
    return [app_id, *(group_id(app_id, g) for g in own)]


def groups_of(pipeline: PipelineConfig, app_id: str, topic: str) -> list[str]:
    """The consumer groups in which workers of either engine commit what they read of `topic`: Faust's
    (`app_id`) where an agent reads it, a stage's own (Stage.group) where its consumer does."""
    from hub.connectors.kafka_consumer import group_id

    found = {group_id(app_id, s.group) if s.group is not None else app_id
             for s in (*STAGES, *FUSED) if topic in s.reads(pipeline)}
    return sorted(found) or [app_id]


def dead_letter_topics(pipeline: PipelineConfig) -> Callable[[InMessage], str]:
    """Where a record that failed in a stage goes: the dead-letter topic of the input it came from."""
    topics = pipeline.topics
    by_raw_topic = {s.raw_topic: s for s in pipeline.sources}
    own = {topics.consent: topics.consent_dlq, topics.erasure: topics.erasure_dlq,
           topics.steward: topics.steward_dlq, topics.survey: topics.survey_dlq}

    def source_dlq(message: InMessage) -> str:
        source = by_raw_topic.get(message.topic)
        if source is not None:
            return source.dlq_topic
        return own.get(message.topic, topics.internal_dlq)
    return source_dlq


def stage_runners(pipeline: PipelineConfig, store, sink, secret: bytes,
                  topic_keyring: Keyring | None = None, engine: str = DEFAULT_ENGINE) -> dict[str, StageRunner]:
    """Every stage of the engine, each behind the runner that delivers its outputs (the workers' agents and
    `hub replay`); `topic_keyring` seals the personal fields of what they write to the internal topics
    (None: in clear)."""
    dead_letters = dead_letter_topics(pipeline)
    return {s.name: StageRunner(s.name, s.build(pipeline, store, secret, topic_keyring), sink, dead_letters,
                                is_async=s.is_async)
            for s in stages(engine)}
