"""How every Kafka client the hub creates connects: TLS and SASL, in one place.

`KafkaSettings` (HUB_KAFKA__*) holds the security settings under the names of
Kafka's client configuration. This module turns them into what each client
library takes, and nothing else in the hub builds security settings:

- `librdkafka_config(settings)`: confluent-kafka producers, consumers and
  admin clients (the output sink, readers, connectors, `hub load`, `replay`,
  `history`...), through `connection(settings, bootstrap)`, a
  `KafkaConnection` every function of hub.connectors.kafka accepts;
- `faust_app_kwargs(settings)`: the Faust app's `broker_credentials` (its
  aiokafka consumer, producer and admin client);
- `aiokafka_kwargs(settings)`: a plain aiokafka client's keyword arguments.

Secrets (sasl.password, ssl.key.password) come from the environment as
SecretStr or from files read when the configuration is built; a bearer token
(OAUTHBEARER) is read from its file every time a client asks for one, so a
token rotated in place is used without a restart. Nothing here logs a secret;
`describe` says what is configured without one, and `KafkaConnection`'s repr
shows the servers only.
"""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from hub.config import ConfigError, KafkaSettings

# a token whose expiry cannot be read is asked for again after this long
UNKNOWN_TOKEN_LIFETIME_S = 300


class KafkaSecurityError(ConfigError):
    """A security setting that cannot be used (a file missing or unreadable); names the setting."""


def _env(name: str) -> str:
    return f"HUB_KAFKA__{name.upper()}"


def _file(settings: KafkaSettings, name: str) -> str | None:
    """The path a file setting names, checked readable now: a typo fails at start, naming the setting."""
    path: Path | None = getattr(settings, name)
    if path is None:
        return None
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise KafkaSecurityError(f"{_env(name)}: {path}: {exc.strerror or exc}") from None
    return str(path)


def _secret(settings: KafkaSettings, name: str) -> str | None:
    """A secret given directly (SecretStr) or as `<name>_file`."""
    value = getattr(settings, name)
    if value is not None:
        return value.get_secret_value()
    path = _file(settings, f"{name}_file")
    if path is None:
        return None
    return Path(path).read_text().strip()


def read_token(path: Path) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise KafkaSecurityError(f"{_env('sasl_oauthbearer_token_file')}: {path}: {exc.strerror or exc}") from None
    if not token:
        raise KafkaSecurityError(f"{_env('sasl_oauthbearer_token_file')}: {path} is empty")
    return token


def token_expiry(token: str, now: float | None = None) -> float:
    """When a bearer token expires (epoch seconds): a JWT's `exp`, else a few minutes from now."""
    now = time.time() if now is None else now
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return now + UNKNOWN_TOKEN_LIFETIME_S


def _token_callback(path: Path):
    """librdkafka's oauth_cb: called when a token is needed (at start, then at 80 % of its lifetime)."""
    def oauth_cb(_config: str) -> tuple[str, float]:
        token = read_token(path)
        return token, token_expiry(token)
    return oauth_cb


def librdkafka_config(settings: KafkaSettings) -> dict:
    """The security part of a confluent-kafka client configuration (empty for PLAINTEXT)."""
    if not settings.secured:
        return {}
    config: dict = {"security.protocol": settings.security_protocol}
    if settings.security_protocol.startswith("SASL_"):
        config["sasl.mechanism"] = settings.sasl_mechanism
        if settings.sasl_mechanism == "OAUTHBEARER":
            read_token(settings.sasl_oauthbearer_token_file)  # fail at start, not at the first connection
            config["oauth_cb"] = _token_callback(settings.sasl_oauthbearer_token_file)
        else:
            config["sasl.username"] = settings.sasl_username
            config["sasl.password"] = _secret(settings, "sasl_password")
    if settings.security_protocol.endswith("SSL"):
        for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            path = _file(settings, name)
            if path is not None:
                config[name.replace("_", ".")] = path
        key_password = _secret(settings, "ssl_key_password")
        if key_password is not None:
            config["ssl.key.password"] = key_password
        config["ssl.endpoint.identification.algorithm"] = settings.ssl_endpoint_identification_algorithm
    return config


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of Python clients (aiokafka, so Faust): the same CA, client certificate and host check."""
    if not settings.security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=_file(settings, "ssl_ca_location"))
    certificate = _file(settings, "ssl_certificate_location")
    if certificate is not None:
        try:
            context.load_cert_chain(certificate, _file(settings, "ssl_key_location"),
                                    password=_secret(settings, "ssl_key_password"))
        except ssl.SSLError as exc:
            raise KafkaSecurityError(f"{_env('ssl_certificate_location')} / {_env('ssl_key_location')}: "
                                     f"cannot load the client certificate and key: {exc.reason or exc}") from None
    context.check_hostname = settings.ssl_endpoint_identification_algorithm == "https"
    return context


def _token_provider(path: Path):
    from aiokafka.abc import AbstractTokenProvider

    class FileTokenProvider(AbstractTokenProvider):
        """aiokafka's OAUTHBEARER token, read from its file whenever aiokafka asks."""

        async def token(self) -> str:
            return read_token(path)

    return FileTokenProvider()


def aiokafka_kwargs(settings: KafkaSettings) -> dict:
    """Keyword arguments of an aiokafka client (AIOKafkaProducer, AIOKafkaConsumer, admin)."""
    kwargs: dict = {"security_protocol": settings.security_protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.security_protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        if settings.sasl_mechanism == "OAUTHBEARER":
            read_token(settings.sasl_oauthbearer_token_file)
            kwargs["sasl_oauth_token_provider"] = _token_provider(settings.sasl_oauthbearer_token_file)
        else:
            kwargs["sasl_plain_username"] = settings.sasl_username
            kwargs["sasl_plain_password"] = _secret(settings, "sasl_password")
    return kwargs


def faust_app_kwargs(settings: KafkaSettings) -> dict:
    """What faust.App(...) takes for the same settings: its broker_credentials (empty for PLAINTEXT)."""
    if not settings.secured:
        return {}
    import faust

    context = ssl_context(settings)
    if settings.security_protocol == "SSL":
        return {"broker_credentials": faust.SSLCredentials(context)}
    if settings.sasl_mechanism == "OAUTHBEARER":
        read_token(settings.sasl_oauthbearer_token_file)
        credentials = faust.OAuthCredentials(oauth_cb=_token_provider(settings.sasl_oauthbearer_token_file),
                                             ssl_context=context)
    else:
        credentials = faust.SASLCredentials(username=settings.sasl_username,
                                            password=_secret(settings, "sasl_password"),
                                            ssl_context=context, mechanism=settings.sasl_mechanism)
    return {"broker_credentials": credentials}


def describe(settings: KafkaSettings) -> str:
    """What is configured, for a log line: never a secret."""
    parts = [settings.security_protocol]
    if settings.security_protocol.startswith("SASL_"):
        who = f" as {settings.sasl_username}" if settings.sasl_username else " (token file)"
        parts.append(f"{settings.sasl_mechanism}{who}")
    if settings.security_protocol.endswith("SSL"):
        parts.append(f"CA {settings.ssl_ca_location or 'system trust store'}")
        if settings.ssl_certificate_location:
            parts.append(f"client certificate {settings.ssl_certificate_location}")
        if settings.ssl_endpoint_identification_algorithm == "none":
            parts.append("host name not checked")
    return ", ".join(parts)


@dataclass(frozen=True)
class KafkaConnection:
    """Where a cluster is and how to connect to it: what every client of
    hub.connectors.kafka is built from. Its repr and str show the servers
    and the protocol, never the security settings (which hold secrets)."""

    bootstrap_servers: str
    security: Mapping = field(default_factory=dict, repr=False, compare=False)

    def config(self, **extra) -> dict:
        """A librdkafka configuration: servers, security, then the client's own settings."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.security, **extra}

    @property
    def protocol(self) -> str:
        return str(self.security.get("security.protocol", "PLAINTEXT"))

    def __str__(self) -> str:
        return self.bootstrap_servers


def connection(settings: KafkaSettings, bootstrap_servers: str | None = None) -> KafkaConnection:
    """The configured cluster (or `bootstrap_servers`, e.g. an embedded broker) with the configured security."""
    servers = bootstrap_servers or settings.bootstrap_servers
    if not servers:
        raise KafkaSecurityError(f"{_env('bootstrap_servers')} is not set")
    return KafkaConnection(servers, librdkafka_config(settings))


def as_connection(kafka: "str | KafkaConnection") -> KafkaConnection:
    """A plain `host:port[,...]` string is a PLAINTEXT connection (the embedded broker, tests)."""
    return kafka if isinstance(kafka, KafkaConnection) else KafkaConnection(kafka)
