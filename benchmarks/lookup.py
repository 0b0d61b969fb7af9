"""Lookup API latency at a steady request rate, from a second process.

Starts the embedded broker and Redis and one worker (`hub run`), loads
generated customers through the whole pipeline, then a second process (this
script with --client) sends a steady, open-loop stream of lookups on loopback
(a request is sent at its scheduled time whether or not earlier ones have
answered, and its latency counts from that time, so a stall is not hidden):
a mix of golden id, loyalty id, e-mail, phone and source-record lookups, some
for customers who do not exist. `--server standalone` (default) serves them
from `hub lookup-server` beside the worker; `--server worker` from the
worker's own web server, which shares its event loop with the pipeline. Reports p50/p99 latency and requests/s; the
last line is one JSON object.

    python benchmarks/lookup.py --persons 2000 --rate 1000 --seconds 20 [--server worker]
    python benchmarks/lookup.py --url http://127.0.0.1:6066 --token T --target contact_center   # a running hub
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

TARGET = "contact_center"


def queries_from_redis(redis_url: str, target: str, limit: int = 20000, seed: int = 5) -> list[str]:
    """Query strings for customers the hub holds, a few for nobody."""
    from hub.store.redis import RedisStore

    rng = random.Random(seed)
    out = []
    for golden in RedisStore.from_url(redis_url).all_golden():  # records are sealed: the store opens them
        choices = [{"golden_id": golden["golden_id"]}]
        source, _, source_id = rng.choice(golden["members"]).partition(":")
        choices.append({"source": source, "source_id": source_id})
        if golden.get("loyalty_id"):
            choices.append({"loyalty_id": golden["loyalty_id"]})
        if golden["emails"]:
            choices.append({"email": rng.choice(golden["emails"])["address"].upper()})
        if golden["phones"]:
            number = rng.choice(golden["phones"])["number"]
            choices.append({"phone": f"{number[:3]} {number[3:7]} {number[7:]}"})
        out.extend(urllib.parse.urlencode(c) for c in choices)
        if len(out) >= limit:
            break
    rng.shuffle(out)
    unknown = [urllib.parse.urlencode({"email": f"nobody{i}@example.com"}) for i in range(max(1, len(out) // 20))]
    return [f"/targets/{target}/lookup?{q}" for q in out + unknown]


async def _client(base_url: str, token: str, paths: list[str], rate: float, seconds: float, warmup_s: float,
                  connections: int = 64) -> dict:
    """Open loop over a pool of keep-alive connections, with a minimal HTTP/1.1
    client on asyncio streams: a full client library costs more CPU per request
    than the server under test, and on a shared machine that would be measured."""
    from hub.testing.harness import percentile

    url = urllib.parse.urlsplit(base_url)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    kinds: dict[str, int] = {}
    queue: asyncio.Queue = asyncio.Queue()
    request_tail = f"Host: {url.netloc}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        while True:
            item = await queue.get()
            if item is None:
                writer.close()
                return
            path, due, measured = item
            writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + request_tail)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12].decode()
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            if measured:
                latencies.append((time.perf_counter() - due) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
                kind = path.split("?", 1)[1].split("=", 1)[0]
                kinds[kind] = kinds.get(kind, 0) + 1

    pool = [asyncio.ensure_future(connection()) for _ in range(connections)]
    total = int(rate * (seconds + warmup_s))
    warm = int(rate * warmup_s)
    start = time.perf_counter() + 0.5
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((paths[i % len(paths)], due, i >= warm))
    for _ in pool:
        queue.put_nowait(None)
    await asyncio.gather(*pool)
    elapsed = time.perf_counter() - (start + warm / rate)
    return {"requests": len(latencies), "elapsed_s": round(elapsed, 3),
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 0.5), 3), "p90_ms": round(percentile(latencies, 0.9), 3),
            "p99_ms": round(percentile(latencies, 0.99), 3), "max_ms": round(max(latencies), 3),
            "statuses": statuses, "kinds": kinds}


def run_client(args) -> int:
    paths = Path(args.paths_file).read_text().splitlines()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_client(args.url, args.token, paths, args.rate, args.seconds, args.warmup))
    print(json.dumps(result))
    return 0


def measure(url: str, token: str, paths: list[str], rate: float, seconds: float, warmup: float, workdir: Path) -> dict:
    """Run the load in a second process; its one line of output is the result."""
    paths_file = workdir / "lookup-paths.txt"
    paths_file.write_text("\n".join(paths))
    command = [sys.executable, __file__, "--client", "--url", url, f"--token={token}", "--paths-file", str(paths_file),
               "--rate", str(rate), "--seconds", str(seconds), "--warmup", str(warmup)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + warmup + 120)
    if done.returncode != 0:
        raise RuntimeError(f"client failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=2000, help="generated customers to load")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second, steady")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds at the same rate first")
    parser.add_argument("--url", help="a running worker (with --token and --redis-url); default: start a hub")
    parser.add_argument("--token", help="a token of --target")
    parser.add_argument("--target", default=TARGET)
    parser.add_argument("--server", choices=("standalone", "worker"), default="standalone",
                        help="serve lookups from `hub lookup-server` beside the worker, or from the worker itself")
    parser.add_argument("--redis-url", help="the running hub's Redis, to pick queries from")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--paths-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return run_client(args)

    workdir = Path(tempfile.mkdtemp(prefix="hub-lookup-bench-"))
    if args.url:
        paths = queries_from_redis(args.redis_url, args.target)
        result = measure(args.url, args.token, paths, args.rate, args.seconds, args.warmup, workdir)
    else:
        result = _with_local_hub(args, workdir)
    print(f"{result['requests']} lookups at {args.rate:,.0f}/s offered: {result['requests_per_s']:,.0f} requests/s, "
          f"p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms, p99 {result['p99_ms']} ms, "
          f"max {result['max_ms']} ms; statuses {result['statuses']}; kinds {result['kinds']}")
    print(json.dumps(result))
    return 0


def _with_local_hub(args, workdir: Path) -> dict:
    from hub.config import load_pipeline
    from hub.demo import encode_event, with_demo_tokens
    from hub.testing.generator import generate
    from hub.testing.harness import Feeder, LocalHub, Watcher, process_cpu_s

    pipeline, tokens = with_demo_tokens(load_pipeline(None), workdir / "hub.yaml")
    now = int(time.time() * 1000)
    events = [(e.topic, e.key, e.raw if e.raw is not None else encode_event(e.topic, e.value))
              for e in generate(args.persons, seed=13, start_ms=now - 86_400_000)]
    raw = sum(1 for t, _, _ in events if t.startswith("raw."))
    with LocalHub(pipeline, workdir) as hub:
        os.environ.setdefault("HUB_PII_KEY", hub.pii_key)  # queries_from_redis opens the workers' sealed records
        worker = hub.worker(config_file=workdir / "hub.yaml")
        watcher = Watcher(hub.bootstrap, pipeline.all_topics(), keep_values=set())
        feeder = Feeder(hub.bootstrap)
        for topic, key, value in events:
            feeder.send(topic, key, value)
        feeder.flush()
        started = time.monotonic()
        accounted = lambda v: v.counts[pipeline.topics.canonical] + sum(v.counts[s.dlq_topic] for s in pipeline.sources)  # noqa: E731
        while accounted(watcher.view) < raw or time.monotonic() - watcher.view.last_arrival < 3.0:
            watcher.poll(0.2)
            if time.monotonic() - started > 600:
                raise RuntimeError("the pipeline did not finish loading within 600 s")
        watcher.close()
        paths = queries_from_redis(hub.redis_url, args.target)
        print(f"loaded {raw} raw events; {len(paths)} distinct lookups", file=sys.stderr)
        if args.server == "worker":
            cpu0 = process_cpu_s(worker.process.pid)
            result = measure(worker.base_url, tokens.targets[args.target], paths, args.rate, args.seconds, args.warmup,
                             workdir)
            cpu = process_cpu_s(worker.process.pid) - cpu0
            result["server_p99_bucket_s"] = _server_p99_bucket(worker.get("/metrics")[1])
        else:
            server = LookupServer(hub.redis_url, workdir / "hub.yaml", workdir)
            try:
                cpu0 = process_cpu_s(server.process.pid)
                result = measure(server.base_url, tokens.targets[args.target], paths, args.rate, args.seconds, args.warmup,
                                 workdir)
                cpu = process_cpu_s(server.process.pid) - cpu0
                result["server_p99_bucket_s"] = _server_p99_bucket(server.get("/metrics"))
            finally:
                server.stop()
        # CPU the serving process spent per request (warm-up included): what a busy machine does not change
        result["server_cpu_us_per_request"] = round(cpu / (args.rate * (args.seconds + args.warmup)) * 1e6, 1)
        result["load_average_1m"] = os.getloadavg()[0]
        result["server"] = args.server
    return result


class LookupServer:
    """`hub lookup-server` in a child process, on the hub's Redis."""

    def __init__(self, redis_url: str, config_file: Path, workdir: Path):
        import urllib.request

        from hub.connectors.embedded import free_port

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HUB_REDIS__URL": redis_url}
        self.log = open(workdir / "lookup-server.log", "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "hub", "lookup-server", "--port", str(self.port),
                                         "--config", str(config_file)], env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"lookup server did not start; see {workdir / 'lookup-server.log'}")
                time.sleep(0.1)

    def get(self, path: str) -> bytes:
        import urllib.request

        with urllib.request.urlopen(self.base_url + path, timeout=5) as response:
            return response.read()

    def stop(self) -> None:
        from hub.connectors.embedded import stop_process

        stop_process(self.process, grace_s=10)
        self.log.close()


def _server_p99_bucket(body: bytes) -> float | None:
    """The upper bound of the server-side histogram bucket holding the 99th percentile."""
    buckets: dict[float, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("hub_lookup_duration_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            value = float(line.rsplit(" ", 1)[1])
            key = float("inf") if bound == "+Inf" else float(bound)
            buckets[key] = buckets.get(key, 0.0) + value
    if not buckets:
        return None
    total = buckets[float("inf")]
    for bound in sorted(buckets):
        if buckets[bound] >= 0.99 * total:
            return bound
    return None


if __name__ == "__main__":
    sys.exit(main())
