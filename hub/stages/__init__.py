"""Stages: batch functions from input messages to output messages.

Each stage is a class with `process(batch) -> StageOutput`, independent of how
the batch arrived (a Faust agent today, a librdkafka loop tomorrow). Pure logic
lives in the plain modules; a stage only sequences it with the ports' I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hub.messages import link_instruction
from hub.records import OutMessage, StageError
from hub.schemas import LINKED, SchemaError, codec, decode_avro_or_json


@dataclass(slots=True)
class StageOutput:
    messages: list[OutMessage] = field(default_factory=list)
    # Runs once every message is acknowledged by the broker, before input
    # offsets are committed: state that says "already sent", or that work
    # is done, goes here.
    after_delivery: Callable[[], Awaitable[None]] | None = None
    # Runs every few seconds while the messages are being delivered (a broker
    # slow or away): what the pass holds until delivery (leases) stays held.
    keep_alive: Callable[[], Awaitable[None]] | None = None
    # Runs when the messages could not all be delivered (the batch is then tried again, or split): what the
    # pass holds until delivery is given back, so its next attempt, or another pass, does not wait for it.
    abandon: Callable[[], Awaitable[None]] | None = None


async def settled(output: StageOutput | Awaitable[StageOutput]) -> StageOutput:
    """A stage's output with its after-delivery work done, as a runner leaves it once the broker has the
    messages: for callers that deliver nowhere (tests, benchmarks)."""
    if not isinstance(output, StageOutput):
        output = await output
    if output.after_delivery is not None:
        await output.after_delivery()
    return output


def recompute_message(topic: str, golden_id: str, cause: str) -> OutMessage:
    """Ask the master to rebuild a golden record with no new contribution (consent, survey, a timer)."""
    return OutMessage(topic, golden_id.encode(), codec(LINKED).encode(link_instruction(golden_id, "recompute", cause)))


async def recompute_members(index, members: list[str], topic: str, cause: str, counter) -> list[OutMessage]:
    """Recompute requests for the golden records these source records belong
    to; a record the hub has not seen yet is counted `pending` (what it got
    waits for it), the others `applied`."""
    linked = await index.members(members)
    out = []
    for member in members:
        entry = linked.get(member)
        if entry is None:
            counter.labels("pending").inc()
            continue
        counter.labels("applied").inc()
        out.append(recompute_message(topic, entry.golden_id, cause))
    return out


def decode_or_error(stage: str, schema: str, payload: bytes | None) -> dict | StageError:
    """A low-volume topic's record (Avro or JSON), or why it cannot be read (naming fields, never values)."""
    from hub.validation import INVALID_ID, describe_schema_error, ids_problem

    try:
        record = decode_avro_or_json(schema, payload)
    except (SchemaError, ValueError, TypeError, KeyError, RecursionError) as exc:
        return StageError(stage, "schema_mismatch", describe_schema_error(exc))
    bad_id = ids_problem(record)
    return StageError(stage, INVALID_ID, bad_id) if bad_id else record
