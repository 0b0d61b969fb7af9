"""Replay: rebuild the hub's state from its input topics, in one process, in
one order that depends only on what the topics hold.

Live, the order in which workers meet the records of different partitions
depends on timing, and matching is order-dependent: a record joins the
golden record it meets first, a borderline record scored against an older or
newer version of another can land on either side of a threshold. So running
workers over the same topics twice can give different golden ids. A replay
reads every partition of the input topics (the sources' raw topics, consent,
erasure, steward actions, surveys) up to where each ends when it is reached,
merges them by (timestamp, topic, partition, offset), and cuts that stream
into batches of a fixed size; each batch goes through the stages in their
declared order (hub.dataflow), each stage once with everything addressed to
it so far (a batch's consent recomputes and its links mastered together, as
the fused engine's pass masters them), before the next batch. Every
output goes to its topic as a worker would write it. Same topics and batch
size, same bytes: the golden ids and each golden topic value per key are the
same replay after replay, whatever the fetch timing.

Stop the workers, point HUB_REDIS__URL at an empty Redis, run `hub replay`;
it then commits the workers' consumer groups (Faust's, and the source stage's
own: hub.dataflow.groups_of) at the end of every topic it read or wrote, so
started again they carry on from there.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from hub.config import DEFAULT_ENGINE, PipelineConfig
from hub.connectors.kafka import KafkaSink
from hub.crypto import Keyring
from hub.dataflow import entry_stages, groups_of, internal_stages, stage_runners, stages
from hub.engine import stages_of
from hub.records import InMessage, OutMessage
from hub.runner import StageRunner



class _TeeSink:
    """The runners' sink during a replay: every record goes to the broker, and
    those for a downstream stage are also kept for it, once delivered (a
    delivery that failed is retried by the runner, its records kept again)."""

    def __init__(self, sink: KafkaSink, internal: set[str]):
        self.sink = sink
        self.internal = internal
        self._staged: list[OutMessage] = []
        self.delivered: list[OutMessage] = []
        self.counts: Counter = Counter()  # records delivered, per topic

    def add(self, record: OutMessage) -> None:
        self.sink.add(record)
        self._staged.append(record)

    def pending(self) -> int:
        return self.sink.pending()

    def poll(self) -> None:
        self.sink.poll()

    def flush(self, timeout_s: float = 60.0) -> None:
        try:
            self.sink.flush(timeout_s)
        except Exception:
            self._staged = []
            raise
        for record in self._staged:
            self.counts[record.topic] += 1
            if record.topic in self.internal:
                self.delivered.append(record)
        self._staged = []

    def take(self) -> list[OutMessage]:
        taken, self.delivered = self.delivered, []
        return taken


@dataclass
class ReplayCounts:
    inputs: Counter
    outputs: Counter
    seconds: float


class Replay:
    """Drives the stages over one ordered stream of input records."""

    def __init__(self, pipeline: PipelineConfig, runners: dict[str, StageRunner], sink: KafkaSink,
                 batch_size: int = 500, engine: str = DEFAULT_ENGINE):
        """`runners`: hub.dataflow.stage_runners for the same `engine`."""
        declared = stages(engine)
        self.order = tuple(s.name for s in declared)  # a batch goes through the stages in this order
        self.ordered = frozenset(s.name for s in declared if s.ordered)
        self.entry = entry_stages(pipeline, engine)
        self.downstream = internal_stages(pipeline, engine)
        self.tee = _TeeSink(sink, set(self.downstream))
        self.runners = {name: StageRunner(name, runner.stage, self.tee, runner.dlq_topic, runner.is_async)
                        for name, runner in runners.items()}
        self.batch_size = batch_size
        self._offset = 0
        self.inputs: Counter = Counter()

    async def run(self, messages: Iterable[InMessage]) -> ReplayCounts:
        started = time.monotonic()
        pending: dict[str, list[InMessage]] = {}
        count, group = 0, None
        for message in messages:
            name = self.entry.get(message.topic)
            if name is None:
                continue
            # see hub.dataflow.Stage.ordered
            kind = name if name in self.ordered else "unordered"
            if count and (kind != group or count >= self.batch_size):
                await self._flush(pending)
                pending, count = {}, 0
            group = kind
            pending.setdefault(name, []).append(message)
            count += 1
            self.inputs[message.topic] += 1
        if count:
            await self._flush(pending)
        return ReplayCounts(self.inputs, self.tee.counts, time.monotonic() - started)

    async def _flush(self, pending: dict[str, list[InMessage]]) -> None:
        """The batch through the stages in their declared order, each run once with everything addressed to
        it so far; what a stage writes for one declared before it waits for the next sweep."""
        inbox = dict(pending)
        while inbox:
            for name in self.order:
                messages = inbox.pop(name, None)
                if not messages:
                    continue
                await self.runners[name].run(messages)
                now_ms = int(time.time() * 1000)
                for record in self.tee.take():
                    self._offset += 1
                    downstream = self.downstream[record.topic]
                    if downstream in self.order:
                        inbox.setdefault(downstream, []).append(
                            InMessage(record.topic, 0, self._offset, record.key, record.value, now_ms,
                                      record.headers))


class IndexNotEmpty(RuntimeError):
    """The Redis a replay was pointed at already holds golden records."""


async def replay(pipeline: PipelineConfig, bootstrap_servers: str, redis_url: str, secret: bytes, group: str,
                 batch_size: int = 500, linger_ms: int = 5, commit: bool = True,
                 force: bool = False, keyring: Keyring | None = None, seal_topics: bool = True,
                 engine: str = DEFAULT_ENGINE) -> ReplayCounts:
    """Every input topic through the stages into the Redis at `redis_url`;
    then, with `commit`, the workers' consumer groups (`group`, their app id, and the groups of the stages
    with a consumer of their own) are moved to the end of every topic the stages read. `keyring` seals
    personal data in Redis and, with `seal_topics`, on the internal topics, as the workers do (default:
    derived from `secret`, as with HUB_PII_KEY alone).
    `engine`: the workers' (HUB_ENGINE); either leaves their group where workers of either engine carry on."""
    from hub.app import apply_match_parameters
    from hub.stages.match import MatchStage
    from hub.connectors.kafka import MergedReader, commit_group, end_offsets, ensure_topics
    from hub.store.redis import RedisStore

    keyring = keyring or Keyring.from_settings(None, secret.decode())
    store = RedisStore.from_url(redis_url, keyring)
    if not force and await store.golden_count():
        raise IndexNotEmpty(f"{redis_url} already holds golden records: a replay rebuilds into an empty Redis")
    ensure_topics(bootstrap_servers, pipeline.all_topics(), pipeline.partitions)
    sink = KafkaSink(bootstrap_servers, linger_ms=linger_ms)
    sink.setup()
    runners = stage_runners(pipeline, store, sink, secret, keyring if seal_topics else None, engine)
    _, stored = await store.load_parameters(-1)
    if stored is not None:  # estimated with `hub estimate` and kept in this Redis: what the workers would use
        apply_match_parameters(next(s for s in stages_of(runners) if isinstance(s, MatchStage)), pipeline, stored)
    driver = Replay(pipeline, runners, sink, batch_size, engine)
    reader = MergedReader(bootstrap_servers, sorted(driver.entry))
    counts = await driver.run(reader)
    if commit:
        offsets = dict(reader.ends)
        offsets.update(end_offsets(bootstrap_servers, sorted(driver.downstream)))
        by_group: dict[str, dict] = {}
        for (topic, partition), offset in offsets.items():
            for name in groups_of(pipeline, group, topic):
                by_group.setdefault(name, {})[(topic, partition)] = offset
        for name, part in by_group.items():
            commit_group(bootstrap_servers, name, part)
    return counts
