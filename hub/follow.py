"""How far the workers have come with what was written to their topics: the
workers' consumer groups' committed offsets against where each partition
ends. `hub load --follow` uses it to say when the records it loaded are
mastered, and the test harness to prove a worker has done everything there
is before a test takes "nothing changed" to mean anything.

A worker commits an input's offset only after every output of it is
acknowledged, so a group at the end of every topic it reads has put every
outcome of those records on its topics (golden records, target slices, dead
letters).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Callable

from confluent_kafka import Consumer, TopicPartition

from hub.config import DEFAULT_ENGINE, PipelineConfig
from hub.connectors.kafka import MergedReader, end_offsets
from hub.connectors.kafka_security import as_connection
from hub.records import ERROR_REASON, ERROR_STAGE

Offsets = dict[tuple[str, int], int]


def worker_input_topics(pipeline: PipelineConfig, engine: str = DEFAULT_ENGINE) -> list[str]:
    """Every topic the workers' consumer group reads with this engine (hub.dataflow)."""
    from hub.dataflow import input_topics  # the stages: not loaded by `hub tail` and the like until asked

    return input_topics(pipeline, engine)


def committed_offsets(bootstrap: str, group: str, partitions) -> Offsets:
    """The workers' committed offset per (topic, partition), `group` being their app id: the furthest of
    Faust's group and the groups of the stages that read with a consumer of their own (the source topics,
    hub.dataflow.worker_groups); negative where none committed."""
    from hub.dataflow import worker_groups

    wanted = [TopicPartition(t, p) for t, p in partitions]
    found: Offsets = {}
    for name in worker_groups(group):
        consumer = Consumer(as_connection(bootstrap).config(**{"group.id": name, "enable.auto.commit": False}))
        try:
            for tp in consumer.committed(wanted, timeout=10):
                key = (tp.topic, tp.partition)
                found[key] = max(found.get(key, tp.offset), tp.offset)
        finally:
            consumer.close()
    return found


def behind(ends: Offsets, committed: Offsets) -> Offsets:
    """Records not yet committed, per partition that has any."""
    return {tp: end - max(committed.get(tp, 0), 0) for tp, end in ends.items() if end > max(committed.get(tp, 0), 0)}


def consumed_between(start: Offsets, end: Offsets, committed: Offsets) -> int:
    """Of the records between `start` and `end`, how many the group has committed past."""
    return sum(min(max(committed.get(tp, 0), first), end[tp]) - first for tp, first in start.items())


def follow(bootstrap: str, group: str, pipeline: PipelineConfig, start: Offsets, end: Offsets,
           on_progress: Callable[[int, int, int], None] | None = None, timeout_s: float | None = None,
           poll_s: float = 1.0, engine: str = DEFAULT_ENGINE) -> None:
    """Until the group has committed past the records between `start` and
    `end` (what a load wrote) and then the end of every topic it reads (so
    whatever those records caused downstream is done too), twice in a row.
    `on_progress(done, total, queued)`: the loaded records the workers took
    in, of `total`, and the records still queued on any topic they read.
    TimeoutError after `timeout_s`."""
    topics = worker_input_topics(pipeline, engine)
    total = sum(end[tp] - first for tp, first in start.items())
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    streak = 0
    while True:
        ends = {**end_offsets(bootstrap, topics), **end}
        committed = committed_offsets(bootstrap, group, ends)
        queued = sum(behind(ends, committed).values())
        if on_progress is not None:
            on_progress(consumed_between(start, end, committed), total, queued)
        streak = 0 if queued else streak + 1
        if streak >= 2:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"group {group} still behind after {timeout_s:.0f} s: "
                               f"{sum(behind(ends, committed).values())} records")
        time.sleep(poll_s)


def dead_letters_since(bootstrap: str, topic: str, since: Offsets) -> dict[str, Counter]:
    """Reasons of the dead letters written to `topic` after `since`, per stage that wrote them."""
    found: dict[str, Counter] = {}
    for message in MergedReader(bootstrap, [topic], timeout_s=300):
        if message.offset < since.get((message.topic, message.partition), 0):
            continue
        headers = dict(message.headers or ())
        stage = headers.get(ERROR_STAGE, b"?").decode(errors="replace")
        found.setdefault(stage, Counter())[headers.get(ERROR_REASON, b"?").decode(errors="replace")] += 1
    return found
