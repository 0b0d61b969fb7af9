"""Replay against live: how close is `hub replay` to what the workers built?

Starts the embedded broker and Redis and feeds `--persons` generated
customers (upserts, updates, duplicates across sources, consent, a few
invalid events) to the raw topics: at `--rate` events/s to a running worker
(live traffic), or, with `--rate 0`, all of them before the worker starts (a
backlog, which the worker reads partition by partition in whatever order its
fetches return). Once the worker has caught up it is stopped, and the hub replays
every input topic twice, each time into an empty Redis. Prints the replay's
rate, whether the two replays agree byte for byte, and how the replay
compares with the live state: the same customers (the same source records
grouped together), the same golden ids, the same content (the record without
its version and timestamps), the same bytes (golden records opened first:
sealing uses a random nonce, hub.topic_seal). The last line is JSON.

    python benchmarks/replay.py --persons 2000 --rate 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from hub.config import load_pipeline
from hub.connectors.embedded import EmbeddedRedis
from hub.connectors.kafka import end_offsets
from hub.demo import encode_event
from hub.replay import replay
from hub.schemas import GOLDEN, codec
from hub.survivorship import STAMP_FIELDS
from hub.testing.generator import generate
from hub.testing.harness import Feeder, LocalHub, latest_since, topic_keyring, wait_caught_up, worker_input_topics
from hub.topic_seal import open_value



def wait_ready(worker, timeout_s: float = 120) -> None:
    """Until the worker has joined its group and takes traffic (its log says the partitions are assigned)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.log_path.exists() and "Setting newly assigned partitions" in worker.log_path.read_text():
            time.sleep(2)
            return
        time.sleep(0.5)
    raise TimeoutError("the worker did not join its group")


def opened(keyring, values: dict, topic: str) -> dict:
    """key -> the golden record's Avro bytes once opened: sealing (hub.topic_seal) uses a random nonce, so the
    same record is sealed in other bytes each time it is written."""
    golden = codec(GOLDEN)
    return {k: golden.encode(open_value(keyring, GOLDEN, v, topic, k)) for k, v in values.items() if v is not None}


def compare(live: dict, replayed: dict, keyring, topic: str) -> dict:
    golden = codec(GOLDEN)
    live, replayed = opened(keyring, live, topic), opened(keyring, replayed, topic)
    live_records = {k: golden.decode(v) for k, v in live.items()}
    replay_records = {k: golden.decode(v) for k, v in replayed.items()}

    def customers(records):
        return {frozenset(r["members"]) for r in records.values()}

    def content(record):
        return {k: v for k, v in record.items() if k not in STAMP_FIELDS}

    same_customers = customers(live_records) & customers(replay_records)
    same_ids = live_records.keys() & replay_records.keys()
    return {
        "live_golden_records": len(live_records),
        "replay_golden_records": len(replay_records),
        "same_customers": len(same_customers),
        "same_golden_ids": sum(1 for k in same_ids if live_records[k]["members"] == replay_records[k]["members"]),
        "same_content": sum(1 for k in same_ids if content(live_records[k]) == content(replay_records[k])),
        "same_bytes": sum(1 for k in same_ids if live[k] == replayed[k]),  # once opened
        # where records with the same content differ: which stamp fields
        "stamp_differences": dict(Counter(
            field for k in same_ids if content(live_records[k]) == content(replay_records[k])
            for field in STAMP_FIELDS if live_records[k][field] != replay_records[k][field])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rate", type=float, default=300, help="events/s to a running worker; 0: a backlog first")
    args = parser.parse_args()
    pipeline = load_pipeline(None)
    golden_topic = pipeline.topics.golden
    with tempfile.TemporaryDirectory() as state:
        hub = LocalHub(pipeline, Path(state)).start()
        # the replay's store (this process) opens with the workers' key
        os.environ.setdefault("HUB_PII_KEY", hub.pii_key)
        try:
            events = generate(args.persons, seed=args.seed)
            feeder = Feeder(hub.bootstrap)
            worker = hub.worker() if args.rate else None
            if worker is not None:
                wait_ready(worker)
            started = time.monotonic()
            for n, event in enumerate(events):
                if args.rate:
                    time.sleep(max(0.0, started + n / args.rate - time.monotonic()))
                feeder.send(event.topic, event.key,
                            event.raw if event.raw is not None else encode_event(event.topic, event.value))
                if args.rate and n % 50 == 0:
                    feeder.producer.poll(0)
            feeder.flush()
            worker = worker or hub.worker()
            wait_caught_up(hub.bootstrap, "hub", worker_input_topics(pipeline), 1800)
            worker.stop()
            live = latest_since(hub.bootstrap, golden_topic, {})
            runs = []
            for n in range(2):
                before = end_offsets(hub.bootstrap, [golden_topic])
                redis = EmbeddedRedis(Path(state) / f"replay{n}").start()
                try:
                    counts = asyncio.run(replay(pipeline, hub.bootstrap, redis.url, hub.pii_key.encode(), "hub",
                                                batch_size=args.batch, commit=False))
                finally:
                    redis.stop()
                runs.append((counts, latest_since(hub.bootstrap, golden_topic, before)))
        finally:
            hub.stop()
    (counts, first), (_, second) = runs
    keyring = topic_keyring(os.environ["HUB_PII_KEY"])  # the workers' and the replays' (hub.testing.harness)
    inputs = sum(counts.inputs.values())
    result = {"events": len(events), "rate": args.rate, "replayed_inputs": inputs,
              "replay_events_per_s": round(inputs / counts.seconds, 1),
              "replays_byte_identical": first.keys() == second.keys()
              and opened(keyring, first, golden_topic) == opened(keyring, second, golden_topic),
              **compare(live, first, keyring, golden_topic)}
    print(f"{len(events)} events; replay read {inputs} input records at {result['replay_events_per_s']}/s; "
          f"two replays byte-identical: {result['replays_byte_identical']}")
    print(f"live {result['live_golden_records']} golden records, replay {result['replay_golden_records']}: "
          f"same customers {result['same_customers']}, same golden ids {result['same_golden_ids']}, "
          f"same content {result['same_content']}, same bytes {result['same_bytes']}; "
          f"stamp fields that differ: {result['stamp_differences']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
