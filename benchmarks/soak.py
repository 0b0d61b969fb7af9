"""Soak: a steady rate for several minutes, bounded, on loopback only; does
the worker's memory stay flat?

Starts the embedded broker and Redis and one worker, feeds generated events
(new customers, updates, duplicates, consent, a few invalid) at `--rate`
events/s for `--minutes`, and samples the worker's resident memory, Redis's
used memory and the backlog every `--sample-s`. Reports the worker's memory
at the start (after `--warmup-s`), at each quarter of the run and at the end
(after the backlog drained), and its growth per minute over the second half
and over the last quarter (least-squares slopes of the samples): bounded
means the second half's slope is near zero, not merely smaller than the
first half's. Redis grows with the index, by design. Also whether every
event was accounted for. `HUB_DEBUG__MEMORY_REPORT=FILE` in the environment
makes the worker write memory reports (hub.memdebug). The last line is JSON.

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


def slope_mb_per_min(samples: list[dict], since_s: float) -> float | None:
    """Least-squares slope of worker RSS over the samples taken at or after `since_s`."""
    points = [(s["t_s"] / 60, s["worker_rss_mb"]) for s in samples if s["t_s"] >= since_s]
    if len(points) < 3:
        return None
    mean_t = sum(t for t, _ in points) / len(points)
    mean_m = sum(m for _, m in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return round(sum((t - mean_t) * (m - mean_m) for t, m in points) / spread, 2) if spread else None


def nearest(samples: list[dict], t_s: float) -> dict | None:
    return min(samples, key=lambda s: abs(s["t_s"] - t_s)) if samples else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="keep the broker's, Redis's and the worker's files and logs here (default: a temporary directory)")
    args = parser.parse_args()

    pipeline = load_pipeline(None)
    total = int(args.rate * args.minutes * 60)
    events = iter_events(total, seed=17, start_ms=int(time.time() * 1000) - 86_400_000)
    with tempfile.TemporaryDirectory() as tmp, LocalHub(pipeline, args.state_dir or Path(tmp)) as hub:
        worker = hub.worker()
        outputs = [pipeline.topics.canonical, *(s.dlq_topic for s in pipeline.sources)]
        watcher = Watcher(hub.bootstrap, outputs, keep_values=set())
        feeder = Feeder(hub.bootstrap)
        client = redis.Redis.from_url(hub.redis_url)

        def accounted_in(view) -> int:
            return sum(view.counts[topic] for topic in outputs)

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
                if worker.process.poll() is not None:
                    print(f"worker exited with {worker.process.returncode}; see {worker.log_path}", flush=True)
                    break
                watcher.poll(0.05)
                samples.append({"t_s": round(now - started, 1), "fed": fed, "backlog": raw - accounted_in(watcher.view),
                                "worker_rss_mb": round(rss_mb(worker.process.pid), 1),
                                "redis_used_mb": round(client.info("memory")["used_memory"] / 2**20, 1)})
                print(json.dumps(samples[-1]), flush=True)
                next_sample += args.sample_s
        feeder.flush()
        drain_s = 300
        try:
            watcher.wait_until(lambda v: accounted_in(v) >= raw or worker.process.poll() is not None,
                               timeout_s=drain_s, quiet_s=2.0)
        except TimeoutError:
            pass  # what is still missing is reported, and whether the backlog drained
        accounted = accounted_in(watcher.view)
        end = {"worker_rss_mb": round(rss_mb(worker.process.pid), 1),
               "redis_used_mb": round(client.info("memory")["used_memory"] / 2**20, 1)}

        duration_s = args.minutes * 60
        marks = {"start": samples[0] if samples else None,
                 **{name: nearest(samples, duration_s * q / 4) for q, name in ((1, "q1"), (2, "q2"), (3, "q3"))},
                 "last_fed": samples[-1] if samples else None}
        rss = {name: (s and {"t_s": s["t_s"], "mb": s["worker_rss_mb"]}) for name, s in marks.items()}
        rss["end"] = {"t_s": round(time.monotonic() - started, 1), "mb": end["worker_rss_mb"]}
        growth = {"second_half": slope_mb_per_min(samples, duration_s / 2),
                  "last_quarter": slope_mb_per_min(samples, duration_s * 3 / 4)}
        report = {"rate": args.rate, "minutes": args.minutes, "fed": fed, "raw": raw, "accounted": accounted,
                  "lost": raw - accounted, "drained": accounted >= raw, "worker_alive": worker.process.poll() is None,
                  "worker_rss_mb": rss, "worker_rss_growth_mb_per_min": growth,
                  "redis_used_mb": {"start": samples[0]["redis_used_mb"] if samples else None,
                                    "end": end["redis_used_mb"]},
                  "max_backlog": max((s["backlog"] for s in samples), default=0)}
        missing = "" if accounted >= raw else f" (lost, or not processed within {drain_s} s of the end of feeding)"
        print(f"\nfed {fed} events ({raw} customer events), accounted for {accounted}, lost {raw - accounted}{missing}, "
              f"worker {'alive' if report['worker_alive'] else 'DEAD'}, largest backlog {report['max_backlog']}")
        print("worker RSS: " + ", ".join(f"{name} {r['mb']} MB (t={r['t_s']:.0f} s)"
                                         for name, r in rss.items() if r))
        print(f"worker RSS growth: {growth['second_half']} MB/min over the second half, "
              f"{growth['last_quarter']} MB/min over the last quarter (least squares)")
        print(f"Redis used memory: {report['redis_used_mb']['start']} MB to {end['redis_used_mb']} MB")
        watcher.close()
        print(json.dumps(report))


if __name__ == "__main__":
    main()
