"""The fused engine (HUB_ENGINE=fused): the stages run back to back on one
batch in one process, instead of each on its own Kafka hop.

The staged engine (HUB_ENGINE=staged) puts every stage behind a topic: raw ->
ingest -> customer.canonical -> match -> customer.linked -> master ->
customer.golden -> syndicate -> targets, each hop a produce, a fetch, a
decode. A `Chain` hands what one stage writes for the next straight to it,
as the decoded record (hub.records.OutMessage.record), not encoded, sealed,
opened and decoded again: a batch of raw source events comes out as golden
records, target slices, audit events and dead letters in one pass, delivered
together, and the input offsets are committed only after that delivery
(hub.runner). customer.canonical and customer.linked are not written;
customer.golden still is (users subscribe to it), and the syndicate step
reads the golden records from the same pass. Consent, survey, erasure,
steward and the timers hand what they ask of the master to it in their own
pass too (hub.dataflow.FUSED, hub.dataflow.schedule_runner).

What the linked topic's key gave the staged engine, one master per golden
record, golden-record leases give here (hub.store.redis.leases): the master
step takes the lease of every golden record it reads and gives it back once
the pass's outputs are delivered, so two workers (or two passes of one
worker) never interleave one record's versions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from hub import metrics
from hub.records import InMessage, OutMessage
from hub.stages import StageOutput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    name: str  # as the stage is named in the staged engine: the per-stage metrics keep their labels
    stage: object
    is_async: bool = True
    hands_on: str | None = None  # the topic whose messages feed the next step (None: the last step)
    keeps: bool = False  # those messages are also written to their topic (users read it)


class Chain:
    """Steps run back to back on one batch; `process(batch) -> StageOutput` as any stage."""

    def __init__(self, steps: list[Step], runner: str | None = None):
        """`runner`: the name of the runner driving the chain, which measures a step of that name itself."""
        self.steps = steps
        self.runner = runner
        for step in steps:
            # what a step writes only for the next one needs no encoding, no sealing (hub.records.OutMessage);
            # the stages that can skip it say so with a `hand_on_only` of their own (ingest, match)
            if hasattr(type(step.stage), "hand_on_only"):
                step.stage.hand_on_only = step.hands_on is not None and not step.keeps
        self._seconds = {s.name: metrics.STAGE_SECONDS.labels(s.name) for s in steps}
        self._records = {s.name: metrics.STAGE_RECORDS.labels(s.name) for s in steps}

    @property
    def stages(self) -> list:
        return [s.stage for s in self.steps]

    async def process(self, batch: list[InMessage]) -> StageOutput:
        written: list[OutMessage] = []
        after: list = []
        alive: list = []
        abandon: list = []
        current = batch
        try:
            for step in self.steps:
                started = time.perf_counter()
                output = step.stage.process(current)
                if step.is_async:
                    output = await output
                if step.name != self.runner:
                    self._records[step.name].inc(len(current))
                    self._seconds[step.name].observe((time.perf_counter() - started) / len(current))
                if output.after_delivery is not None:
                    after.append(output.after_delivery)
                if output.keep_alive is not None:
                    alive.append(output.keep_alive)
                if output.abandon is not None:
                    abandon.append(output.abandon)
                if step.hands_on is None:
                    written.extend(output.messages)
                    break
                current = []
                for message in output.messages:
                    if message.topic == step.hands_on:
                        current.append(InMessage(message.topic, -1, -1, message.key, message.value, None,
                                                 message.headers, message.record))
                        if step.keeps:
                            written.append(message)
                    else:
                        written.append(message)
                if not current:
                    break
        except BaseException:  # a later step failed: what the earlier ones hold is given back, the pass retried
            for job in reversed(abandon):
                try:
                    await job()
                except Exception as exc:  # Redis away: the leases lapse on their own; the first error is raised
                    log.warning("could not give back what a failed pass held: %s", type(exc).__name__)
            raise
        return StageOutput(written, _in_turn(after) if after else None, _in_turn(alive) if alive else None,
                           _in_turn(abandon) if abandon else None)


def _in_turn(jobs: list):
    """Each step's after-delivery (or keep-alive) work, the last step's first: the syndicate step notes what
    the targets received before the master step gives its leases back."""
    async def run() -> None:
        for job in reversed(jobs):
            await job()
    return run


def stages_of(runners: dict) -> list:
    """Every stage object behind these runners (hub.dataflow.stage_runners), a chain's steps included."""
    return [inner for runner in runners.values()
            for inner in (runner.stage.stages if isinstance(runner.stage, Chain) else [runner.stage])]
