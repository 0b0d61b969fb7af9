"""Kafka through librdkafka (confluent-kafka): the output sink every stage
writes to, and topic administration.

The sink's `flush` waits until every record added is acknowledged and raises
if any delivery failed, so callers commit input offsets only after it returns.

Every function and class here takes the cluster as a `KafkaConnection`
(hub.connectors.kafka_security: servers plus TLS/SASL settings) or as a plain
`host:port` string (PLAINTEXT: the embedded broker). A broker that refuses
the connection for good (a certificate it does not trust, a CA that does not
match, a rejected SASL login) makes them fail within seconds with
`ConnectFailed` saying why, instead of retrying until a timeout.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from hub import metrics
from hub.connectors.kafka_security import KafkaConnection, as_connection
from hub.records import InMessage, OutMessage

COMPACTED_PREFIXES = ("customer.golden", "mastered.")
# errors retrying will not cure: the TLS handshake or the SASL login was refused
_REFUSED = {KafkaError._SSL, KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
# how long librdkafka may try before a refused connection counts as for good
# (a broker rolling its certificate may refuse one handshake)
REFUSED_GRACE_S = 3.0


def _count_broker_error(err) -> None:
    """librdkafka reconnects by itself; this makes an outage visible (hub_broker_errors_total)."""
    metrics.BROKER_ERRORS.labels(err.name()).inc()


class ConnectFailed(KafkaException):
    """The broker refused the connection for good: TLS (certificate, CA, host name) or SASL (login)."""


class _Refusals:
    """A client's error_cb: counts every error, and keeps the first refusal (TLS or SASL) with its time."""

    def __init__(self, kafka: KafkaConnection):
        self.kafka = kafka
        self.first: tuple[float, str] | None = None

    def __call__(self, err) -> None:
        _count_broker_error(err)
        if err.code() in _REFUSED and self.first is None:
            self.first = (time.monotonic(), err.str())

    def clear(self) -> None:
        self.first = None

    def check(self, grace_s: float = REFUSED_GRACE_S) -> None:
        """Raise ConnectFailed once a refusal has lasted `grace_s`."""
        if self.first is not None and time.monotonic() - self.first[0] >= grace_s:
            raise ConnectFailed(KafkaError(KafkaError._TRANSPORT, refused_message(self.kafka, self.first[1])))


def refused_message(kafka: KafkaConnection, detail: str) -> str:
    hint = ""
    low = detail.lower()
    if "certificate verify failed" in low:
        hint = f" ({tls_problem(kafka) or 'is the broker certificate signed by a CA in HUB_KAFKA__SSL_CA_LOCATION?'})"
    elif "sasl" in low or "authentication" in low:
        hint = " (check HUB_KAFKA__SASL_MECHANISM, HUB_KAFKA__SASL_USERNAME and the password)"
    return f"Kafka at {kafka.bootstrap_servers} ({kafka.protocol}) refused the connection: {detail}{hint}"


def _names_host(names: list[str], host: str) -> bool:
    host = host.lower()
    for name in (n.lower() for n in names):
        if name == host or (name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]):
            return True
    return False


def tls_problem(kafka: KafkaConnection, read_wait_s: float = 1.0) -> str | None:
    """Why a TLS connection to the first bootstrap server fails, found with one handshake of
    Python's ssl (librdkafka reports an untrusted chain and a wrong host name alike, and a
    missing client certificate as a closed connection); None when TLS itself is fine."""
    import socket
    import ssl

    if not kafka.protocol.endswith("SSL"):
        return None
    host, _, port = kafka.bootstrap_servers.split(",")[0].strip().rpartition(":")
    config = kafka.security
    try:
        context = ssl.create_default_context(cafile=config.get("ssl.ca.location"))
        if config.get("ssl.certificate.location"):
            context.load_cert_chain(config["ssl.certificate.location"], config.get("ssl.key.location"),
                                    password=config.get("ssl.key.password"))
        context.check_hostname = False
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                names = [value for _, value in tls.getpeercert().get("subjectAltName", ())]
                tls.settimeout(read_wait_s)  # TLS 1.3: a refused client certificate arrives as the first read
                try:
                    closed = tls.recv(1) == b""  # a broker waits for a request: closing at once is a refusal
                except (socket.timeout, TimeoutError):
                    closed = False
    except ssl.SSLCertVerificationError as exc:
        return (f"the broker's certificate is not trusted: {exc.verify_message}; "
                "is it signed by a CA in HUB_KAFKA__SSL_CA_LOCATION?")
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc).lower().replace("_", " ")
        if "certificate required" in reason or "handshake failure" in reason and not config.get(
                "ssl.certificate.location"):
            return ("the broker asks for a client certificate (mutual TLS): set HUB_KAFKA__SSL_CERTIFICATE_LOCATION "
                    "and HUB_KAFKA__SSL_KEY_LOCATION")
        if "unknown ca" in reason or "bad certificate" in reason:
            return "the broker does not accept the client certificate (HUB_KAFKA__SSL_CERTIFICATE_LOCATION)"
        return f"TLS handshake failed: {exc.reason or exc}"
    except (OSError, ValueError):
        return None  # not reachable at all: not a TLS problem
    if closed:
        if not config.get("ssl.certificate.location"):
            return ("the broker closed the connection right after the TLS handshake: it wants a client certificate "
                    "(mutual TLS)? set HUB_KAFKA__SSL_CERTIFICATE_LOCATION and HUB_KAFKA__SSL_KEY_LOCATION")
        return ("the broker closed the connection right after the TLS handshake: does it accept the client "
                "certificate (HUB_KAFKA__SSL_CERTIFICATE_LOCATION)?")
    if config.get("ssl.endpoint.identification.algorithm", "https") != "none" and not _names_host(names, host):
        return (f"the broker's certificate is trusted but names {', '.join(names) or 'no host'}, not {host}; "
                "connect by one of those names, or HUB_KAFKA__SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=none skips "
                "the check")
    return None


def _metadata(client, refusals: _Refusals, timeout_s: float):
    """list_topics, failing fast (ConnectFailed) when the broker refuses the connection itself."""
    started = time.monotonic()
    deadline = started + timeout_s
    probed = False
    while True:
        try:
            return client.list_topics(timeout=min(1.0, max(deadline - time.monotonic(), 0.1)))
        except KafkaException:
            client.poll(0)  # serves error_cb
            refusals.check()
            if not probed and time.monotonic() - started >= REFUSED_GRACE_S:
                probed = True
                problem = tls_problem(refusals.kafka)
                if problem:
                    raise ConnectFailed(KafkaError(KafkaError._TRANSPORT, (
                        f"Kafka at {refusals.kafka.bootstrap_servers} ({refusals.kafka.protocol}) refused the "
                        f"connection: {problem}"))) from None
            if time.monotonic() > deadline:
                raise


class DeliveryFailed(RuntimeError):
    """At least one record was not acknowledged by the broker."""


# librdkafka's own default for message.max.bytes; brokers default to about the same
MAX_MESSAGE_BYTES = 1_000_000


class MessageTooLarge(ValueError):
    """A record larger than the broker accepts. Not an outage: retrying cannot
    help, so the record that produced it is dead-lettered and the stage moves on."""


class Delivery:
    """The broker's acknowledgements of the records of one batch (`KafkaSink.send`). The passes of a worker
    share its producer; each waits for its own records, not for those another pass added since."""

    __slots__ = ("waiting", "failures")

    def __init__(self):
        self.waiting = 0
        self.failures: list = []

    def __call__(self, err, _msg) -> None:  # librdkafka's delivery report, served by the producer's poll()
        self.waiting -= 1
        if err is not None:
            self.failures.append(err)

    def check(self) -> None:
        """Once nothing is waiting: raise if any record was not delivered, as `KafkaSink.flush` does."""
        _raise_failures(self.failures)


def _raise_failures(failures: list) -> None:
    too_large = [f for f in failures if f.code() == KafkaError.MSG_SIZE_TOO_LARGE]
    if too_large:  # the broker's limit is below ours
        raise MessageTooLarge(f"{len(too_large)} records refused by the broker: {too_large[0].str()}")
    if failures:
        raise DeliveryFailed(f"{len(failures)} records failed: {failures[0].str()}")


class KafkaSink:
    """A Sink (hub.ports) over one confluent-kafka Producer."""

    def __init__(self, bootstrap_servers: str | KafkaConnection, linger_ms: int = 5,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, **extra):
        self.max_message_bytes = max_message_bytes
        self.kafka = as_connection(bootstrap_servers)
        self._refusals = _Refusals(self.kafka)
        self.config = self.kafka.config(**{
            "linger.ms": linger_ms,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "none",
            "queue.buffering.max.messages": 1_000_000,
            "message.max.bytes": max(max_message_bytes, 1000),
            "error_cb": self._refusals,
            **extra,
        })
        self.producer: Producer | None = None
        self._failures: list = []  # KafkaError of each failed delivery since the last flush

    def __repr__(self) -> str:  # self.config may hold a password
        return f"KafkaSink({self.kafka!r})"

    def setup(self) -> None:
        if self.producer is None:
            self.producer = Producer(self.config)

    def _on_delivery(self, err, _msg) -> None:
        if err is not None:
            self._failures.append(err)

    def send(self, records: list[OutMessage]) -> Delivery:
        """Add `records`, acknowledged in the Delivery returned (its `waiting` falls to 0 as `poll` serves
        their reports); `flush` neither waits for nor reports them."""
        delivery = Delivery()
        for record in records:
            self.add(record, delivery)
            delivery.waiting += 1
        return delivery

    def add(self, record: OutMessage, on_delivery=None) -> None:
        size = len(record.value or b"") + len(record.key or b"")
        if size > self.max_message_bytes:
            raise MessageTooLarge(f"{size} bytes for {record.topic}, more than the {self.max_message_bytes} allowed")
        while True:
            try:
                self.producer.produce(record.topic, record.value, record.key, headers=record.headers or None,
                                      on_delivery=on_delivery or self._on_delivery)
                return
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise MessageTooLarge(f"{size} bytes for {record.topic}: {exc.args[0].str()}") from None
                raise

    def pending(self) -> int:
        return len(self.producer) if self.producer is not None else 0

    def poll(self) -> None:
        if self.producer is not None:
            self.producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        if self.producer is None:
            return
        deadline = time.monotonic() + timeout_s
        remaining = self.producer.flush(min(timeout_s, 1.0))
        while remaining and time.monotonic() < deadline:
            if self._refusals.first is not None and time.monotonic() - self._refusals.first[0] >= REFUSED_GRACE_S:
                self._failures = []
                raise DeliveryFailed(refused_message(self.kafka, self._refusals.first[1]))
            remaining = self.producer.flush(min(1.0, max(deadline - time.monotonic(), 0.0)))
        if not remaining:
            self._refusals.clear()  # connected since: an earlier refusal was passing
        failures, self._failures = self._failures, []
        if remaining:
            raise DeliveryFailed(f"{remaining} records not delivered within {timeout_s}s")
        _raise_failures(failures)


def check_connection(bootstrap_servers: str | KafkaConnection, timeout_s: float = 30.0) -> set[str]:
    """Connect and read the cluster's topic names: ConnectFailed at once when the broker refuses the
    connection (TLS, SASL), KafkaException when it cannot be reached within `timeout_s`."""
    kafka = as_connection(bootstrap_servers)
    refusals = _Refusals(kafka)
    admin = AdminClient(kafka.config(error_cb=refusals))
    return set(_metadata(admin, refusals, timeout_s).topics)


def ensure_topics(bootstrap_servers: str | KafkaConnection, topics: list[str], partitions: int,
                  timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    kafka = as_connection(bootstrap_servers)
    refusals = _Refusals(kafka)
    admin = AdminClient(kafka.config(error_cb=refusals))
    existing = set(_metadata(admin, refusals, timeout_s).topics)
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    if not wanted:
        return []
    new = [NewTopic(t, num_partitions=partitions, replication_factor=1,
                    config={"cleanup.policy": "compact"} if t.startswith(COMPACTED_PREFIXES) else {})
           for t in wanted]
    for topic, future in admin.create_topics(new).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return wanted


class KafkaTopicSink:
    """Target connector `kafka://host:port[,host:port]/topic`: copies a target's
    records (tombstones and headers included) to a topic, on the same or
    another cluster. Options are librdkafka producer settings."""

    def __init__(self, url: str, **options):
        parts = urlsplit(url)
        self.topic = parts.path.strip("/")
        if not parts.netloc or not self.topic:
            raise ValueError(f"{url}: expected kafka://host:port/topic")
        self.sink = KafkaSink(parts.netloc, **{k: v for k, v in options.items()})

    def setup(self) -> None:
        self.sink.setup()

    def add(self, record) -> None:
        self.sink.add(OutMessage(self.topic, record.key, record.value, list(record.headers or ())))

    def flush(self) -> None:
        self.sink.flush()


def _reader(bootstrap_servers: str | KafkaConnection, **extra):
    from confluent_kafka import Consumer

    kafka = as_connection(bootstrap_servers)
    refusals = _Refusals(kafka)
    # partition EOF, not the high watermark, says where a partition ends: Tansu
    # reports the watermark as the last batch's base offset + 1
    consumer = Consumer(kafka.config(**{"group.id": "hub-reader", "enable.auto.commit": False,
                                        "enable.partition.eof": True, "fetch.wait.max.ms": 20,
                                        "error_cb": refusals, **extra}))
    return consumer, refusals


def _partitions(consumer, refusals: _Refusals, topics: list[str]) -> list[tuple[str, int]]:
    metadata = _metadata(consumer, refusals, 10).topics
    return [(t, p) for t in dict.fromkeys(topics) if t in metadata for p in sorted(metadata[t].partitions)]


def read_topic(bootstrap_servers: str | KafkaConnection, topic: str, keys: set[bytes] | None = None,
               timeout_s: float = 60.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of `topic` up to its current end (those whose key is in
    `keys`, when given), read without a consumer group: for tools like
    `hub history`, not the hot path."""
    return [(m.key, m.value) for m in MergedReader(bootstrap_servers, [topic], timeout_s=timeout_s)
            if keys is None or m.key in keys]


def order_key(message: InMessage) -> tuple:
    """The replay order: by timestamp, then where the record sits. It depends
    only on what the topics hold, never on which partition a fetch returned first."""
    return (message.timestamp_ms if message.timestamp_ms is not None else -1, message.topic, message.partition,
            message.offset)


class MergedReader:
    """Every partition of `topics` from the beginning up to where it ends when
    first reached, as one stream in `order_key` order: a k-way merge, each
    partition in offset order (as Kafka Streams merges a task's partitions).
    One consumer, no group; a partition whose buffer fills is paused, so memory
    stays bounded by `buffer` records per partition. Records written to a
    partition after its end was reached are not read."""

    def __init__(self, bootstrap_servers: str | KafkaConnection, topics: list[str], buffer: int = 10_000,
                 timeout_s: float | None = None):
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.buffer = buffer
        self.timeout_s = timeout_s
        self.ends: dict[tuple[str, int], int] = {}  # where each partition ended

    def __iter__(self):
        import heapq
        from collections import deque

        from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

        consumer, refusals = _reader(self.bootstrap_servers)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        try:
            parts = _partitions(consumer, refusals, self.topics)
            buffers = {tp: deque() for tp in parts}
            paused: set = set()
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])

            def fill() -> None:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{self.topics} not read to the end within {self.timeout_s} s")
                for message in consumer.consume(1000, timeout=0.2):
                    tp = (message.topic(), message.partition())
                    if tp in self.ends:
                        continue  # past the end this read stopped at
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            self.ends[tp] = message.offset()
                            continue
                        raise KafkaException(error)
                    timestamp_type, timestamp = message.timestamp()
                    buffers[tp].append(InMessage(tp[0], tp[1], message.offset(), message.key(), message.value(),
                                                 timestamp if timestamp_type else None,
                                                 list(message.headers() or ()) or None))
                    if len(buffers[tp]) >= self.buffer and tp not in paused:
                        consumer.pause([TopicPartition(*tp)])
                        paused.add(tp)
                for tp in [tp for tp in paused if len(buffers[tp]) < self.buffer // 2]:
                    consumer.resume([TopicPartition(*tp)])
                    paused.discard(tp)

            def partition(tp):
                queue = buffers[tp]
                while True:
                    while not queue:
                        if tp in self.ends:
                            return
                        fill()
                    yield queue.popleft()

            yield from heapq.merge(*(partition(tp) for tp in parts), key=order_key)
        finally:
            consumer.close()


def end_offsets(bootstrap_servers: str | KafkaConnection, topics: list[str],
                timeout_s: float = 60.0) -> dict[tuple[str, int], int]:
    """Where each partition of `topics` ends now (read forward from the high
    watermark to partition EOF, so it is right on Tansu too)."""
    from confluent_kafka import TopicPartition

    consumer, refusals = _reader(bootstrap_servers)
    try:
        parts = _partitions(consumer, refusals, topics)
        starts = {tp: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10)[1] for tp in parts}
        consumer.assign([TopicPartition(t, p, max(starts[(t, p)] - 1, 0)) for t, p in parts])
        ends: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + timeout_s
        while len(ends) < len(parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end found for {sorted(set(parts) - ends.keys())} on {bootstrap_servers}")
            for message in consumer.consume(1000, timeout=0.2):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    ends[(message.topic(), message.partition())] = message.offset()
                elif error is not None:
                    raise KafkaException(error)
        return ends
    finally:
        consumer.close()


def commit_group(bootstrap_servers: str | KafkaConnection, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Set a consumer group's committed offsets (the group must have no members running)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(as_connection(bootstrap_servers).config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())], asynchronous=False)
    finally:
        consumer.close()
