"""Crash safety on the real broker and Redis: a worker killed with SIGKILL in
the middle of a stream, a Redis server killed and restarted from its AOF, and
the broker's connections cut for a while. Afterwards every source record is
in exactly one golden record, each contribution is the latest event of its
record, the golden topic's latest value per key is byte-identical to the
golden store, and each target's latest value per key is the projection of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time

import pytest

from hub.config import DEFAULT_ENGINE
from hub.connectors.embedded import free_port
from hub.demo import encode_event
from hub.projection import encode, project, target_key
from hub.schemas import GOLDEN, codec
from hub.store.redis import RedisStore
from hub.store.redis.keys import P, gold_key
from hub.testing.generator import generate
from hub.testing.harness import Feeder, LocalHub, RedisServer, Watcher, wait_caught_up, worker_input_topics
from hub.topic_seal import open_value

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PERSONS = 400
ACTIVITY = f"{P}activity"  # the golden ids the store holds (what golden_count counts)


def _stream():
    events = generate(PERSONS, seed=21, start_ms=int(time.time() * 1000) - 86_400_000, invalid_share=0.01)
    latest: dict[str, dict | None] = {}  # source record -> latest event (None: deleted)
    for ev in events:
        if ev.topic.startswith("raw.") and ev.value is not None:
            key = ev.key.decode()
            held = latest.get(key)
            if held is None or ev.value["event_time"] >= held["event_time"]:
                latest[key] = ev.value
    return events, latest


def _feed(feeder: Feeder, events, start: int = 0, stop: int | None = None) -> None:
    for ev in events[start:stop]:
        feeder.send(ev.topic, ev.key, ev.raw if ev.raw is not None else encode_event(ev.topic, ev.value))
    feeder.flush()


def _first_half_running(hub, pipeline, events):
    """A worker with the first half of the stream fed and a quarter of the customers mastered:
    the moment an outage is staged."""
    worker = hub.worker()
    watcher = Watcher(hub.bootstrap, pipeline.all_topics())
    feeder = Feeder(hub.bootstrap)
    _feed(feeder, events, 0, len(events) // 2)
    watcher.wait_until(lambda v: v.counts[pipeline.topics.golden] >= 0.25 * PERSONS, timeout_s=60, quiet_s=0)
    return worker, watcher, feeder


def _quiescent(watcher: Watcher, pipeline, raw_count: int, timeout_s: float = 150, engine: str = DEFAULT_ENGINE):
    """Every raw event ingested, the workers' group at the end of every topic
    it reads (a restarted worker may sit quiet a while before it catches up),
    nothing new on any topic for a while, and the watcher at the end of every
    topic: after an outage its own connection may still be backing off while
    the workers' are not, and a quiet spell then is only a stale view. (The
    fused engine writes no canonical records: its group at the end of the
    source topics says it.)"""
    dlqs = [s.dlq_topic for s in pipeline.sources]
    if engine == "staged":
        watcher.wait_until(lambda v: v.counts[pipeline.topics.canonical] + sum(v.counts[t] for t in dlqs) >= raw_count,
                           timeout_s=timeout_s, quiet_s=0)
    wait_caught_up(watcher.bootstrap, "hub", worker_input_topics(pipeline, engine), timeout_s)
    watcher.wait_until(lambda v: True, timeout_s=timeout_s, quiet_s=2.0)
    return watcher.read_to_end(timeout_s=timeout_s)


def _describe(store, view, pipeline, gids: list[str], target_topic: str | None = None) -> str:
    """Where each of these golden ids stands, for a failure message."""
    lines = []
    for gid in gids:
        fields = sorted(f.decode() for f in store.client.hkeys(gold_key(gid)))
        lines.append(f"{gid}: store fields {fields}, activity {store.client.zscore(ACTIVITY, gid)}, "
                     f"golden topic {view.history[pipeline.topics.golden].get(gid)}"
                     + (f", target {view.history[target_topic].get(gid)}" if target_topic else ""))
    return "; ".join(lines)


def check_converged(view, pipeline, redis_url: str, latest: dict) -> dict:
    """The invariants; returns the figures."""
    live = view.live(pipeline.topics.golden)
    store = RedisStore.from_url(redis_url)  # the workers' keyring (HUB_PII_KEY): it opens the golden topic too
    stored = {}
    for gid in live:
        stored[gid] = asyncio.run(store.golden(gid))
    # the golden topic converges on exactly what the store holds
    missing = sorted(gid for gid in live if stored[gid] is None)
    assert not missing, f"{len(missing)} golden on the topic, not in the store: " + \
        _describe(store, view, pipeline, missing[:5])
    # opened: sealing uses a random nonce, the same record is sealed in other bytes each time
    golden_codec = codec(GOLDEN)
    mismatched = [gid for gid, value in live.items() if golden_codec.encode(stored[gid]) != golden_codec.encode(
        open_value(store.keyring, GOLDEN, value, pipeline.topics.golden, gid))]
    assert not mismatched, f"{len(mismatched)} golden records differ from the store"
    active = {g.decode() for g in store.client.zrange(ACTIVITY, 0, -1)}
    assert active == live.keys(), _describe(store, view, pipeline, sorted(active ^ live.keys()))
    # every live source record in exactly one golden record
    owners: dict[str, list[str]] = {}
    for gid, golden in stored.items():
        for member in golden["members"]:
            owners.setdefault(member, []).append(gid)
    duplicated = sorted(m for m, gids in owners.items() if len(gids) > 1)
    expected = {k for k, v in latest.items() if v is not None and v.get("op", "upsert") != "delete"}
    lost = sorted(expected - owners.keys())
    assert not duplicated, f"in two golden records: {duplicated[:5]}"
    assert not lost, f"not in any golden record: {lost[:5]}"
    still = sorted(owners.keys() - expected)
    assert not still, f"{len(still)} deleted records still contribute: {still[:5]}"
    # each contribution is the latest event of its source record
    states = asyncio.run(store.load(sorted(live)))
    stale = [(m, gid, c["record"]["event_time"], latest[m]["event_time"]) for gid, state in states.items()
             for m, c in state.contributions.items() if c["record"]["event_time"] != latest[m]["event_time"]]
    assert not stale, f"{len(stale)} contributions are not their record's latest event: {stale[:5]}"
    # each target's latest value per key is the projection of the golden store
    for target in pipeline.targets:
        expected_values = {target_key(g, target): encode(project(g, target), target) for g in stored.values()}
        got = view.live(target.output_topic)
        wrong = [k for k, v in got.items() if expected_values.get(k) != v]
        assert not wrong, f"{target.name}: {len(wrong)} records differ from the golden store: " + \
            _describe(store, view, pipeline, wrong[:5], target.output_topic)
    return {"golden": len(live), "records": len(owners), "lost": len(lost), "duplicated": len(duplicated)}


@pytest.mark.parametrize("engine", ["staged", "fused"])
def test_worker_killed_mid_stream_loses_and_duplicates_nothing(local_hub, feeder, pipeline, engine):
    """With the fused engine, the killed worker's golden-record leases are still held when it comes back
    (a new process, another owner): it waits them out (hub.dataflow.LEASE_TTL_MS)."""
    events, latest = _stream()
    raw_count = sum(1 for ev in events if ev.topic.startswith("raw."))
    worker = local_hub.worker(env={"HUB_ENGINE": engine})
    watcher = Watcher(local_hub.bootstrap, pipeline.all_topics())
    kills = 0
    _feed(feeder, events, 0, len(events) // 2)
    for fraction in (0.25, 0.5):  # two kills: one mid-feed, one mid-processing
        watcher.wait_until(lambda v: v.counts[pipeline.topics.golden] >= fraction * PERSONS, timeout_s=60, quiet_s=0)
        worker.kill()
        kills += 1
        if fraction == 0.25:
            _feed(feeder, events, len(events) // 2)  # arrives while no worker runs
        worker.start()
    view = _quiescent(watcher, pipeline, raw_count, engine=engine)
    assert worker.process.poll() is None
    figures = check_converged(view, pipeline, local_hub.redis_url, latest)
    print(f"crash ({engine}): fed {len(events)} events ({raw_count} raw), {kills} kill -9, {figures}")
    watcher.close()


def test_redis_killed_and_restarted_from_aof(pipeline, tmp_path):
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode:
        pytest.skip("no redis-server binary")
    server = RedisServer(tmp_path).start()
    events, latest = _stream()
    raw_count = sum(1 for ev in events if ev.topic.startswith("raw."))
    try:
        with LocalHub(pipeline, tmp_path / "hub", redis_url=server.url) as hub:
            worker, watcher, feeder = _first_half_running(hub, pipeline, events)
            server.kill()
            _feed(feeder, events, len(events) // 2)
            time.sleep(4)  # the worker meets the outage: it must retry, not exit
            assert worker.process.poll() is None
            assert worker.metric("hub_stage_retries_total") > 0 or worker.metric("hub_redis_errors_total") > 0
            server.start()
            view = _quiescent(watcher, pipeline, raw_count)
            assert worker.process.poll() is None
            figures = check_converged(view, pipeline, server.url, latest)
            retries = worker.metric("hub_stage_retries_total")
            print(f"redis restart: fed {len(events)}, retries {retries}, {figures}")
            assert retries > 0
            assert b"retrying" in worker.log_path.read_bytes()
            watcher.close()
    finally:
        server.stop()


class CuttableProxy:
    """A TCP proxy (threads) in front of the broker that can drop every connection and refuse new ones."""

    def __init__(self, upstream_port: int, port: int):
        self.upstream = upstream_port
        self.port = port
        self.open = True
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
                s.close()
        self.sockets = []

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_broker_connections_cut_for_a_while(pipeline, tmp_path):
    from hub.connectors.embedded import EmbeddedBroker

    events, latest = _stream()
    raw_count = sum(1 for ev in events if ev.topic.startswith("raw."))
    hub = LocalHub(pipeline, tmp_path)
    proxy_port = free_port()
    hub.broker = EmbeddedBroker(log_path=tmp_path / "broker.log", advertised_port=proxy_port)
    proxy = CuttableProxy(hub.broker.port, proxy_port)
    with hub:
        worker, watcher, feeder = _first_half_running(hub, pipeline, events)
        proxy.cut()
        time.sleep(8)  # longer than the group session timeout (2 s here)
        assert worker.process.poll() is None
        assert worker.metric("hub_broker_errors_total") > 0  # the outage is reported, and the worker waits
        proxy.restore()
        _feed(feeder, events, len(events) // 2)
        view = _quiescent(watcher, pipeline, raw_count)
        assert worker.process.poll() is None
        figures = check_converged(view, pipeline, hub.redis_url, latest)
        print(f"broker cut: fed {len(events)}, {figures}")
        watcher.close()
    proxy.close()
