"""`hub resolve`: records from a JSONL file through the streaming matcher, one
at a time in file order, as a stream would deliver them; out comes
`source,source_id,golden_id` for every record (cells a spreadsheet would run
as a formula are neutralised: hub.csv_out).

It uses the same standardisation and the same match stage as the worker,
against an identity index held in this process's memory (hub.store.memory,
which behaves as the Redis index does), or against the Redis index at a
given URL (as the workers' own: the records join what it holds), so its
answers are the hub's answers. A line that cannot be used is reported on
stderr with its line number and skipped; the rest go on.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from typing import IO, Iterable

import orjson

from hub.config import PipelineConfig
from hub.csv_out import write_rows
from hub.records import InMessage, StageError, member_key
from hub.standardise import standardise_and_score
from hub.validation import decode_event

TEXT_FIELDS = ("given_name", "middle_name", "family_name", "birth_date", "gender", "national_id", "loyalty_id")
ADDRESS_FIELDS = {"address_line1": "line1", "address_line2": "line2", "city": "city", "region": "region",
                  "postcode": "postcode", "country": "country"}


@dataclass
class ResolveReport:
    records: int = 0
    rejected: int = 0
    golden_records: int = 0
    seconds: float = 0.0


def _text(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def to_event(line: dict, sequence: int, base_ms: int) -> dict:
    """A flat resolve record to a hub.CustomerEvent. Unknown keys are ignored,
    missing ones are null; records get increasing event times in file order."""
    event = {"source": _text(line.get("source")), "source_id": _text(line.get("source_id")),
             "event_time": base_ms + sequence, "op": "upsert", "record_type": "person"}
    for name in TEXT_FIELDS:
        event[name] = _text(line.get(name))
    email, phone = _text(line.get("email")), _text(line.get("phone"))
    event["emails"] = [{"address": email, "kind": None, "verified": False}] if email else []
    event["phones"] = [{"number": phone, "kind": None, "verified": False}] if phone else []
    address = {target: _text(line.get(source)) for source, target in ADDRESS_FIELDS.items()}
    event["addresses"] = [{**address, "kind": None, "verified": False}] if any(address.values()) else []
    return event


def _parse(lines: Iterable[str], errors: IO[str]) -> tuple[list[dict], int]:
    events, rejected = [], 0
    base_ms = int(time.time() * 1000) - 10 ** 9
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            print(f"line {number}: not JSON ({exc})", file=errors)
            rejected += 1
            continue
        if not isinstance(data, dict):
            print(f"line {number}: expected a JSON object", file=errors)
            rejected += 1
            continue
        flat = to_event(data, number, base_ms)
        if not flat["source"] or not flat["source_id"]:
            print(f"line {number}: missing_field: source and source_id are required", file=errors)
            rejected += 1
            continue
        event = decode_event(orjson.dumps(flat))
        if isinstance(event, StageError):
            print(f"line {number}: {event.reason}: {event.detail}", file=errors)
            rejected += 1
            continue
        events.append(event)
    return events, rejected


async def _resolve(events: list[dict], standardised: list[tuple[dict, dict]], pipeline: PipelineConfig, index,
                   secret: bytes, comparisons, keep_decisions: bool) -> list[tuple[str, str, str]]:
    """`keep_decisions`: the index outlives the run (a Redis), so `hub explain` can tell each decision."""
    from hub.stages.match import MatchStage

    stage = MatchStage(pipeline, index, secret, comparisons=comparisons)
    members: list[str] = []
    try:
        for offset, (event, (record, quality)) in enumerate(zip(events, standardised)):
            # handed over decoded, as the fused engine's ingest step hands it on: no Avro round trip per record
            canonical = {"record": record, "quality": quality, "ingested_at": event["event_time"],
                         "origin": {"topic": "resolve", "partition": 0, "offset": offset, "produced_at": None}}
            await stage.process([InMessage("resolve", 0, offset, None, None, record=canonical)],
                                outputs=keep_decisions)
            members.append(member_key(record["source"], record["source_id"]))
        # merges after a record was placed move it: read every record's final golden id
        entries = await index.members(list(dict.fromkeys(members)))
    finally:
        await index.close()
    return [(*m.split(":", 1), entries[m].golden_id) for m in dict.fromkeys(members) if m in entries]


def resolve_file(source: IO[str], out: IO[str], pipeline: PipelineConfig, *, redis_url: str | None = None,
                 secret: bytes | None = None, keyring=None, default_region: str = "GB", estimate: bool = True,
                 errors: IO[str] = sys.stderr) -> ResolveReport:
    """Without `redis_url` the records are matched against an identity index
    in this process's memory (hub.store.memory), gone when it returns, and
    `secret` (the blocking keys' hash key) defaults to a random one. With
    `redis_url` they go into that Redis index, and `secret` and `keyring`
    default to the workers' (HUB_PII_KEY / HUB_PII_KEYS, ConfigError when unset)."""
    started = time.monotonic()
    if redis_url is None:
        secret = secret or os.urandom(32)
    elif secret is None or keyring is None:
        from hub.config import load_settings

        settings = load_settings()
        secret, keyring = secret or settings.pii_secret(), keyring or settings.keyring()
    events, rejected = _parse(source, errors)
    standardised = [standardise_and_score(event, default_region=default_region) for event in events]
    comparisons = pipeline.match.comparison_rules()
    if estimate and events:
        comparisons, upper = estimated_comparisons(events, default_region, errors, comparisons,
                                                   records=[record for record, _ in standardised])
        if upper is not None:
            rules = pipeline.match
            rules = rules.model_copy(update={"upper_threshold": upper,
                                             "lower_threshold": min(rules.lower_threshold, upper)})
            pipeline = pipeline.model_copy(update={"match": rules})
    if redis_url is None:
        from hub.store.memory import MemoryIndex

        index = MemoryIndex()
    else:
        from hub.store.redis import RedisIdentityIndex

        index = RedisIdentityIndex.from_url(redis_url, keyring)
    rows = asyncio.run(_resolve(events, standardised, pipeline, index, secret, comparisons,
                                keep_decisions=redis_url is not None))
    write_rows(out, ["source", "source_id", "golden_id"], rows)
    return ResolveReport(records=len(rows), rejected=rejected, golden_records=len({r[2] for r in rows}),
                         seconds=time.monotonic() - started)


MIN_RECORDS_TO_ESTIMATE = 1000


def estimated_comparisons(events: list[dict], default_region: str, errors: IO[str], comparisons=None,
                          records: list[dict] | None = None):
    """m and u for this data, estimated without labels (u from random pairs,
    m by EM over blocked candidate pairs), before the stream is matched, and
    the merge threshold that follows from them: the total weight at which a
    pair is a match with posterior probability MERGE_PROBABILITY, given the
    estimated share of matches among all pairs. A small file says too little
    about its own error rates: below MIN_RECORDS_TO_ESTIMATE records the
    configured m and u and thresholds stay (None). `comparisons` are the
    configured ones (the packaged defaults when not given); `records`, the
    events already standardised (they are, when not given)."""
    if comparisons is None:
        from hub.matching.comparisons import DEFAULT_COMPARISONS

        comparisons = DEFAULT_COMPARISONS
    if len(events) < MIN_RECORDS_TO_ESTIMATE:
        print(f"{len(events)} records: too few to estimate m/u (needs {MIN_RECORDS_TO_ESTIMATE}); "
              "using the defaults", file=errors)
        return comparisons, None
    from hub.matching.estimate import estimate_parameters
    from hub.matching.features import blocking_values, features

    if records is None:
        records = [standardise_and_score(e, default_region=default_region)[0] for e in events]
    feature_list = [features(record) for record in records]
    estimate = estimate_parameters(comparisons, feature_list,
                                   [blocking_values(f) for f in feature_list])
    print(estimate.describe(), file=errors)
    return estimate.comparisons, round(estimate.upper_threshold(), 4)
