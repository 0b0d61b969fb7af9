"""`hub replay` over real topics: every input topic (several partitions,
written by concurrent producers) replayed into an empty Redis twice gives
the same golden records per key (opened: values are sealed with a random
nonce); afterwards a worker carries on from where the replay stopped
instead of processing everything again."""

from __future__ import annotations

import asyncio
import threading

from hub.connectors.embedded import EmbeddedRedis
from hub.connectors.kafka import end_offsets
from hub.demo import encode_event
from hub.replay import IndexNotEmpty, replay
from hub.testing.generator import generate
from hub.schemas import GOLDEN, codec
from hub.testing.harness import (
    Feeder,
    committed_offsets,
    latest_since,
    open_goldens,
    wait_caught_up,
    worker_input_topics,
)

SECRET = b"replay-test-key-of-32-characters"


def _feed_concurrently(bootstrap: str, events, producers: int = 3) -> None:
    """Producers racing each other: the order across partitions is whatever the timing makes it."""
    def send(share):
        feeder = Feeder(bootstrap)
        for event in share:
            feeder.send(event.topic, event.key, event.raw if event.raw is not None else encode_event(event.topic, event.value))
        feeder.flush()
    by_key: dict[bytes, list] = {}
    for event in events:  # one key's events stay in one producer, in order
        by_key.setdefault(event.key, []).append(event)
    shares = [[] for _ in range(producers)]
    for i, key_events in enumerate(by_key.values()):
        shares[i % producers].extend(key_events)
    threads = [threading.Thread(target=send, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_replay_twice_gives_the_same_golden_records(local_hub, pipeline, tmp_path):
    events = generate(250, seed=11)
    _feed_concurrently(local_hub.bootstrap, events)
    bootstrap, golden = local_hub.bootstrap, pipeline.topics.golden
    first, second = EmbeddedRedis(tmp_path / "first").start(), EmbeddedRedis(tmp_path / "second").start()
    try:
        counts = asyncio.run(replay(pipeline, bootstrap, first.url, SECRET, "hub", batch_size=200))
        assert sum(counts.inputs.values()) == len(events)  # every input record read, none twice
        assert counts.inputs[pipeline.topics.consent] > 0
        after_first = end_offsets(bootstrap, [golden])
        first_golden = latest_since(bootstrap, golden, {})

        try:
            asyncio.run(replay(pipeline, bootstrap, first.url, SECRET, "hub", batch_size=200))
            raise AssertionError("a replay into a Redis holding golden records must be refused")
        except IndexNotEmpty:
            pass

        asyncio.run(replay(pipeline, bootstrap, second.url, SECRET, "hub", batch_size=200, commit=False))
        second_golden = latest_since(bootstrap, golden, after_first)
    finally:
        first.stop()
        second.stop()
    live = {k: v for k, v in first_golden.items() if v is not None}
    assert len(live) > 150
    # sealed with the replay's keyring (derived from SECRET, as a worker's): a random nonce each time, so the
    # records opened are compared, not the bytes; the same golden ids and tombstones
    assert second_golden.keys() == first_golden.keys()
    assert {k for k, v in second_golden.items() if v is None} == {k for k, v in first_golden.items() if v is None}
    golden_codec = codec(GOLDEN)
    assert {k: golden_codec.encode(g) for k, g in open_goldens(SECRET, second_golden, golden).items()} == \
        {k: golden_codec.encode(g) for k, g in open_goldens(SECRET, first_golden, golden).items()}


def test_workers_carry_on_after_a_replay(local_hub, pipeline):
    events = generate(60, seed=12)
    _feed_concurrently(local_hub.bootstrap, events)
    bootstrap, topics = local_hub.bootstrap, pipeline.topics
    read = worker_input_topics(pipeline)
    asyncio.run(replay(pipeline, bootstrap, local_hub.redis_url, SECRET, "hub", batch_size=100))
    ends = end_offsets(bootstrap, read)
    assert committed_offsets(bootstrap, "hub", ends) == ends  # the workers' group, at the end of all it reads
    written = end_offsets(bootstrap, [topics.golden, topics.audit])  # what the replay wrote
    local_hub.worker(env={"HUB_PII_KEY": SECRET.decode()})
    newcomer = [e for e in generate(1, seed=99) if e.topic.startswith("raw.") and e.raw is None][:1]
    newcomer[0].value["source_id"] = "REPLAY-NEW"
    newcomer[0].key = f"{newcomer[0].value['source']}:REPLAY-NEW".encode()
    _feed_concurrently(bootstrap, newcomer, producers=1)
    # the workers' group at the end of everything it reads, the new customer included: a worker starting
    # over (re-reading what the replay did) would be far from it
    wait_caught_up(bootstrap, "hub", read, timeout_s=90)
    golden = latest_since(bootstrap, topics.golden, written)
    # only the new customer: what the replay did is not done again (a match decision is keyed by the record)
    sources = {s.name.encode() for s in pipeline.sources}
    decided = [k for k in latest_since(bootstrap, topics.audit, written) if k.split(b":")[0] in sources]
    assert decided == [newcomer[0].key], f"{len(decided)} records matched again after the replay"
    assert len(golden) == 1, f"{len(golden)} golden records written after the replay"
