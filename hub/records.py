"""The small value types every stage passes around: messages in, messages out,
and a stage's per-record result (ok or error), independent of Kafka clients."""

from __future__ import annotations

from dataclasses import dataclass, field

# Header names on dead-lettered records, after Kafka Connect's __connect.errors.*
ERROR_STAGE = "hub.error.stage"
ERROR_REASON = "hub.error.reason"
ERROR_EXCEPTION = "hub.error.exception"
ERROR_TOPIC = "hub.error.topic"
ERROR_PARTITION = "hub.error.partition"
ERROR_OFFSET = "hub.error.offset"
REASON_HEADER = "hub.reason"
# Kafka timestamp (ms) of the raw source event behind a target record: lets any
# consumer measure how fresh what it receives is.
EVENT_TS_HEADER = "hub.event.ts"


@dataclass(slots=True)
class InMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: list[tuple[str, bytes]] | None = None
    # the value decoded (and opened), handed on within one pass (hub.engine): the stage reads it instead of
    # decoding `value`, which is then None unless the record is also written
    record: dict | None = None

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers or ():
            if key == name:
                return value
        return None


@dataclass(slots=True)
class OutMessage:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    # what the next stage would decode from `value` (and open), for a fused pass to hand on (hub.engine);
    # a stage told its output is only handed on (`hand_on_only`) leaves `value` None and sets this alone
    record: dict | None = None


@dataclass(slots=True)
class StageError:
    """Why one input record could not pass a stage. `reason` is from a small
    fixed vocabulary (it becomes a metric label); `detail` is free text."""

    stage: str
    reason: str
    detail: str = ""

    def dead_letter(self, message: InMessage, dlq_topic: str) -> OutMessage:
        headers = [
            (ERROR_STAGE, self.stage.encode()),
            (ERROR_REASON, self.reason.encode()),
            (ERROR_EXCEPTION, self.detail[:1000].encode("utf-8", "replace")),
            (ERROR_TOPIC, message.topic.encode()),
            (ERROR_PARTITION, str(message.partition).encode()),
            (ERROR_OFFSET, str(message.offset).encode()),
        ]
        return OutMessage(dlq_topic, message.key, message.value, headers)


def describe_exception(exc: BaseException) -> str:
    """An exception by type and where it was raised (file:line in function, innermost first), never by
    its message: a message may quote the record it failed on, and this goes to DLQ headers and logs."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in reversed(frames))
    return f"{type(exc).__name__} at {where}" if where else type(exc).__name__


def member_key(source: str, source_id: str) -> str:
    """The identity of one source record everywhere in the hub."""
    return f"{source}:{source_id}"
