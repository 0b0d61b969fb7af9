"""Data-quality counters per day, source and attribute: what the data-quality
report reads (completeness, validity, dead letters by reason, over time).

`tally` is pure: a batch of standardised records (with their hub.Quality) and
of dead-lettered events in, counters out, keyed (day, field) where field is
`<source>|<attribute>|<counter>`, `<source>|*|records` or
`<source>|dlq|<reason>`. Per attribute: `present` (records holding a value
after standardisation), `values` (values kept) and `dropped` (values thrown
away as invalid, from the issue codes). Completeness of an attribute is
present / records; validity is values / (values + dropped).

`MemoryTallyStore` and `RedisTallyStore` add the counters up; Redis keeps
one hash per day (`hub:quality:{<day>}`, a hash tag per day) written with
one script call per batch (every counter of the day's hash), kept
`RETAIN_DAYS`. The counts are
statistics: a batch redelivered after a crash is counted again.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

from hub.standardise import DROPPED_CODES

RETAIN_DAYS = 400
ATTRIBUTES = ("given_name", "family_name", "birth_date", "gender", "emails", "phones", "addresses",
              "loyalty_id", "national_id", "organisation_name")
MULTI = ("emails", "phones", "addresses")
# issue code prefix -> the attribute whose value it dropped
_ISSUE_ATTRIBUTE = {"email": "emails", "phone": "phones", "address": "addresses", "postcode": "addresses",
                    "country": "addresses"}


def day_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def days_back(now_ms: int, days: int) -> list[str]:
    """The last `days` days up to and including today (UTC), oldest first."""
    today = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]


def tally(records: list[tuple[dict, dict]], rejected: list[tuple[str, str]], now_ms: int) -> dict[str, Counter]:
    """{day: Counter(field -> count)} for one batch: `records` are (standardised
    record, quality) pairs, `rejected` (source, reason) of dead letters."""
    counts: Counter = Counter()
    for record, quality in records:
        source = record["source"]
        if record.get("op") == "delete":
            continue
        counts[f"{source}|*|records"] += 1
        for attr in ATTRIBUTES:
            value = record.get(attr)
            if attr in MULTI:
                held = len(value or ())
                if held:
                    counts[f"{source}|{attr}|present"] += 1
                    counts[f"{source}|{attr}|values"] += held
            elif value is not None:
                counts[f"{source}|{attr}|present"] += 1
                counts[f"{source}|{attr}|values"] += 1
        for code in quality.get("issues") or ():
            if code in DROPPED_CODES:
                prefix = code.split(".", 1)[0]
                counts[f"{source}|{_ISSUE_ATTRIBUTE.get(prefix, prefix)}|dropped"] += 1
    for source, reason in rejected:
        counts[f"{source}|dlq|{reason}"] += 1
    return {day_of(now_ms): counts} if counts else {}


def report(days: dict[str, dict[str, int]]) -> dict:
    """Per source and attribute, over the given days: records, completeness,
    validity; dead letters by reason; and the same per day (trends)."""
    total: Counter = Counter()
    for fields in days.values():
        total.update(fields)
    sources = sorted({f.split("|", 1)[0] for f in total})

    def summary(fields, source):
        records = fields.get(f"{source}|*|records", 0)
        attributes = {}
        for attr in ATTRIBUTES:
            values, dropped = fields.get(f"{source}|{attr}|values", 0), fields.get(f"{source}|{attr}|dropped", 0)
            attributes[attr] = {
                "completeness": round(fields.get(f"{source}|{attr}|present", 0) / records, 4) if records else None,
                "validity": round(values / (values + dropped), 4) if values + dropped else None,
                "dropped": dropped}
        dlq = {f.rsplit("|", 1)[1]: n for f, n in fields.items() if f.startswith(f"{source}|dlq|")}
        received = records + sum(dlq.values())
        return {"records": records, "dead_letters": sum(dlq.values()), "dlq_by_reason": dict(sorted(dlq.items())),
                "dlq_rate": round(sum(dlq.values()) / received, 4) if received else None, "attributes": attributes}

    per_source = {source: summary(total, source) for source in sources}
    trend = {day: {source: summary(fields, source) for source in sources} for day, fields in sorted(days.items())}
    return {"sources": per_source, "days": trend}


class MemoryTallyStore:
    def __init__(self):
        self.days: dict[str, Counter] = {}

    def add(self, counts: dict[str, Counter]) -> None:
        for day, fields in counts.items():
            self.days.setdefault(day, Counter()).update(fields)

    def read(self, days: list[str]) -> dict[str, dict[str, int]]:
        return {day: dict(self.days.get(day, {})) for day in days}


def tally_key(day: str) -> str:
    return f"hub:quality:{{{day}}}"


# A batch's counters of one day in one command: as a HINCRBY each they were some 80 commands for a batch of
# 10 events, each a reply for the worker to read (a few µs of its CPU apiece), to tell it nothing.
ADD_COUNTS = """
for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
"""


class RedisTallyStore:
    """Synchronous (the ingest stage is): one script call per batch (a batch is counted on one day, the day
    it is ingested)."""

    def __init__(self, client):
        self.client = client
        self._add = client.register_script(ADD_COUNTS)  # loaded again by redis-py if the server lost it

    def add(self, counts: dict[str, Counter]) -> None:
        for day, fields in counts.items():
            if fields:
                args = [RETAIN_DAYS * 86_400, *(x for item in fields.items() for x in item)]
                # inside a pass on one server (hub.store.redis.client.HubRedis.writes_together) it goes out
                # with the pass's next round trip, with the script's source: nobody reads its reply
                later = getattr(self.client, "later", None)
                if later is None or not later([(("EVAL", ADD_COUNTS, 1, tally_key(day), *args), {})]):
                    self._add(keys=[tally_key(day)], args=args)

    def read(self, days: list[str]) -> dict[str, dict[str, int]]:
        pipe = self.client.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(tally_key(day))
        return {day: {f.decode(): int(n) for f, n in fields.items()} for day, fields in zip(days, pipe.execute())}
