"""Bulk load and export at volume, as a person runs them: generate a source
system's CSV export of `--records` rows (every generated customer's source
records, so duplicates to match), start the embedded broker and Redis and
`--workers` workers (`--redis-url`: a Redis server instead), then run the
real commands: `hub load --follow` (load, then wait until every record is
mastered) and `hub export` to JSONL and Parquet. Prints what each step took,
the golden records made, the memory each process held at its peak, and how
long a plain consumer's fetch of the end of each raw partition took after the
load (the embedded broker slows down with the record batches a partition
holds); the last line is one JSON object.

    python benchmarks/bulk.py --records 100000
    python benchmarks/bulk.py --records 1000000 --workers 2 --keep /tmp/bulk   # keeps the files
    python benchmarks/bulk.py --records 1000000 --load-only   # no worker: the load and the broker after it
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from confluent_kafka import Consumer, TopicPartition

from hub.config import load_pipeline
from hub.connectors.kafka import end_offsets
from hub.testing.generator import EXPORT_COLUMNS, EXPORT_MAPPING, export_rows
from hub.testing.harness import LocalHub, process_rss_mb


class PeakMemory(threading.Thread):
    """The largest RSS each watched process reached, sampled every second."""

    def __init__(self, pids: dict[str, int]):
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {name: 0.0 for name in pids}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            for name, pid in self.pids.items():
                try:
                    self.peak[name] = max(self.peak[name], process_rss_mb(pid))
                except OSError:
                    pass


def slowest_fetch_ms(bootstrap: str, topic: str) -> float:
    """How long a fresh consumer takes to get the last record of each partition of `topic` (the slowest)."""
    slowest = 0.0
    for (name, partition), end in end_offsets(bootstrap, [topic]).items():
        if not end:
            continue
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bulk-bench", "enable.auto.commit": False,
                             "fetch.wait.max.ms": 10})
        consumer.assign([TopicPartition(name, partition, end - 1)])
        started = time.monotonic()
        while not [m for m in consumer.consume(1, timeout=0.05) if not m.error()]:
            if time.monotonic() - started > 60:
                break
        slowest = max(slowest, (time.monotonic() - started) * 1000)
        consumer.close()
    return slowest


def run(command: list[str], env: dict, timeout_s: float) -> tuple[str, float]:
    """A `hub` command, its progress shown as it goes (stderr passes through); its stdout and duration."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "hub", *command], env=env, stdout=subprocess.PIPE, text=True,
                          timeout=timeout_s)
    if done.returncode:
        raise SystemExit(f"hub {command[0]} failed ({done.returncode}): {done.stdout}")
    print(done.stdout.strip(), flush=True)
    return done.stdout, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis-url", help="a running Redis (default: embedded)")
    parser.add_argument("--timeout-s", type=float, default=6 * 3600, help="give up following after this long")
    parser.add_argument("--keep", type=Path, help="keep the CSV and the exports in this folder")
    parser.add_argument("--load-only", action="store_true", help="no worker: load, then time the raw fetches")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="hub-bulk-"))
    work.mkdir(parents=True, exist_ok=True)
    pipeline = load_pipeline(None)
    export_csv, mapping = work / "crm-export.csv", work / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(EXPORT_MAPPING))
    started = time.monotonic()
    with open(export_csv, "w", newline="") as out:
        writer = csv.DictWriter(out, EXPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(export_rows(args.records, seed=args.seed))
    generate_s = time.monotonic() - started
    print(f"generated {args.records:,} rows ({export_csv.stat().st_size / 2**20:,.0f} MiB) in {generate_s:.1f} s "
          f"({args.records / generate_s:,.0f} rows/s)", flush=True)

    hub = LocalHub(pipeline, work / "hub", redis_url=args.redis_url)
    try:
        hub.start()
        workers = [] if args.load_only else [hub.worker() for _ in range(args.workers)]
        pids = {f"worker{i}": w.process.pid for i, w in enumerate(workers)}
        pids["broker"] = hub.broker.process.pid
        if hub.redis is not None:
            pids["redis"] = hub.redis.client.pid
        memory = PeakMemory(pids)
        memory.start()
        env = {**os.environ, "HUB_KAFKA__BOOTSTRAP_SERVERS": hub.bootstrap, "HUB_REDIS__URL": hub.redis_url,
               "HUB_PII_KEY": hub.pii_key}  # hub export opens what the workers sealed

        follow = [] if args.load_only else ["--follow", "--timeout", str(args.timeout_s)]
        loaded, load_s = run(["load", str(export_csv), "--source", "crm", "--mapping", str(mapping), *follow], env,
                             args.timeout_s + 3600)
        raw_fetch_ms = slowest_fetch_ms(hub.bootstrap, "raw.crm")
        print(f"slowest fetch of the end of a raw.crm partition after the load: {raw_fetch_ms:,.0f} ms", flush=True)
        first = loaded.splitlines()[0]
        load_only_s = float(first.rsplit(" in ", 1)[1].split(" s ", 1)[0])
        per_batch = float(first.split(", ")[-1].split(" records per batch")[0].replace(",", "")) \
            if "records per batch" in first else None
        if args.load_only:
            memory.done.set()
            memory.join()
            result = {"records": args.records, "generate_s": round(generate_s, 1), "load_s": round(load_only_s, 1),
                      "load_per_s": round(args.records / load_only_s), "records_per_batch": per_batch,
                      "raw_fetch_ms": round(raw_fetch_ms, 1),
                      "peak_rss_mb": {name: round(mb) for name, mb in memory.peak.items()}}
            print(f"{args.records:,} records loaded in {load_only_s:.1f} s ({result['load_per_s']:,}/s, "
                  f"{per_batch:,.0f} records per batch); slowest raw fetch after it {raw_fetch_ms:,.0f} ms; "
                  f"peak RSS MB {result['peak_rss_mb']}")
            print(json.dumps(result))
            return
        follow_s = float(loaded.split("within ")[1].split(" s")[0])
        exported, export_jsonl_s = run(["export", str(work / "golden.jsonl")], env, args.timeout_s)
        _, export_parquet_s = run(["export", str(work / "golden.parquet"), "--all-targets"], env, args.timeout_s)
        golden = int(exported.split("exported ")[1].split(" ")[0])
        memory.done.set()
        memory.join()
        result = {
            "records": args.records, "workers": args.workers, "generate_s": round(generate_s, 1),
            "load_s": round(load_only_s, 1), "load_per_s": round(args.records / load_only_s),
            "records_per_batch": per_batch, "raw_fetch_ms": round(raw_fetch_ms, 1),
            "mastered_after_load_s": round(follow_s, 1), "mastered_per_s": round(args.records / (load_only_s + follow_s)),
            "golden_records": golden, "export_jsonl_s": round(export_jsonl_s, 1),
            "export_parquet_s": round(export_parquet_s, 1),
            "jsonl_mib": round((work / "golden.jsonl").stat().st_size / 2**20, 1),
            "parquet_mib": round((work / "golden.parquet").stat().st_size / 2**20, 1),
            "peak_rss_mb": {name: round(mb) for name, mb in memory.peak.items()},
        }
        print(f"{args.records:,} records: loaded in {load_only_s:.1f} s, mastered {follow_s:.1f} s after the load "
              f"({result['mastered_per_s']:,}/s overall), {golden:,} golden records; exported in "
              f"{export_jsonl_s:.1f} s (JSONL, {result['jsonl_mib']} MiB) and {export_parquet_s:.1f} s (Parquet with "
              f"every target's slice, {result['parquet_mib']} MiB); peak RSS MB {result['peak_rss_mb']}")
        print(json.dumps(result))
    finally:
        hub.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
