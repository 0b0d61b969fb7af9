"""HTTP ingestion: `POST /sources/{source}/events` on the worker's web server.

A body is one CustomerEvent in JSON or an array of them (`source` may be left
out). Each is checked with the ingest stage's own validation
(hub.validation); if all pass they are written to raw.<source> and the answer
is 202 once the broker acknowledged them, else nothing is written and the
answer is 400 with the reason of each failing record. Callers authenticate
per source with `Authorization: Bearer <token>`, whose SHA-256 digest must be
in the source's `tokens_sha256` (compared in constant time); a body over the
source's `max_request_bytes` gets 413.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import orjson

from hub.access import bearer
from hub.records import OutMessage, StageError, member_key
from hub.runner import deliver
from hub.stages import StageOutput
from hub.validation import validate_raw

MAX_RECORDS = 10_000


def source_token_ok(source, token: str | None) -> bool:
    if not token:
        return False
    presented = hashlib.sha256(token.encode()).hexdigest()
    found = False
    for stored in source.tokens_sha256:
        found |= hmac.compare_digest(presented, stored)
    return found


def check_batch(body: bytes, source, rules, now_ms: int) -> tuple[list[OutMessage], list[dict]]:
    """The records of a request as raw-topic messages, or the errors per record."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [], [{"index": None, "reason": "not_decodable", "detail": f"body is not JSON: {exc}"}]
    records = data if isinstance(data, list) else [data]
    if not records or len(records) > MAX_RECORDS:
        return [], [{"index": None, "reason": "batch_size", "detail": f"send 1 to {MAX_RECORDS} records"}]
    messages, errors = [], []
    for index, record in enumerate(records):
        if isinstance(record, dict):
            record.setdefault("source", source.name)
        payload = orjson.dumps(record)
        result = validate_raw(payload, source.name, rules, now_ms)
        if isinstance(result, StageError):
            errors.append({"index": index, "reason": result.reason, "detail": result.detail})
            continue
        key = member_key(result["source"], result["source_id"]).encode()
        messages.append(OutMessage(source.raw_topic, key, payload))
    return messages, errors


def register(hub) -> None:
    from faust.web import View

    sources = {s.name: s for s in hub.pipeline.sources}
    rules = hub.pipeline.quality

    @hub.app.page("/sources/{source}/events")
    class SourceEvents(View):
        """POST one event or a JSON array of events for one source."""

        async def post(self, request, source: str):
            config = sources.get(source)
            if config is None:
                return self.json({"error": "unknown_source", "source": source}, status=404)
            if not source_token_ok(config, bearer(request.headers.get("Authorization"))):
                return self.json({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
            declared = request.content_length
            if declared is not None and declared > config.max_request_bytes:
                return self.json({"error": "too_large", "max_request_bytes": config.max_request_bytes}, status=413)
            body = await request.read()
            if len(body) > config.max_request_bytes:
                return self.json({"error": "too_large", "max_request_bytes": config.max_request_bytes}, status=413)
            messages, errors = check_batch(body, config, rules, int(time.time() * 1000))
            if errors:
                return self.json({"accepted": 0, "errors": errors}, status=400)
            limit = hub.sink.max_message_bytes
            if any(len(m.value) + len(m.key or b"") > limit for m in messages):  # all or nothing
                return self.json({"error": "too_large", "max_message_bytes": limit}, status=413)
            await deliver(hub.sink, StageOutput(messages))
            return self.json({"accepted": len(messages), "topic": config.raw_topic}, status=202)
