"""Replaying the source events into a fresh index, later: the golden topic's
value per key is byte-identical (golden ids derive from record keys,
`updated_at` from event times, sealed Redis values never reach a topic).
In-process with the real stages and Redis, so the order is fixed."""

from __future__ import annotations

import asyncio
import time
import zlib

from hub.config import load_pipeline
from hub.demo import encode_event
from hub.records import InMessage
from hub.schemas import GOLDEN, codec
from hub.stages import settled
from hub.stages.ingest import IngestStage
from hub.stages.master import MasterStage
from hub.stages.match import MatchStage
from hub.testing.generator import generate

START = int(time.time() * 1000) - 86_400_000


async def _run(redis_url: str, events, now_ms: int, batch: int) -> dict[bytes, bytes | None]:
    from hub.store.redis import RedisStore

    pipeline = load_pipeline(None)
    store = RedisStore.from_url(redis_url)
    ingest, match, master = IngestStage(pipeline), MatchStage(pipeline, store, b"k"), MasterStage(pipeline, store, store, store, b"k", store)
    raw = [InMessage(e.topic, 0, i, e.key, e.raw if e.raw is not None else encode_event(e.topic, e.value), START + i)
           for i, e in enumerate(events) if e.topic.startswith("raw.")]
    golden_topic: dict[bytes, bytes | None] = {}

    def take(messages, topic):
        return [InMessage(m.topic, 0, 0, m.key, m.value, now_ms) for m in messages if m.topic == topic]

    for start in range(0, len(raw), batch):
        canonical = take(ingest.process(raw[start:start + batch], now_ms).messages, pipeline.topics.canonical)
        linked = take((await match.process(canonical, now_ms)).messages, pipeline.topics.linked)
        for partition in range(pipeline.partitions):  # the linked topic's partitions, one after the other
            part = [m for m in linked if zlib.crc32(m.key) % pipeline.partitions == partition]
            for out in (await settled(master.process(part, now_ms))).messages if part else ():
                if out.topic == pipeline.topics.golden:
                    golden_topic[out.key] = out.value
    return golden_topic


def test_replay_into_a_fresh_index_is_byte_identical(tmp_path):
    from hub.connectors.embedded import EmbeddedRedis

    events = generate(150, seed=5, start_ms=START)
    first, second = EmbeddedRedis(tmp_path / "a").start(), EmbeddedRedis(tmp_path / "b").start()
    try:
        now = int(time.time() * 1000)
        before = asyncio.run(_run(first.url, events, now, batch=100))
        after = asyncio.run(_run(second.url, events, now + 3_600_000, batch=100))  # an hour later
    finally:
        first.stop()
        second.stop()
    live = {k: v for k, v in before.items() if v is not None}
    assert len(live) > 100
    assert after == before  # same keys, same bytes, tombstones included
    decoded = [codec(GOLDEN).decode(v) for v in live.values()]
    assert all(g["updated_at"] <= START + 86_400_000 for g in decoded)  # event time, not the replay's clock
