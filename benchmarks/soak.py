"""Soak: a steady rate for several minutes, bounded, on loopback only; does
the worker's memory stay flat?

Starts the embedded broker and Redis and one worker, feeds generated events
(new customers, updates, duplicates, consent, a few invalid) at `--rate`
events/s for `--minutes`, and samples the worker's resident memory, Redis's
used memory and the backlog every `--sample-s`. Reports memory at the start
(after `--warmup-s`) and at the end, the growth per minute over the second
half and the last quarter (the worker's bounded caches, LRU of 65,536
entries each, fill up with distinct names, e-mails, phones and addresses,
then growth stops; Redis grows with the index, by design), and whether every
event was accounted for. The last line is JSON.

    python benchmarks/soak.py --rate 200 --minutes 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import redis

from hub.config import load_pipeline
from hub.demo import encode_event
from hub.generator import iter_events
from hub.harness import Feeder, LocalHub, Watcher


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    args = parser.parse_args()

    pipeline = load_pipeline(None)
    total = int(args.rate * args.minutes * 60)
    events = iter_events(total, seed=17, start_ms=int(time.time() * 1000) - 86_400_000)
    with tempfile.TemporaryDirectory() as tmp, LocalHub(pipeline, Path(tmp)) as hub:
        worker = hub.worker()
        watcher = Watcher(hub.bootstrap, [pipeline.topics.canonical, *(s.dlq_topic for s in pipeline.sources)],
                          keep_values=set())
        feeder = Feeder(hub.bootstrap)
        client = redis.Redis.from_url(hub.redis_url)
        samples = []
        started = time.monotonic()
        next_sample = started + args.warmup_s
        fed = raw = 0
        while fed < total:
            due = started + fed / args.rate
            now = time.monotonic()
            if due > now:
                time.sleep(min(due - now, 0.05))
                watcher.poll(0)
                continue
            ev = next(events, None)
            if ev is None:
                break
            feeder.send(ev.topic, ev.key, ev.raw if ev.raw is not None else encode_event(ev.topic, ev.value))
            fed += 1
            raw += ev.topic.startswith("raw.")
            if now >= next_sample:
                watcher.poll(0.05)
                view = watcher.view
                accounted = view.counts[pipeline.topics.canonical] + sum(view.counts[s.dlq_topic]
                                                                          for s in pipeline.sources)
                samples.append({"t_s": round(now - started, 1), "fed": fed, "backlog": raw - accounted,
                                "worker_rss_mb": round(rss_mb(worker.process.pid), 1),
                                "redis_used_mb": round(client.info("memory")["used_memory"] / 2**20, 1)})
                print(json.dumps(samples[-1]), flush=True)
                next_sample += args.sample_s
        feeder.flush()
        view = watcher.wait_until(lambda v: v.counts[pipeline.topics.canonical]
                                  + sum(v.counts[s.dlq_topic] for s in pipeline.sources) >= raw,
                                  timeout_s=300, quiet_s=2.0)
        accounted = view.counts[pipeline.topics.canonical] + sum(view.counts[s.dlq_topic] for s in pipeline.sources)
        end = {"worker_rss_mb": round(rss_mb(worker.process.pid), 1),
               "redis_used_mb": round(client.info("memory")["used_memory"] / 2**20, 1)}

        def growth(part: int) -> float:
            """Worker RSS growth (MB/min) over the last 1/part of the run: flattens once caches are full."""
            tail = samples[len(samples) - max(2, len(samples) // part):] if len(samples) > 1 else []
            if len(tail) < 2:
                return float("nan")
            return round((tail[-1]["worker_rss_mb"] - tail[0]["worker_rss_mb"]) / ((tail[-1]["t_s"] - tail[0]["t_s"]) / 60), 2)
        report = {"rate": args.rate, "minutes": args.minutes, "fed": fed, "raw": raw, "accounted": accounted,
                  "lost": raw - accounted, "worker_alive": worker.process.poll() is None,
                  "start": samples[0] if samples else None, "end": end,
                  "worker_rss_growth_mb_per_min": {"second_half": growth(2), "last_quarter": growth(4)},
                  "max_backlog": max(
                      (s["backlog"] for s in samples), default=0)}
        watcher.close()
        print(json.dumps(report))


if __name__ == "__main__":
    main()
