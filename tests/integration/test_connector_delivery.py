"""Target connectors on the real broker: a webhook on loopback with injected
failures (retries, then the dead-letter topic), a file, another Kafka topic
and the Redis lookup cache; offsets committed only after delivery, so a
restarted connector neither loses nor repeats a record."""

from __future__ import annotations

import threading
import time
import urllib.request
from contextlib import contextmanager

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from hub import metrics
from hub.config import ConnectorConfig, PipelineConfig
from hub.connectors.embedded import free_port
from hub.connectors.kafka import ensure_topics
from hub.connectors.lookup_cache import LookupCache
from hub.connectors.runner import ConnectorFailed, SinkConnector, run_all
from hub.records import ERROR_OFFSET, ERROR_REASON, ERROR_STAGE, ERROR_TOPIC, REASON_HEADER
from hub.testing.harness import LocalHub, WebhookRecorder, wait_caught_up

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, records) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 2})
    for key, value, headers in records:
        producer.produce(topic, value, key, headers=headers or None)
    assert producer.flush(30) == 0


def projections(n: int, start: int = 0):
    return [(f"G{i}".encode(), orjson.dumps({"golden_id": f"G{i}", "given_name": f"N{i}"}), None)
            for i in range(start, start + n)]


def withdrawn(*keys: str, reason: bytes = b"consent_revoked"):
    return [(k.encode(), None, [(REASON_HEADER, reason)]) for k in keys]


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(seen) < expected:
        seen += [m for m in consumer.consume(500, timeout=0.2) if not m.error()]
    consumer.consume(500, timeout=0.5)  # and nothing more than expected
    consumer.close()
    return seen


@contextmanager
def running(connector):
    stop = threading.Event()
    outcome: dict = {}

    def run():
        try:
            outcome["report"] = connector.run(stop)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        stop.set()
        thread.join(30)


def wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met")


def webhook(name: str, url: str, **settings) -> ConnectorConfig:
    return ConnectorConfig(name=name, target="pos", url=url,
                           **{"errors.retry.delay.ms": 20, "errors.retry.delay.max.ms": 200, **settings})


def test_webhook_retries_after_failures_and_loses_nothing(local_hub, pipeline):
    produce(local_hub.bootstrap, "mastered.pos", projections(40) + withdrawn("G1", "G2", "G3"))
    server = WebhookRecorder(fail_first=3, status=500)
    retries = metrics.CONNECTOR_RETRIES.labels("pos-hook")
    retries_before = retries._value.get()
    connector = SinkConnector(webhook("pos-hook", server.url, **{"batch.size": 10, "errors.retries": 5}),
                              pipeline, local_hub.bootstrap, session_timeout_ms=2000)
    try:
        with running(connector):
            wait_for(lambda: len(server.records()) >= 43)
            # committed at the end of the topic: it has delivered all it ever will, not merely paused
            wait_caught_up(local_hub.bootstrap, "connect-pos-hook", ["mastered.pos"])
        records = server.records()
        assert len(records) == 43 and len({r["idempotency_key"] for r in records}) == 43
        assert {r["key"] for r in records if r["op"] == "upsert"} == {f"G{i}" for i in range(40)}
        deletes = [r for r in records if r["op"] == "delete"]
        assert sorted(r["key"] for r in deletes) == ["G1", "G2", "G3"]
        assert {r["reason"] for r in deletes} == {"consent_revoked"}
        assert retries._value.get() - retries_before == 3
        assert connector.report.delivered == 43 and connector.report.dead_lettered == 0
        for headers, body in server.requests:
            assert headers["Idempotency-Key"] and headers["Content-Type"] == "application/json"

        # offsets were committed after delivery: a restart sends only what is new
        produce(local_hub.bootstrap, "mastered.pos", projections(1, start=100))
        again = WebhookRecorder()
        try:
            restarted = SinkConnector(webhook("pos-hook", again.url), pipeline, local_hub.bootstrap,
                                      session_timeout_ms=2000)
            with running(restarted):
                wait_for(lambda: len(again.records()) >= 1)
                wait_caught_up(local_hub.bootstrap, "connect-pos-hook", ["mastered.pos"])
            assert [r["key"] for r in again.records()] == ["G100"]
        finally:
            again.close()
    finally:
        server.close()


def test_an_endpoint_that_never_recovers_sends_records_to_the_dlq(local_hub, pipeline):
    config = webhook("pos-down", "http://placeholder", **{"errors.retries": 2})
    ensure_topics(local_hub.bootstrap, [config.dlq_topic], 1)
    produce(local_hub.bootstrap, "mastered.pos", projections(4) + withdrawn("G0", reason=b"erased"))
    server = WebhookRecorder(fail_first=10**9, status=503)
    config = webhook("pos-down", server.url, **{"errors.retries": 2})
    connector = SinkConnector(config, pipeline, local_hub.bootstrap, session_timeout_ms=2000)
    try:
        with running(connector):
            dead = read_topic(local_hub.bootstrap, "dlq.connect.pos-down", 5)
            assert len(dead) == 5
            assert connector.report.dead_lettered == 5
            # the connector moved on: once the endpoint recovers, new records arrive, the old ones do not
            server.recover()
            produce(local_hub.bootstrap, "mastered.pos", projections(1, start=50))
            wait_for(lambda: len(server.records()) >= 1)
            wait_caught_up(local_hub.bootstrap, "connect-pos-down", ["mastered.pos"])
        assert [r["key"] for r in server.records()] == ["G50"]
    finally:
        server.close()
    originals = {(m.key(), m.value()) for m in dead}
    assert originals == {(k, v) for k, v, _ in projections(4) + withdrawn("G0")}
    for message in dead:
        headers = dict(message.headers())
        assert headers[ERROR_STAGE] == b"connector:pos-down"
        assert headers[ERROR_REASON] == b"delivery_failed"
        assert b"503" in headers["hub.error.exception"]
        assert headers[ERROR_TOPIC] == b"mastered.pos" and int(headers[ERROR_OFFSET]) >= 0
        if message.value() is None:
            assert headers[REASON_HEADER] == b"erased"  # the record's own headers are kept


def test_one_record_the_target_refuses_goes_to_the_dlq_alone(local_hub, pipeline):
    config = webhook("pos-poison", "http://placeholder", **{"errors.retries": 1})
    ensure_topics(local_hub.bootstrap, [config.dlq_topic], 1)
    produce(local_hub.bootstrap, "mastered.pos", projections(30))
    server = WebhookRecorder(reject=lambda body: any(r["key"] == "G13" for r in body["records"]))
    connector = SinkConnector(webhook("pos-poison", server.url, **{"errors.retries": 1, "batch.size": 30}),
                              pipeline, local_hub.bootstrap, session_timeout_ms=2000)
    try:
        with running(connector):
            dead = read_topic(local_hub.bootstrap, config.dlq_topic, 1)
            wait_for(lambda: len(server.records()) >= 29)
            wait_caught_up(local_hub.bootstrap, "connect-pos-poison", ["mastered.pos"])
    finally:
        server.close()
    assert [m.key() for m in dead] == [b"G13"] and b"422" in dict(dead[0].headers())["hub.error.exception"]
    assert sorted(r["key"] for r in server.records()) == sorted(f"G{i}" for i in range(30) if i != 13)
    assert connector.report.dead_lettered == 1 and connector.report.delivered == 29


def test_errors_tolerance_none_stops_without_committing(local_hub, pipeline):
    produce(local_hub.bootstrap, "mastered.pos", projections(5))
    failing = WebhookRecorder(fail_first=10**9)
    strict = {"errors.tolerance": "none", "errors.retries": 1}
    try:
        connector = SinkConnector(webhook("pos-strict", failing.url, **strict), pipeline, local_hub.bootstrap,
                                  session_timeout_ms=2000)
        with pytest.raises(ConnectorFailed, match="HTTP 500"):
            connector.run(threading.Event())
    finally:
        failing.close()
    healthy = WebhookRecorder()
    try:
        connector = SinkConnector(webhook("pos-strict", healthy.url, **strict), pipeline, local_hub.bootstrap,
                                  session_timeout_ms=2000)
        with running(connector):
            wait_for(lambda: len(healthy.records()) >= 5)
            wait_caught_up(local_hub.bootstrap, "connect-pos-strict", ["mastered.pos"])
        assert sorted(r["key"] for r in healthy.records()) == [f"G{i}" for i in range(5)]
    finally:
        healthy.close()


def test_file_kafka_and_lookup_cache_targets(tmp_path):
    out = tmp_path / "exports" / "pos.jsonl"
    pipeline = PipelineConfig.model_validate({
        "sources": [{"name": "pos"}],
        "targets": [{"name": "pos_lookup", "key": "loyalty_id", "fields": ["given_name", "loyalty_id"]}],
    })
    with LocalHub(pipeline, tmp_path / "hub") as hub:
        connectors = [
            {"name": "pos-file", "target": "pos_lookup", "url": out.as_uri()},
            {"name": "pos-copy", "target": "pos_lookup", "url": f"kafka://{hub.bootstrap}/export.pos"},
            {"name": "pos-cache", "target": "pos_lookup", "url": hub.redis_url, "options": {"prefix": "pos:"}},
        ]
        pipeline = PipelineConfig.model_validate({**pipeline.model_dump(by_alias=True), "connectors": connectors})
        ensure_topics(hub.bootstrap, ["export.pos"], 2)
        cards = [(f"L{i:04d}".encode(), orjson.dumps({"golden_id": f"G{i}", "loyalty_id": f"L{i:04d}",
                                                     "given_name": f"N{i}"}), None) for i in range(20)]
        produce(hub.bootstrap, "mastered.pos_lookup", cards + withdrawn("L0003", reason=b"key_changed"))
        stop = threading.Event()
        thread = threading.Thread(target=run_all, args=(pipeline, hub.bootstrap, None, stop, 2000), daemon=True)
        thread.start()
        try:
            wait_for(lambda: out.exists() and len(out.read_bytes().splitlines()) >= 21)
            cache = LookupCache(hub.redis_url, prefix="pos:")
            wait_for(lambda: cache.get("L0019") is not None and cache.get("L0003") is None
                     and cache.get("L0004") is not None)
            copied = read_topic(hub.bootstrap, "export.pos", 21)
            for name in ("pos-file", "pos-copy", "pos-cache"):  # all delivered: counts below are final
                wait_caught_up(hub.bootstrap, f"connect-{name}", ["mastered.pos_lookup"])
        finally:
            stop.set()
            thread.join(30)
        lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        assert len(lines) == 21
        assert [d["key"] for d in lines if d["op"] == "delete"] == ["L0003"]
        assert {d["key"] for d in lines if d["op"] == "upsert"} == {f"L{i:04d}" for i in range(20)}
        assert orjson.loads(cache.get("L0007")) == {"golden_id": "G7", "loyalty_id": "L0007", "given_name": "N7"}
        assert len(copied) == 21 and sum(1 for m in copied if m.value() is None) == 1
        assert dict(next(m for m in copied if m.value() is None).headers())[REASON_HEADER] == b"key_changed"


def test_a_killed_connector_process_loses_nothing(local_hub, tmp_path):
    """`hub connect` killed (SIGKILL) in the middle of a stream, then started again:
    every record reaches the webhook; only the batch in flight may come twice."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    server = WebhookRecorder()
    delay = threading.Event()
    original = server.server.RequestHandlerClass.do_POST

    def slow_post(handler):
        if not delay.is_set():
            time.sleep(0.05)
        original(handler)

    server.server.RequestHandlerClass.do_POST = slow_post
    config_file = tmp_path / "hub.yaml"
    config = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "../../hub/defaults/hub.yaml")))
    config["connectors"] = [{"name": "pos-kill", "target": "pos", "url": server.url, "batch.size": 10}]
    config_file.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HUB_KAFKA__BOOTSTRAP_SERVERS": local_hub.bootstrap, "HUB_CONFIG_FILE": str(config_file),
           "HUB_KAFKA__SESSION_TIMEOUT_S": "2"}
    produce(local_hub.bootstrap, "mastered.pos", projections(300))

    metrics_port = free_port()

    def start(*extra):
        return subprocess.Popen([sys.executable, "-m", "hub", "connect", *extra], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    process = start()
    try:
        wait_for(lambda: len(server.records()) >= 60, timeout_s=60)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        at_kill = len(server.records())
        assert at_kill < 300
        delay.set()
        process = start("--metrics-port", str(metrics_port))
        wait_for(lambda: {r["key"] for r in server.records()} >= {f"G{i}" for i in range(300)}, timeout_s=90)
        # the connector process serves its own metrics for Prometheus
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        delivered = [line for line in page.splitlines()
                     if line.startswith('hub_connector_records_total{connector="pos-kill",outcome="delivered"}')]
        assert delivered and float(delivered[0].rsplit(" ", 1)[1]) > 0, delivered
    finally:
        process.terminate()
        process.wait(30)
        server.close()
    keys = [r["key"] for r in server.records()]
    assert set(keys) == {f"G{i}" for i in range(300)}
    # redelivered: at most what was consumed but not committed when killed (one batch per partition)
    assert len(keys) - 300 <= 4 * 10, len(keys) - 300
