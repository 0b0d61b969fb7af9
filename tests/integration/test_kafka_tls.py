"""Kafka over TLS for real: a TLS terminator (hub.testing.tls) in front of
the embedded broker, which advertises the TLS port, so every client must
speak TLS; a CA and certificates made by the test. A worker, `hub load`,
`hub connect` (a lookup cache connector), `hub lookup-server` (an access
event per read, on audit.access) and `hub history` all run through it; a wrong CA, a certificate for another host, a missing client
certificate (mutual TLS) fail within seconds saying why. SASL: the embedded
broker negotiates SCRAM but cannot hold a user (docs/kafka-security.md), so
the test sees the SCRAM exchange reach it and fail as unknown-user."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import orjson
import pytest
import yaml

from hub.access import digest
from hub.config import KafkaSettings, load_pipeline
from hub.connectors.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from hub.connectors.kafka import ConnectFailed, check_connection, ensure_topics, read_topic
from hub.connectors.kafka_security import aiokafka_kwargs, connection
from hub.connectors.lookup_cache import LookupCache
from hub.schemas import ACCESS_EVENT, codec
from hub.testing.harness import Worker
from hub.testing.tls import TestCA, TlsProxy
from test_consent_erasure import _get

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000) - 60_000
POS_TOKEN = "pos-till-token"


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not within {timeout_s}s")


def wait_for_value(produce, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = produce()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"nothing within {timeout_s}s")


class TlsCluster:
    """The embedded broker behind a TLS terminator, with a CA of its own."""

    def __init__(self, directory, client_ca: bool = False, hosts=("127.0.0.1", "localhost")):
        self.directory = directory
        self.ca = TestCA(directory / "ca")
        self.server_cert = self.ca.issue("broker", list(hosts))
        port = free_port()
        self.broker = EmbeddedBroker(advertised_port=port, log_path=directory / "broker.log")
        self.proxy = TlsProxy(self.broker.port, self.server_cert, port=port,
                              client_ca=self.ca.path if client_ca else None, log_path=directory / "proxy.log")

    def start(self) -> "TlsCluster":
        self.broker.start()
        self.proxy.start()
        return self

    def settings(self, **extra) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.proxy.address, security_protocol="SSL",
                             ssl_ca_location=self.ca.path, **extra)

    def env(self, ca_path=None, **extra) -> dict:
        return {**os.environ, "HUB_KAFKA__BOOTSTRAP_SERVERS": self.proxy.address,
                "HUB_KAFKA__SECURITY_PROTOCOL": "SSL", "HUB_KAFKA__SSL_CA_LOCATION": str(ca_path or self.ca.path),
                "HUB_KAFKA__SESSION_TIMEOUT_S": "2", **extra}

    def stop(self) -> None:
        self.proxy.stop()
        self.broker.stop()


@pytest.fixture
def cluster(tmp_path):
    cluster = TlsCluster(tmp_path).start()
    yield cluster
    cluster.stop()


def hub_command(args: list[str], env: dict, timeout_s: float = 120, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout_s)


def test_worker_load_connector_and_history_through_tls(cluster, tmp_path):
    redis = EmbeddedRedis(tmp_path / "redis").start()
    config_file = tmp_path / "hub.yaml"
    config_file.write_text(yaml.safe_dump({
        "sources": [{"name": "crm"}],
        "targets": [{"name": "pos_lookup", "key": "loyalty_id", "purposes": ["service"],
                     "fields": ["given_name", "family_name", "loyalty_id"], "tokens_sha256": [digest(POS_TOKEN)],
                     "audit_reads": True}],
        "connectors": [{"name": "pos-cache", "target": "pos_lookup", "url": redis.url}],
        "partitions": 2,
    }))
    pipeline = load_pipeline(config_file)
    kafka = connection(cluster.settings())
    ensure_topics(kafka, pipeline.all_topics(), pipeline.partitions)
    events = tmp_path / "crm.jsonl"
    people = [("C1", "Anna", "L0042"), ("C2", "Bob", "L0043"), ("C3", "Chen", "L0044")]
    events.write_text("\n".join(orjson.dumps({"source_id": sid, "event_time": NOW, "given_name": name,
                                              "family_name": "Smith", "loyalty_id": card}).decode()
                                for sid, name, card in people) + "\n")
    env = cluster.env(HUB_CONFIG_FILE=str(config_file), HUB_REDIS__URL=redis.url, HUB_STATE_DIR=str(tmp_path))
    worker = connect = lookup = None
    try:
        loaded = hub_command(["load", str(events), "--source", "crm"], env)
        assert loaded.returncode == 0, loaded.stderr
        assert "3 events to raw.crm" in loaded.stdout
        worker = Worker(cluster.proxy.address, redis.url, tmp_path, config_file=config_file,
                        env={k: v for k, v in env.items() if k.startswith("HUB_KAFKA__")}).start()
        connect = subprocess.Popen([sys.executable, "-m", "hub", "connect"], env=env, stdout=subprocess.DEVNULL,
                                   stderr=open(tmp_path / "connect.log", "wb"))
        cache = LookupCache(redis.url)
        wait_for(lambda: all(cache.get(card) for _, _, card in people), 120, "lookup cache filled through TLS")
        assert orjson.loads(cache.get("L0042"))["given_name"] == "Anna"
        golden_id = orjson.loads(cache.get("L0043"))["golden_id"]
        # the lookup server audits each read of this target onto the audit topic, through TLS
        port = free_port()
        lookup = subprocess.Popen([sys.executable, "-m", "hub", "lookup-server", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lookup.log", "wb"))
        url = f"http://127.0.0.1:{port}/targets/pos_lookup/lookup?loyalty_id=L0043"
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/health"), 60, "lookup server up")
        status, body = _get(url, POS_TOKEN)
        assert status == 200 and orjson.loads(body)["golden_id"] == golden_id
        history = hub_command(["history", golden_id], env)
        assert history.returncode == 0, history.stderr
        assert "golden_created" in history.stdout and '"Bob"' in history.stdout
        def reads() -> list[dict]:
            return [codec(ACCESS_EVENT).decode(v) for _, v in read_topic(kafka, "audit.access", {golden_id.encode()})
                    if v]

        found = wait_for_value(reads, 60)
        assert (found[0]["actor"], found[0]["role"], found[0]["action"]) == (
            f"pos_lookup:{digest(POS_TOKEN)[:12]}", "target", "lookup")
        assert found[0]["detail"] == "by loyalty_id: 200" and "L0043" not in orjson.dumps(found[0]).decode()
        assert "config_changed" in hub_command(["history", "--config"], env).stdout  # the worker's start
    finally:
        if lookup is not None:
            lookup.terminate()
            lookup.wait(30)
        if connect is not None:
            connect.terminate()
            connect.wait(30)
        if worker is not None:
            worker.stop()
        redis.stop()
    assert "SSL" in worker.log_path.read_text()  # the worker says how it connects (never a secret)


def answers(url: str) -> bool:
    try:
        return _get(url, None)[0] == 200
    except OSError:  # not listening yet
        return False


def test_a_wrong_ca_fails_fast_with_a_clear_error(cluster, tmp_path):
    """`hub run`, `hub load` and `hub connect` with a CA that did not sign the broker's certificate."""
    other = TestCA(tmp_path / "other", name="other CA")
    events = tmp_path / "crm.jsonl"
    events.write_text(orjson.dumps({"source_id": "C1", "event_time": NOW, "given_name": "Anna"}).decode() + "\n")
    config_file = tmp_path / "hub.yaml"
    config_file.write_text(yaml.safe_dump({"sources": [{"name": "crm"}], "targets": [
        {"name": "pos", "fields": ["given_name"]}], "connectors": [
        {"name": "out", "target": "pos", "url": (tmp_path / "out.jsonl").as_uri()}]}))
    env = cluster.env(ca_path=other.path, HUB_CONFIG_FILE=str(config_file), HUB_STATE_DIR=str(tmp_path),
                      HUB_REDIS__URL="redis://127.0.0.1:1/0", HUB_WEB__PORT=str(free_port()))
    for args in (["run"], ["load", str(events), "--source", "crm"], ["connect"]):
        started = time.monotonic()
        done = hub_command(args, env, timeout_s=60)
        took = time.monotonic() - started
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        # librdkafka's own log lines may come after ours: the hub's is the line starting "hub: "
        last = next(line for line in reversed(done.stderr.splitlines()) if line.startswith("hub: "))
        assert last.startswith("hub: Kafka at 127.0.0.1:") and "refused the connection" in last, (args, last)
        assert "certificate is not trusted" in last, (args, last)
        assert "HUB_KAFKA__SSL_CA_LOCATION" in last, (args, last)
        assert "Traceback" not in done.stderr, args
        assert took < 20, (args, took)


def test_host_name_verification(tmp_path):
    cluster = TlsCluster(tmp_path, hosts=("kafka.example",)).start()
    try:
        with pytest.raises(ConnectFailed) as info:
            check_connection(connection(cluster.settings()), timeout_s=20)
        assert "certificate is trusted but names kafka.example, not 127.0.0.1" in info.value.args[0].str()
        unchecked = cluster.settings(ssl_endpoint_identification_algorithm="none")
        assert check_connection(connection(unchecked), timeout_s=20) is not None

        async def aiokafka_connects(settings) -> None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **aiokafka_kwargs(settings))
            try:
                await asyncio.wait_for(producer.start(), 20)
            finally:
                await producer.stop()

        asyncio.run(aiokafka_connects(unchecked))  # the same settings, for Faust's client
        with pytest.raises(Exception):
            asyncio.run(aiokafka_connects(cluster.settings()))
    finally:
        cluster.stop()


def test_mutual_tls_needs_the_client_certificate(tmp_path):
    cluster = TlsCluster(tmp_path, client_ca=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(ConnectFailed) as info:
            check_connection(connection(cluster.settings()), timeout_s=30)
        assert "HUB_KAFKA__SSL_CERTIFICATE_LOCATION" in info.value.args[0].str()
        assert time.monotonic() - started < 15
        client = cluster.ca.issue("hub-client", ["hub"], client=True, key_password="k3y")
        (tmp_path / "key-password").write_text("k3y")
        settings = cluster.settings(ssl_certificate_location=client.certificate, ssl_key_location=client.key,
                                    ssl_key_password_file=tmp_path / "key-password")
        kafka = connection(settings)
        ensure_topics(kafka, ["mtls.check"], 1)
        from hub.connectors.kafka import KafkaSink
        from hub.records import OutMessage

        sink = KafkaSink(kafka)
        sink.setup()
        sink.add(OutMessage("mtls.check", b"k", b"v"))
        sink.flush(30)
        assert read_topic(kafka, "mtls.check", timeout_s=30) == [(b"k", b"v")]

        async def aiokafka_sends() -> None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **aiokafka_kwargs(settings))
            await asyncio.wait_for(producer.start(), 20)
            try:
                await producer.send_and_wait("mtls.check", b"v2", key=b"k2")
            finally:
                await producer.stop()

        asyncio.run(aiokafka_sends())
        assert read_topic(kafka, "mtls.check", timeout_s=30) == [(b"k", b"v"), (b"k2", b"v2")]
    finally:
        cluster.stop()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_scram_reaches_the_broker(tmp_path, mechanism):
    """Tansu requires SASL with --authentication and speaks SCRAM; its memory engine starts without users
    and creating one needs a login, so the exchange is expected to end in unknown-user: what matters is
    that the hub's mechanism and user name got there, and that the failure is fast and says so."""
    broker = EmbeddedBroker(authentication=True, log_path=tmp_path / "broker.log").start()
    try:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, security_protocol="SASL_PLAINTEXT",
                                 sasl_mechanism=mechanism, sasl_username="hub", sasl_password="pw")
        started = time.monotonic()
        with pytest.raises(ConnectFailed) as info:
            check_connection(connection(settings), timeout_s=30)
        message = info.value.args[0].str()
        assert "SASL SCRAM authentication failed" in message and "unknown-user" in message, message
        assert "pw" not in message.replace("HUB_KAFKA__SASL", "")
        assert time.monotonic() - started < 15
        # without SASL the broker refuses before any exchange: the settings above made the difference
        with pytest.raises(Exception) as plain:
            check_connection(broker.bootstrap_servers, timeout_s=3)
        assert "SCRAM" not in str(plain.value)

        async def aiokafka_login() -> BaseException:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, **aiokafka_kwargs(settings))
            try:
                await asyncio.wait_for(producer.start(), 20)
            except BaseException as exc:  # aiokafka's SCRAM client chokes on the server's e=unknown-user
                return exc
            finally:
                await producer.stop()
            raise AssertionError("aiokafka logged in to a broker without users")

        failure = asyncio.run(aiokafka_login())
        frames = []
        tb = failure.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_qualname)
            tb = tb.tb_next
        assert any("Scram" in name or "scram" in name for name in frames), frames
    finally:
        broker.stop()
