"""Stages: batch functions from input messages to output messages.

Each stage is a class with `process(batch) -> StageOutput`, independent of how
the batch arrived (a Faust agent today, a librdkafka loop tomorrow). Pure logic
lives in the plain modules; a stage only sequences it with the ports' I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hub.records import OutMessage, StageError
from hub.schemas import SchemaError, decode_avro_or_json


@dataclass(slots=True)
class StageOutput:
    messages: list[OutMessage] = field(default_factory=list)
    # Runs once every message is acknowledged by the broker, before input
    # offsets are committed: state that says "already sent" goes here.
    after_delivery: Callable[[], Awaitable[None]] | None = None


def decode_or_error(stage: str, schema: str, payload: bytes | None) -> dict | StageError:
    """A low-volume topic's record (Avro or JSON), or why it cannot be read."""
    try:
        return decode_avro_or_json(schema, payload)
    except (SchemaError, ValueError, TypeError, KeyError) as exc:
        return StageError(stage, "schema_mismatch", str(exc)[:300])
