"""What a worker that has nothing to do costs: its own CPU and the embedded broker's.

A consumer that finds nothing sends its next fetch at once, and the embedded broker answers a fetch with
nothing to give only when its wait (`fetch.wait.max.ms`) expires: an idle consumer is a fetch per wait,
each paid for by the broker. One broker, one worker at a time (the fused engine), no events; per run the
broker's and the worker's share of a core over `--seconds`, once the worker has settled. The variants,
in turn (the order reversed every other round):

  as-is       the settings as they are
  agents-10   the Faust agents (erasure, steward, recompute) at the source consumer's 10 ms wait
              (HUB_KAFKA__QUIET_FETCH_WAIT_MS=10: the worker before "Quiet topics", docs/performance.md)
  all-100     every consumer at 100 ms (HUB_KAFKA__FETCH_WAIT_MS=100 too): what the source consumer's own
              polling costs, which its 10 ms wait buys latency with

    python benchmarks/idle_worker.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.config import load_pipeline  # noqa: E402
from hub.testing.harness import LocalHub, process_cpu_s  # noqa: E402

VARIANTS = {"as-is": {}, "agents-10": {"HUB_KAFKA__QUIET_FETCH_WAIT_MS": "10"},
            "all-100": {"HUB_KAFKA__FETCH_WAIT_MS": "100", "HUB_KAFKA__QUIET_FETCH_WAIT_MS": "100"}}


def shares(pids: dict[str, int], seconds: float) -> dict[str, float]:
    before, started = {name: process_cpu_s(pid) for name, pid in pids.items()}, time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return {name: round((process_cpu_s(pid) - before[name]) / elapsed, 3) for name, pid in pids.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured per run")
    parser.add_argument("--settle", type=float, default=10.0, help="after the worker is ready, before measuring")
    parser.add_argument("--rounds", type=int, default=2, help="each variant runs once per round")
    args = parser.parse_args()
    runs = []
    with LocalHub(load_pipeline(None), Path(tempfile.mkdtemp(prefix="hub-idle-"))) as hub:
        broker = hub.broker.process.pid
        time.sleep(2)
        alone = shares({"broker": broker}, args.seconds)["broker"]
        print(f"no worker     broker {alone:.3f} of a core", flush=True)
        for round_ in range(args.rounds):
            names = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
            for name in names:
                worker = hub.worker(env={"HUB_ENGINE": "fused", **VARIANTS[name]})
                try:
                    time.sleep(args.settle)
                    measured = shares({"broker": broker, "worker": worker.process.pid}, args.seconds)
                finally:
                    worker.stop()
                runs.append({"variant": name, **measured})
                print(f"{name:12}  broker {measured['broker']:.3f}, worker {measured['worker']:.3f} of a core",
                      flush=True)
                time.sleep(2)
    mean = {name: {who: round(sum(r[who] for r in runs if r["variant"] == name) / args.rounds, 3)
                   for who in ("broker", "worker")} for name in VARIANTS}
    print(json.dumps({"seconds": args.seconds, "rounds": args.rounds, "broker_alone": alone, "mean": mean,
                      "runs": runs}))


if __name__ == "__main__":
    main()
