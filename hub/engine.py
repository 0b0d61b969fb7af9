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
reads the golden records from the same pass. Consent statements and survey
answers come in on the same consumer as the source events and share their
pass: their steps run first and hand what they ask of the master (a
recompute) to the master step beside the match step's links, so a batch is
mastered once whatever it mixes. Erasure, steward and the timers hand theirs
to the master in a pass of their own (hub.dataflow.FUSED,
hub.dataflow.schedule_runner).

A step takes the messages of the topics it `reads`, from the pass's input or
handed on by the steps before it, in the order they came: what the staged
engine's topics would carry to it. A message no step reads fails the pass (a
chain declared wrong), so it is dead-lettered, never dropped.

What the linked topic's key gave the staged engine, one master per golden
record, golden-record leases give here (hub.store.redis.leases): the master
step takes the lease of every golden record it reads and gives it back once
the pass's outputs are delivered, so two workers (or two passes of one
worker) never interleave one record's versions.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from hub import metrics
from hub.collector import collecting_after
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
    # the topics whose messages the step takes, from the pass's input or handed on; None: the first step takes
    # the pass's input, a later one what the step before hands on
    reads: tuple[str, ...] | None = None


class Chain:
    """Steps run back to back on one batch; `process(batch) -> StageOutput` as any stage."""

    def __init__(self, steps: list[Step], runner: str | None = None, together=None):
        """`runner`: the name of the runner driving the chain, which measures a step of that name itself.
        `together`: a context manager factory the pass, and its after-delivery work, each run in: the store's
        `writes_together` (hub.store.redis.base), in which writes whose replies nobody reads go out with the
        next round trip (a pass makes some 25, and a dozen of its writes' replies are read by nobody)."""
        self.steps = steps
        self.runner = runner
        self.together = together or contextlib.nullcontext
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
        try:
            # the writes held for a next round trip go out as it ends, before any output; no collection scans
            # the pass's containers while it holds them
            with self.together(), collecting_after():
                await self._steps(batch, written, after, alive, abandon)
        except BaseException:  # a later step failed: what the earlier ones hold is given back, the pass retried
            for job in reversed(abandon):
                try:
                    await job()
                except Exception as exc:  # Redis away: the leases lapse on their own; the first error is raised
                    log.warning("could not give back what a failed pass held: %s", type(exc).__name__)
            raise
        return StageOutput(written, _in_turn(after, self.together) if after else None,
                           _in_turn(alive) if alive else None, _in_turn(abandon) if abandon else None)

    async def _steps(self, batch: list[InMessage], written: list, after: list, alive: list, abandon: list) -> None:
        pending = batch  # in the order they came: the pass's input, then what each step hands on
        for position, step in enumerate(self.steps):
            current, pending = self._taken(position, step, pending)
            if not current:
                continue
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
            for message in output.messages:
                if step.hands_on is not None and message.topic == step.hands_on:
                    pending.append(InMessage(message.topic, -1, -1, message.key, message.value, None,
                                             message.headers, message.record))
                    if step.keeps:
                        written.append(message)
                else:
                    written.append(message)
        if pending:
            raise RuntimeError(f"no step of the pass reads {sorted({m.topic for m in pending})}")

    def _taken(self, position: int, step: Step, pending: list[InMessage]) -> tuple[list[InMessage], list[InMessage]]:
        """What `step` reads of `pending`, and what it leaves for the steps after it."""
        if step.reads is not None:
            wanted = [m for m in pending if m.topic in step.reads]
        elif position == 0:
            wanted = pending
        else:
            wanted = [m for m in pending if m.topic == self.steps[position - 1].hands_on]
        if len(wanted) == len(pending):
            return list(pending), []
        taken = {id(m) for m in wanted}
        return wanted, [m for m in pending if id(m) not in taken]


def _in_turn(jobs: list, together=contextlib.nullcontext):
    """Each step's after-delivery (or keep-alive) work, the last step's first: the syndicate step notes what
    the targets received before the master step gives its leases back (in that order in one round trip, with
    `together`)."""
    async def run() -> None:
        with together():
            for job in reversed(jobs):
                await job()
    return run


def stages_of(runners: dict) -> list:
    """Every stage object behind these runners (hub.dataflow.stage_runners), a chain's steps included."""
    return [inner for runner in runners.values()
            for inner in (runner.stage.stages if isinstance(runner.stage, Chain) else [runner.stage])]
