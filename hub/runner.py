"""Runs one stage over one batch: process, deliver, then let offsets go.

The contract with the caller (a Faust agent or any batch loop): when `run`
returns, every output of the batch is acknowledged by the broker and the
batch's input offsets may be committed. Infrastructure failures (Redis,
broker) are retried with backoff for as long as it takes, so nothing is lost
and the worker does not exit; a batch that fails for any other reason is
split and each record that still fails goes to the dead-letter topic with
hub.error.* headers, so one bad record cannot stop the stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import redis.exceptions
from confluent_kafka import KafkaException

from hub import metrics
from hub.connectors.kafka import DeliveryFailed, KafkaSink, MessageTooLarge
from hub.ports import LeaseLost
from hub.records import InMessage, StageError, describe_exception
from hub.stages import StageOutput

log = logging.getLogger(__name__)

# LeaseLost: a golden record changed hands under a stalled pass (hub.engine); the batch, tried again, re-reads it
INFRASTRUCTURE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, DeliveryFailed,
                  KafkaException, ConnectionError, OSError, LeaseLost)

# stage -> when it started retrying an outage (time.monotonic()); absent: not retrying.
# /health turns to failing when one has retried for too long (hub.app).
RETRYING_SINCE: dict[str, float] = {}


def retrying_longest() -> tuple[str | None, float]:
    """The stage that has been retrying an outage the longest, and for how many seconds."""
    if not RETRYING_SINCE:
        return None, 0.0
    stage, since = min(RETRYING_SINCE.items(), key=lambda item: item[1])
    return stage, time.monotonic() - since


def _retrying_seconds(stage: str):
    return lambda: time.monotonic() - RETRYING_SINCE[stage] if stage in RETRYING_SINCE else 0.0


def survives_outages(name: str):
    """For periodic jobs (Faust timers): a Redis or broker outage skips this
    tick, counted in hub_stage_retries_total{stage=name}, and the next tick
    tries again; unguarded, the exception would stop the whole worker."""
    def wrap(job):
        @functools.wraps(job)
        async def guarded() -> None:
            try:
                await job()
            except INFRASTRUCTURE as exc:
                metrics.STAGE_RETRIES.labels(name).inc()
                log.warning("%s: %s, trying again at the next tick", name, type(exc).__name__)
        return guarded
    return wrap


# how often a delivery still waiting renews what its pass holds (StageOutput.keep_alive): a third of the
# golden-record leases' life (hub.dataflow.LEASE_TTL_MS), so two renewals can be late before one lapses
KEEP_ALIVE_S = 10.0


async def deliver(sink: KafkaSink, output: StageOutput, keep_alive_s: float = KEEP_ALIVE_S) -> None:
    """Hand `output`'s messages to the sink, wait for their acknowledgement, then run its after-delivery
    work; if any of that fails, what the pass holds is given back (StageOutput.abandon) before it raises."""
    try:
        await _deliver(sink, output, keep_alive_s)
    except BaseException:
        if output.abandon is not None:
            try:
                await output.abandon()
            except INFRASTRUCTURE as exc:  # Redis away: the leases lapse on their own
                log.warning("could not give back what a failed delivery held: %s", type(exc).__name__)
        raise


async def _deliver(sink: KafkaSink, output: StageOutput, keep_alive_s: float) -> None:
    if isinstance(sink, KafkaSink):  # the batch's own acknowledgements: the worker's other passes share sink
        delivery = sink.send(output.messages)
        waiting = lambda: delivery.waiting  # noqa: E731
    else:  # a sink acknowledging on flush (the replay's, the tests' in-memory ones)
        for message in output.messages:
            sink.add(message)
        delivery, waiting = None, sink.pending
    # wait without blocking the event loop (heartbeats, other agents)
    renew_at = time.monotonic() + keep_alive_s
    while waiting():
        sink.poll()
        await asyncio.sleep(0.001)
        if output.keep_alive is not None and time.monotonic() >= renew_at:
            await output.keep_alive()  # LeaseLost: the batch is tried again (INFRASTRUCTURE)
            renew_at = time.monotonic() + keep_alive_s
    if delivery is not None:
        delivery.check()
    else:
        sink.flush(0)  # raises on any failed delivery
    if output.after_delivery is not None:
        await output.after_delivery()


class StageRunner:
    def __init__(self, name: str, stage, sink: KafkaSink, dlq_topic, is_async: bool):
        self.name = name
        self.stage = stage
        self.sink = sink
        self.dlq_topic = dlq_topic  # InMessage -> topic name
        self.is_async = is_async
        self._seconds = metrics.STAGE_SECONDS.labels(name)
        self._records = metrics.STAGE_RECORDS.labels(name)
        self._batch = metrics.BATCH_SIZE.labels(name)
        self._delivery = metrics.DELIVERY_SECONDS.labels(name)
        metrics.STAGE_RETRYING.labels(name).set_function(_retrying_seconds(name))
        self._turn: asyncio.Lock | None = None  # made in the event loop that runs the stage
        self._turn_loop = None

    def _one_pass_at_a_time(self) -> asyncio.Lock:
        """Held while the stage processes: batches in flight together (`drive`) overlap their deliveries,
        never their processing (a stage is not reentrant)."""
        loop = asyncio.get_running_loop()
        if self._turn is None or self._turn_loop is not loop:
            self._turn, self._turn_loop = asyncio.Lock(), loop
        return self._turn

    async def _process(self, batch: list[InMessage]) -> StageOutput:
        if self.is_async:
            return await self.stage.process(batch)
        return self.stage.process(batch)

    async def run(self, batch: list[InMessage]) -> None:
        if not batch:
            return
        started = time.perf_counter()
        delay = 0.1
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._one_pass_at_a_time():
                    output = await self._process(batch)
                handed = time.perf_counter()
                await deliver(self.sink, output)
                self._delivery.observe(time.perf_counter() - handed)
                break
            except INFRASTRUCTURE as exc:
                metrics.STAGE_RETRIES.labels(self.name).inc()
                RETRYING_SINCE.setdefault(self.name, time.monotonic())
                log.warning("stage %s: %s, retrying in %.1fs", self.name, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                if len(batch) == 1 or attempt >= 2:
                    await self._isolate(batch)
                    break
                await asyncio.sleep(0.05)
        RETRYING_SINCE.pop(self.name, None)
        self._batch.observe(len(batch))
        self._records.inc(len(batch))
        self._seconds.observe((time.perf_counter() - started) / len(batch))

    async def _isolate(self, batch: list[InMessage]) -> None:
        """Run record by record; a record that still fails is dead-lettered."""
        for message in batch:
            while True:
                try:
                    async with self._one_pass_at_a_time():
                        output = await self._process([message])
                    await deliver(self.sink, output)
                    break
                except INFRASTRUCTURE:
                    metrics.STAGE_RETRIES.labels(self.name).inc()
                    RETRYING_SINCE.setdefault(self.name, time.monotonic())
                    await asyncio.sleep(0.5)
                except Exception as exc:
                    RETRYING_SINCE.pop(self.name, None)
                    detail = describe_exception(exc)  # never the message: it may quote the record
                    reason = "output_too_large" if isinstance(exc, MessageTooLarge) else "internal_error"
                    log.error("stage %s: record %s[%s]@%s dead-lettered: %s", self.name, message.topic,
                              message.partition, message.offset, reason)
                    error = StageError(self.name, reason, detail)
                    topic = self.dlq_topic(message)
                    metrics.DLQ.labels(topic.removeprefix("dlq."), self.name, reason).inc()
                    letter = error.dead_letter(message, topic)
                    limit = getattr(self.sink, "max_message_bytes", None)
                    if limit and len(letter.value or b"") + len(letter.key or b"") > limit:
                        # too large even to dead-letter: its headers say where the original lies
                        letter.headers.append(("hub.error.value_dropped", str(len(letter.value)).encode()))
                        letter.value = None
                    await deliver(self.sink, StageOutput([letter]))
                    break


# batches a stage's own consumer keeps in flight (`drive`): the next one is processed while the one before
# waits for the broker, whose acknowledgement would otherwise stall every pass
IN_FLIGHT = 2


async def drive(consumer, runner: StageRunner, in_flight: int = IN_FLIGHT) -> None:
    """A stage's own consumer (hub.connectors.kafka_consumer.BatchConsumer: start, take, commit, close)
    feeding its runner until cancelled: take a batch, in a thread of the consumer's own where librdkafka waits
    without holding the event loop, run it, and commit it once its outputs are delivered.

    Up to `in_flight` batches run at once: the next batch is taken and processed while the one before waits
    for its acknowledgement and does its after-delivery work. Their processing never overlaps (the runner
    processes one at a time), a golden record is mastered by one pass at a time (its claim and lease are
    held until that pass's outputs are delivered), and batches are committed in the order they were taken,
    each only once it and every batch before it are delivered.

    A consumer that fails (a fatal librdkafka error) sees what is in flight delivered and committed, is
    closed and started again with backoff, counted and reported by /health as the stage retrying, so a
    worker never goes on with a stage that takes nothing."""
    loop = asyncio.get_running_loop()
    thread = ThreadPoolExecutor(1, thread_name_prefix=f"consume-{runner.name}")
    running: deque[tuple[list[InMessage], asyncio.Task]] = deque()  # in the order taken

    def commit_delivered(_task=None) -> None:
        """Run as each pass ends, so a rebalance waiting inside `take` for the batches in flight sees them
        committed."""
        while running and running[0][1].done():
            batch, task = running[0]
            if task.cancelled() or task.exception() is not None:
                return  # a pass retries or dead-letters whatever fails: only a bug gets here; the loop raises it
            running.popleft()
            consumer.commit(batch)

    async def oldest_done() -> None:
        await asyncio.wait([running[0][1]])
        commit_delivered()
        if running and running[0][1].done():
            running[0][1].result()

    delay = 0.1
    try:
        while True:
            if len(running) >= in_flight:
                await oldest_done()
                continue
            try:
                if not consumer.started:
                    await loop.run_in_executor(thread, consumer.start)
                batch = await loop.run_in_executor(thread, consumer.take)
            except INFRASTRUCTURE as exc:
                metrics.STAGE_RETRIES.labels(runner.name).inc()
                RETRYING_SINCE.setdefault(runner.name, time.monotonic())
                log.warning("stage %s: consumer %s, starting again in %.1fs", runner.name, type(exc).__name__, delay)
                while running:  # delivered and committed before the consumer goes
                    await oldest_done()
                await loop.run_in_executor(thread, consumer.close)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            if batch:
                task = asyncio.ensure_future(runner.run(batch))  # clears the retrying mark once delivered
                running.append((batch, task))
                task.add_done_callback(commit_delivered)
            elif not running:
                RETRYING_SINCE.pop(runner.name, None)
    finally:
        for batch, task in running:  # cancelled (the worker stops): not committed, read again
            task.cancel()
            consumer.forget(batch)
        # after a take still running in the thread, if the task was cancelled during one
        thread.submit(consumer.close)
        thread.shutdown(wait=True)
