"""Does a Redis AOF policy keep acknowledged writes through a SIGKILL?

The hub's Redis is its system of record for golden ids: a write Redis
acknowledged lets the worker deliver outputs and commit offsets, so a write
lost afterwards is never redone. This starts a redis-server of its own per
trial (AOF on, the given `appendfsync`), writes as fast as one client can
while another thread keeps the disk busy with fsyncs (a busy disk is when a
background AOF fsync is slow), kills Redis with SIGKILL, restarts it from its
AOF and compares the last acknowledged counter value with the recovered one.

With `everysec`, Redis postpones writing its AOF buffer while a background
fsync is still running (up to 2 s) yet still answers clients, so a process
crash can lose writes it acknowledged. With `always` it writes and fsyncs
before it answers.

    python benchmarks/aof_durability.py --appendfsync everysec --trials 20
    python benchmarks/aof_durability.py --appendfsync always --trials 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import redis

from hub.testing.harness import RedisServer


def _busy_disk(path: Path, stop: threading.Event) -> None:
    with open(path, "wb") as hog:
        while not stop.is_set():
            hog.write(b"z" * (8 << 20))
            hog.flush()
            os.fsync(hog.fileno())


def trial(policy: str, seconds: float) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="hub-aof-"))
    server = RedisServer(directory, policy).start()
    stop = threading.Event()
    hog = threading.Thread(target=_busy_disk, args=(directory / "hog", stop))
    try:
        client = redis.Redis(port=server.port)
        hog.start()
        acknowledged, payload = 0, b"x" * 2000
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            acknowledged = client.incr("counter")
            client.set(f"value:{acknowledged}", payload)
        pending_fsync = client.info("persistence").get("aof_pending_bio_fsync")
        server.kill()
        stop.set()
        hog.join()
        (directory / "hog").unlink()
        server.start()
        recovered = int(redis.Redis(port=server.port).get("counter") or 0)
        return {"acknowledged": acknowledged, "recovered": recovered, "lost": acknowledged - recovered,
                "fsync_pending_at_kill": pending_fsync}
    finally:
        stop.set()
        if hog.is_alive():
            hog.join()
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appendfsync", choices=["everysec", "always", "no"], default="everysec")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=1.5, help="writing time before each kill")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("needs redis-server on PATH")
        return 2
    results = []
    for number in range(args.trials):
        # kill at different points of the once-a-second fsync cycle
        result = trial(args.appendfsync, args.seconds + (number % 7) * 0.13)
        results.append(result)
        print(f"trial {number:>2}: acknowledged {result['acknowledged']:>6}, recovered {result['recovered']:>6}, "
              f"lost {result['lost']:>5} (fsync pending at kill: {result['fsync_pending_at_kill']})", flush=True)
    lossy = [r for r in results if r["lost"] > 0]
    summary = {"appendfsync": args.appendfsync, "trials": len(results), "trials_with_loss": len(lossy),
               "acknowledged_writes_lost": sum(r["lost"] for r in lossy)}
    print(f"appendfsync {args.appendfsync}: {len(lossy)} of {len(results)} kills lost acknowledged writes "
          f"({summary['acknowledged_writes_lost']} in all)")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
