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
event was accounted for, and what the embedded broker was doing: its CPU and
resident memory, and how long a plain confluent-kafka consumer waits for the
last record of each of the worker's input topics (partition 0, sampled in a
thread beside the feeder; the slowest is reported). Tansu's memory engine
lists every stored batch of a partition on each fetch and, past some 10,000
to 20,000 batches in a partition, slows down until it hardly answers
(benchmarks/broker_fetch.py): the worker then waits for input, idle. `HUB_DEBUG__MEMORY_REPORT=FILE` in the environment
makes the worker write memory reports (hub.testing.memdebug). The last line
is JSON.

    python benchmarks/soak.py --rate 200 --minutes 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import redis
from confluent_kafka import Consumer, TopicPartition

from hub.config import load_pipeline
from hub.demo import encode_event
from hub.testing.generator import iter_events
from hub.testing.harness import Feeder, LocalHub, Watcher, process_cpu_s, process_rss_mb






class BrokerProbe(threading.Thread):
    """Beside the feeder: every `interval_s`, the embedded broker's CPU share
    since the last look and its RSS, and how long a plain consumer (no group,
    no hub code) takes to fetch the last record of partition 0 of each of the
    worker's input topics; the slowest is reported, with how many records that
    partition holds. A fetch not answered within `timeout_s` is reported as
    None. Tansu's fetch cost grows with the number of record batches stored in
    a partition (benchmarks/broker_fetch.py), not its records: the raw topics,
    fed one or two records per batch, slow down first."""

    def __init__(self, bootstrap: str, topics: list[str], broker_pid: int, interval_s: float = 10.0,
                 timeout_s: float = 20.0):
        super().__init__(daemon=True)
        self.topics, self.pid, self.interval_s, self.timeout_s = topics, broker_pid, interval_s, timeout_s
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "soak-probe",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        self.latest: dict = {}
        self.stopping = threading.Event()

    def fetch_ms(self, topic: str) -> tuple[float | None, int]:
        end = self.consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        if not end:
            return 0.0, 0
        self.consumer.assign([TopicPartition(topic, 0, end - 1)])
        started, got = time.monotonic(), False
        while not got and time.monotonic() - started < self.timeout_s and not self.stopping.is_set():
            got = any(not m.error() for m in self.consumer.consume(1, timeout=0.01))
        self.consumer.unassign()
        return (round((time.monotonic() - started) * 1000, 1) if got else None), end

    def look(self, last_cpu: float, last_t: float) -> tuple[dict, float, float]:
        now, cpu = time.monotonic(), process_cpu_s(self.pid)
        sample = {"broker_cpu_pct": round((cpu - last_cpu) / (now - last_t) * 100),
                  "broker_rss_mb": round(process_rss_mb(self.pid))}
        slowest = None
        for topic in self.topics:
            ms, records = self.fetch_ms(topic)
            if slowest is None or ms is None or (slowest[0] is not None and ms > slowest[0]):
                slowest = (ms, f"{topic}/0", records)
            if ms is None:
                break  # the broker no longer answers: no need to pile more fetches on it
        if slowest is not None:
            sample.update(fetch_ms=slowest[0], slowest_partition=slowest[1], slowest_partition_records=slowest[2])
        return sample, cpu, now

    def run(self) -> None:
        last_cpu, last_t = process_cpu_s(self.pid), time.monotonic()
        while not self.stopping.wait(self.interval_s):
            try:
                self.latest, last_cpu, last_t = self.look(last_cpu, last_t)
            except Exception as exc:  # the broker busy or gone: say so, keep going
                self.latest = {"probe_error": repr(exc)[:120]}

    def stop(self) -> None:
        self.stopping.set()
        self.join(self.timeout_s + 30)
        self.consumer.close()


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


def broker_summary(samples: list[dict], end: dict, marks: dict) -> dict:
    """The embedded broker over the run: CPU, RSS and the plain consumer's fetch
    latency at the quarters and the end, the mean CPU share while feeding, and
    when a fetch first took more than a second (or went unanswered)."""
    probed = [s for s in samples if "broker_cpu_pct" in s]
    at = {name: s and {k: s.get(k) for k in ("t_s", "broker_cpu_pct", "broker_rss_mb", "fetch_ms",
                                              "slowest_partition", "slowest_partition_records")}
          for name, s in marks.items()}
    at["end"] = {k: end.get(k) for k in ("broker_cpu_pct", "broker_rss_mb", "fetch_ms", "slowest_partition",
                                         "slowest_partition_records")}
    slow = next((s for s in probed if "fetch_ms" in s and (s["fetch_ms"] is None or s["fetch_ms"] > 1000)), None)
    return {"at": at,
            "mean_cpu_pct_while_feeding": round(sum(s["broker_cpu_pct"] for s in probed) / len(probed)) if probed else None,
            "first_slow_fetch": slow and {k: slow.get(k) for k in ("t_s", "fetch_ms", "slowest_partition",
                                                                   "slowest_partition_records", "backlog")}}


def broker_words(broker: dict) -> str:
    parts = [f"{name} {b['broker_cpu_pct']} % CPU, {b['broker_rss_mb']} MB, slowest fetch "
             f"{'unanswered' if b.get('fetch_ms') is None else str(b['fetch_ms']) + ' ms'}"
             for name, b in broker["at"].items() if b and b.get("broker_cpu_pct") is not None]
    line = f"embedded broker (mean {broker['mean_cpu_pct_while_feeding']} % CPU while feeding): " + "; ".join(parts)
    slow = broker["first_slow_fetch"]
    if slow:
        took = "went unanswered" if slow["fetch_ms"] is None else f"took {slow['fetch_ms']:.0f} ms"
        line += (f"\na plain consumer's fetch of the last record of {slow['slowest_partition']} "
                 f"({slow['slowest_partition_records']} records) first {took} at t={slow['t_s']:.0f} s (backlog "
                 f"{slow['backlog']}); a backlog that grows while such fetches persist is the embedded broker's, not the worker's")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--feeder-linger-ms", type=int, default=5,
                        help="the feeder's linger.ms: at a steady rate a raw partition gets about one record per "
                             "batch at 5 ms; a longer linger packs several, and the embedded broker's cost "
                             "grows with batches, not records")
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
        feeder = Feeder(hub.bootstrap, linger_ms=args.feeder_linger_ms)
        client = redis.Redis.from_url(hub.redis_url)
        inputs = [*(source.raw_topic for source in pipeline.sources), pipeline.topics.canonical,
                  pipeline.topics.linked, pipeline.topics.golden, pipeline.topics.consent]
        probe = BrokerProbe(hub.bootstrap, inputs, hub.broker.process.pid, interval_s=args.sample_s)
        probe.start()

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
                                "worker_rss_mb": round(process_rss_mb(worker.process.pid), 1),
                                "redis_used_mb": round(client.info("memory")["used_memory"] / 2**20, 1),
                                **probe.latest})
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
        end = {"worker_rss_mb": round(process_rss_mb(worker.process.pid), 1),
               "redis_used_mb": round(client.info("memory")["used_memory"] / 2**20, 1), **probe.latest}
        probe.stop()

        duration_s = args.minutes * 60
        marks = {"start": samples[0] if samples else None,
                 **{name: nearest(samples, duration_s * q / 4) for q, name in ((1, "q1"), (2, "q2"), (3, "q3"))},
                 "last_fed": samples[-1] if samples else None}
        rss = {name: (s and {"t_s": s["t_s"], "mb": s["worker_rss_mb"]}) for name, s in marks.items()}
        rss["end"] = {"t_s": round(time.monotonic() - started, 1), "mb": end["worker_rss_mb"]}
        growth = {"second_half": slope_mb_per_min(samples, duration_s / 2),
                  "last_quarter": slope_mb_per_min(samples, duration_s * 3 / 4)}
        report = {"rate": args.rate, "minutes": args.minutes, "feeder_linger_ms": args.feeder_linger_ms, "fed": fed, "raw": raw, "accounted": accounted,
                  "lost": raw - accounted, "drained": accounted >= raw, "worker_alive": worker.process.poll() is None,
                  "worker_rss_mb": rss, "worker_rss_growth_mb_per_min": growth,
                  "redis_used_mb": {"start": samples[0]["redis_used_mb"] if samples else None,
                                    "end": end["redis_used_mb"]},
                  "max_backlog": max((s["backlog"] for s in samples), default=0),
                  "broker": broker_summary(samples, end, marks)}
        missing = "" if accounted >= raw else f" (lost, or not processed within {drain_s} s of the end of feeding)"
        print(f"\nfed {fed} events ({raw} customer events), accounted for {accounted}, lost {raw - accounted}{missing}, "
              f"worker {'alive' if report['worker_alive'] else 'DEAD'}, largest backlog {report['max_backlog']}")
        print("worker RSS: " + ", ".join(f"{name} {r['mb']} MB (t={r['t_s']:.0f} s)"
                                         for name, r in rss.items() if r))
        print(f"worker RSS growth: {growth['second_half']} MB/min over the second half, "
              f"{growth['last_quarter']} MB/min over the last quarter (least squares)")
        print(f"Redis used memory: {report['redis_used_mb']['start']} MB to {end['redis_used_mb']} MB")
        print(broker_words(report["broker"]))
        watcher.close()
        print(json.dumps(report))


if __name__ == "__main__":
    main()
