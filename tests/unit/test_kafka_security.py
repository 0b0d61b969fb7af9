"""Kafka TLS/SASL settings: how HUB_KAFKA__* is read and checked, and that
each client library the hub uses (librdkafka, aiokafka, Faust) gets the same
settings from hub.connectors.kafka_security, secrets never in a repr."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import ssl
import time
from pathlib import Path

import orjson
import pytest

from hub.config import ConfigError, KafkaSettings, load_settings
from hub.connectors import kafka_security
from hub.connectors.kafka_security import (
    KafkaConnection,
    KafkaSecurityError,
    aiokafka_kwargs,
    connection,
    describe,
    faust_app_kwargs,
    librdkafka_config,
    ssl_context,
    token_expiry,
)
from hub.testing.tls import TestCA

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pa55word"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("HUB_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def client_cert(ca):
    return ca.issue("client", ["hub-worker"], client=True, key_password="key-pass")


def jwt(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()
    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def test_settings_from_the_environment_under_kafka_client_names(monkeypatch, tmp_path, ca):
    monkeypatch.setenv("HUB_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("HUB_KAFKA__SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("HUB_KAFKA__SASL_MECHANISM", "scram-sha-512")
    monkeypatch.setenv("HUB_KAFKA__SASL_USERNAME", "hub")
    monkeypatch.setenv("HUB_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("HUB_KAFKA__SSL_CA_LOCATION", str(ca.path))
    monkeypatch.setenv("HUB_KAFKA__SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "NONE")
    settings = load_settings()
    kafka = settings.kafka
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert kafka.ssl_endpoint_identification_algorithm == "none"
    assert librdkafka_config(kafka) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "hub",
        "sasl.password": PASSWORD, "ssl.ca.location": str(ca.path),
        "ssl.endpoint.identification.algorithm": "none"}
    for text in (repr(settings), str(settings), repr(kafka), describe(kafka), repr(connection(kafka))):
        assert PASSWORD not in text
    assert describe(kafka) == f"SASL_SSL, SCRAM-SHA-512 as hub, CA {ca.path}, host name not checked"


def test_plaintext_is_the_default_and_adds_nothing():
    settings = KafkaSettings()
    assert librdkafka_config(settings) == {} and faust_app_kwargs(settings) == {}
    assert aiokafka_kwargs(settings) == {"security_protocol": "PLAINTEXT"}
    assert connection(settings, "b:9092").config(**{"group.id": "g"}) == {"bootstrap.servers": "b:9092",
                                                                          "group.id": "g"}


@pytest.mark.parametrize("env,says", [
    ({"SASL_MECHANISM": "PLAIN"}, "security_protocol is PLAINTEXT: use SASL_SSL"),
    ({"SSL_CA_LOCATION": "/ca.pem", "SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SASL_MECHANISM": "PLAIN",
      "SASL_USERNAME": "u", "SASL_PASSWORD": "p"}, "ssl_ca_location set but security_protocol is SASL_PLAINTEXT"),
    ({"SECURITY_PROTOCOL": "SASL_SSL"}, "needs sasl_mechanism"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "SCRAM-SHA-256", "SASL_PASSWORD": "p"},
     "needs sasl_username"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "PLAIN", "SASL_USERNAME": "u"},
     "needs one of sasl_password or sasl_password_file"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "PLAIN", "SASL_USERNAME": "u", "SASL_PASSWORD": "p",
      "SASL_PASSWORD_FILE": "/p"}, "needs one of sasl_password or sasl_password_file"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "OAUTHBEARER"}, "needs sasl_oauthbearer_token_file"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "OAUTHBEARER", "SASL_OAUTHBEARER_TOKEN_FILE": "/t",
      "SASL_USERNAME": "u"}, "takes a token file, not a username"),
    ({"SECURITY_PROTOCOL": "SSL", "SSL_CERTIFICATE_LOCATION": "/c.pem"}, "go together"),
    ({"SECURITY_PROTOCOL": "SSL", "SSL_KEY_PASSWORD": "x"}, "needs ssl_key_location"),
    ({"SECURITY_PROTOCOL": "TLS"}, "security_protocol"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "GSSAPI"}, "sasl_mechanism"),
])
def test_inconsistent_settings_fail_in_one_line_naming_the_field(monkeypatch, env, says):
    for name, value in env.items():
        monkeypatch.setenv(f"HUB_KAFKA__{name}", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("environment (HUB_*): kafka") and says in message, message
    assert "\n" not in message and "Traceback" not in message
    assert "p\n" not in message and PASSWORD not in message


def test_secrets_from_files(tmp_path, ca, client_cert):
    (tmp_path / "password").write_text(PASSWORD + "\n")
    (tmp_path / "key-password").write_text("key-pass")
    settings = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="hub",
                             sasl_password_file=tmp_path / "password", ssl_ca_location=ca.path,
                             ssl_certificate_location=client_cert.certificate, ssl_key_location=client_cert.key,
                             ssl_key_password_file=tmp_path / "key-password")
    config = librdkafka_config(settings)
    assert config["sasl.password"] == PASSWORD  # the file's trailing newline is not part of it
    assert config["ssl.key.password"] == "key-pass"
    assert config["ssl.certificate.location"] == str(client_cert.certificate)
    assert config["ssl.key.location"] == str(client_cert.key)
    assert aiokafka_kwargs(settings)["sasl_plain_password"] == PASSWORD
    context = ssl_context(settings)  # the encrypted key opened with the password from its file
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_missing_file_names_the_setting(tmp_path):
    settings = KafkaSettings(security_protocol="SSL", ssl_ca_location=tmp_path / "nowhere.pem")
    with pytest.raises(KafkaSecurityError, match=r"^HUB_KAFKA__SSL_CA_LOCATION: .*nowhere\.pem: No such file"):
        librdkafka_config(settings)
    with pytest.raises(KafkaSecurityError, match="HUB_KAFKA__SSL_CA_LOCATION"):
        ssl_context(settings)
    settings = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_username="u",
                             sasl_password_file=tmp_path / "pw")
    with pytest.raises(KafkaSecurityError, match="^HUB_KAFKA__SASL_PASSWORD_FILE: "):
        librdkafka_config(settings)


def test_a_wrong_key_password_is_a_clear_error(ca, client_cert, tmp_path):
    settings = KafkaSettings(security_protocol="SSL", ssl_certificate_location=client_cert.certificate,
                             ssl_key_location=client_cert.key, ssl_key_password="not-it")
    with pytest.raises(KafkaSecurityError, match="cannot load the client certificate and key"):
        ssl_context(settings)


def test_host_name_check_follows_endpoint_identification(ca):
    on = ssl_context(KafkaSettings(security_protocol="SSL", ssl_ca_location=ca.path))
    off = ssl_context(KafkaSettings(security_protocol="SSL", ssl_ca_location=ca.path,
                                    ssl_endpoint_identification_algorithm="none"))
    assert on.check_hostname and not off.check_hostname
    assert off.verify_mode == ssl.CERT_REQUIRED  # the chain is still checked
    assert ssl_context(KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                     sasl_username="u", sasl_password="p")) is None


def test_oauthbearer_token_read_from_its_file_each_time(tmp_path):
    token_file = tmp_path / "token"
    expires = int(time.time()) + 3600
    token_file.write_text(jwt({"sub": "hub", "exp": expires}))
    settings = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                             sasl_oauthbearer_token_file=token_file)
    callback = librdkafka_config(settings)["oauth_cb"]
    assert callback("") == (token_file.read_text(), float(expires))
    token_file.write_text(jwt({"sub": "hub", "exp": expires + 60}))  # rotated in place (a projected token)
    assert callback("")[1] == float(expires + 60)
    provider = aiokafka_kwargs(settings)["sasl_oauth_token_provider"]
    assert asyncio.run(provider.token()) == token_file.read_text()
    assert token_expiry("opaque-token", now=100.0) == 100.0 + kafka_security.UNKNOWN_TOKEN_LIFETIME_S
    token_file.write_text("")
    with pytest.raises(KafkaSecurityError, match="is empty"):
        callback("")


def test_faust_gets_the_same_settings_as_aiokafka(ca):
    """What Faust hands its aiokafka consumer, producer and admin client (its own mapping function)."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    def faust_auth(settings: KafkaSettings) -> dict:
        return credentials_to_aiokafka_auth(faust_app_kwargs(settings)["broker_credentials"])

    scram = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_username="hub",
                          sasl_password=PASSWORD, ssl_ca_location=ca.path)
    auth = faust_auth(scram)
    assert {k: auth[k] for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username",
                                 "sasl_plain_password")} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "hub",
        "sasl_plain_password": PASSWORD}
    assert auth["ssl_context"].check_hostname
    assert PASSWORD not in repr(faust_app_kwargs(scram))
    plain_sasl = faust_auth(KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                          sasl_username="hub", sasl_password=PASSWORD))
    assert plain_sasl["security_protocol"] == "SASL_PLAINTEXT" and plain_sasl["ssl_context"] is None
    tls = faust_auth(KafkaSettings(security_protocol="SSL", ssl_ca_location=ca.path))
    assert tls["security_protocol"] == "SSL" and isinstance(tls["ssl_context"], ssl.SSLContext)


def test_faust_oauthbearer(tmp_path, ca):
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    token_file = tmp_path / "token"
    token_file.write_text("opaque")
    auth = credentials_to_aiokafka_auth(faust_app_kwargs(KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_oauthbearer_token_file=token_file,
        ssl_ca_location=ca.path))["broker_credentials"])
    assert (auth["security_protocol"], auth["sasl_mechanism"]) == ("SASL_SSL", "OAUTHBEARER")
    assert asyncio.run(auth["sasl_oauth_token_provider"].token()) == "opaque"


def test_the_worker_and_its_sink_get_the_settings(ca, redis_url, tmp_path):
    """create_hub: the Faust app's credentials and the librdkafka output sink (no broker is contacted)."""
    from hub.app import create_hub
    from hub.config import Settings, load_pipeline

    settings = Settings(state_dir=tmp_path, pii_key="a-test-key-of-enough-length", kafka=KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="hub", sasl_password=PASSWORD,
        ssl_ca_location=ca.path), web={"port": 16066})
    hub = create_hub(settings, load_pipeline(None), "127.0.0.1:9", redis_url)  # nothing listens there
    credentials = hub.app.conf.broker_credentials
    assert (credentials.protocol.value, credentials.mechanism.value, credentials.username) == (
        "SASL_SSL", "SCRAM-SHA-512", "hub")
    assert hub.sink.config["security.protocol"] == "SASL_SSL"
    assert hub.sink.config["sasl.password"] == PASSWORD and hub.sink.config["ssl.ca.location"] == str(ca.path)
    assert PASSWORD not in repr(hub.sink)
    # the source stage's own consumer (hub.connectors.kafka_consumer) connects as the sink does
    consumer = hub.consumers["hot"]
    assert consumer._config["security.protocol"] == "SASL_SSL" and consumer._config["sasl.password"] == PASSWORD
    assert consumer._config["ssl.ca.location"] == str(ca.path)


def test_connectors_get_the_settings(ca):
    from hub.config import ConnectorConfig, load_pipeline
    from hub.connectors.cdc import DebeziumSource
    from hub.connectors.runner import SinkConnector, SourceConnector

    kafka = connection(KafkaSettings(security_protocol="SSL", ssl_ca_location=ca.path), "kafka.example:9093")
    pipeline = load_pipeline(None)
    sink = SinkConnector(ConnectorConfig(name="out", url="file:///tmp/out.jsonl", target="pos"), pipeline, kafka)
    assert sink.consumer_config["security.protocol"] == "SSL"
    assert sink.dlq.config["ssl.ca.location"] == str(ca.path)
    source = SourceConnector(ConnectorConfig(name="cdc", url="debezium:///crm.customers", source="crm"),
                             pipeline, kafka)
    assert source.sink.config["security.protocol"] == "SSL"
    assert source.source.config["ssl.ca.location"] == str(ca.path)  # CDC from the hub's own broker
    other = DebeziumSource("debezium://cdc.example:9092/crm.customers", pipeline.source("crm"), kafka)
    assert other.config["bootstrap.servers"] == "cdc.example:9092" and "security.protocol" not in other.config


# Kafka clients are made only from a KafkaConnection's config (or in test tooling)
_TOOLING = {"hub/testing/harness.py", "hub/testing/tls.py", "hub/connectors/kafka_security.py"}


def test_no_kafka_client_is_built_around_the_security_settings():
    offenders = []
    for path in sorted((ROOT / "hub").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name in _TOOLING:
            continue
        text = path.read_text()
        for match in re.finditer(r'"bootstrap\.servers"|AIOKafka(Producer|Consumer|AdminClient)\(', text):
            offenders.append(f"{name}:{text[:match.start()].count(chr(10)) + 1}")
    assert not offenders, f"Kafka client settings built outside kafka_security: {offenders}"


def test_connection_repr_shows_no_secret():
    kafka = KafkaConnection("b:9093", {"security.protocol": "SASL_SSL", "sasl.password": PASSWORD})
    assert PASSWORD not in repr(kafka) and PASSWORD not in str(kafka)
    assert kafka.protocol == "SASL_SSL"
