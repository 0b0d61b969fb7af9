"""Survivorship: each source record's contribution, and the golden record
computed from the contributions.

Pure and order-independent: the same events give the same contributions, and
the same contributions the same golden record, whatever order they arrived
in. A contribution keeps, per attribute, the value and the time its source
last stated it: an upsert states every attribute, a patch (op=patch) only
those it carries, and the newer statement of each attribute wins.
Single-valued attributes take the value of the best contribution under the
attribute's rule (source priority, most recent, most complete, most frequent;
then the member key as a deterministic tie-break) and record its lineage;
multi-valued attributes keep every value with its sources and mark one
preferred (verified first, then most sources, then most recent). Data decay:
a value no source has stated for `stale_after_days` is flagged stale, and the
share of fresh values weighs in the quality score.
"""

from __future__ import annotations

import orjson

from hub.config import SurvivorshipConfig
from hub.matching.features import fold, hash_key
from hub.standardise import quality as score_quality
from hub.surveys import summary as survey_summary

SINGLE = ("record_type", "given_name", "middle_name", "family_name", "birth_date", "gender",
          "national_id", "loyalty_id", "organisation_name", "account_ref", "lifecycle")
MULTI = ("emails", "phones", "addresses")
TRACKED = (*SINGLE, *MULTI, "preferences")  # attributes whose statement time a contribution keeps
_EMPTY = (None, [], {})
# the weight of freshness in a golden record's quality score (the rest: its contributions' own scores)
FRESHNESS_WEIGHT = 0.2
# set when a version is stamped, not part of what a golden record says
STAMP_FIELDS = ("version", "updated_at", "trigger_produced_at", "cause")


def field_time(contribution: dict, attr: str) -> int:
    """When the contribution's source last stated this attribute (-1: never;
    a contribution kept before per-attribute times: its event time)."""
    times = contribution.get("times")
    if times is None:
        return contribution["record"]["event_time"]
    return times.get(attr, -1)


def _recompleted(quality: dict, record: dict) -> dict:
    completeness = score_quality(record, [], 0)["completeness"]
    return {**quality, "completeness": completeness,
            "score": round(0.6 * completeness + 0.4 * quality["validity"], 4)}


def merge_contribution(held: dict | None, record: dict, quality: dict) -> dict:
    """A source record's contribution after one more event: per attribute, the
    newer statement wins (an equal time: the larger value, so any order gives
    the same result). The record's quality is recomputed on the merged values,
    with the validity of its newest event."""
    at = record["event_time"]
    patch = record["op"] == "patch"
    if held is None:
        merged = {k: v for k, v in record.items() if k not in TRACKED}
        merged.update({a: ([] if a in MULTI else {} if a == "preferences" else None) for a in TRACKED})
        merged["event_time"] = at
        times: dict[str, int] = {}
        newest_quality = quality
    else:
        merged = dict(held["record"])
        times = {a: t for a in TRACKED if (t := field_time(held, a)) >= 0}
        newest_quality = held["quality"]
        if at > merged["event_time"] or (at == merged["event_time"]
                                         and quality["validity"] < newest_quality["validity"]):
            newest_quality = quality
        merged["event_time"] = max(merged["event_time"], at)
    for attr in TRACKED:
        value = record.get(attr)
        if patch and (value in _EMPTY or attr == "record_type"):
            continue  # not stated by this patch (a record's type is not patched: its default says nothing)
        known = times.get(attr, -1)
        if at > known or (at == known and orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
                          > orjson.dumps(merged.get(attr), option=orjson.OPT_SORT_KEYS)):
            merged[attr] = value
            times[attr] = at
    merged["op"] = "upsert"
    return {"record": merged, "quality": _recompleted(newest_quality, merged) if patch or held else quality,
            "times": times}


def _rank_key(rule: str, priority: dict[str, int], member: str, contribution: dict, attr: str,
              frequency: dict):
    record = contribution["record"]
    source_rank = priority.get(record["source"], len(priority))
    recency = -field_time(contribution, attr)
    if rule == "most_recent":
        return (recency, source_rank, member)
    if rule == "most_complete":
        return (-contribution["quality"]["completeness"], source_rank, recency, member)
    if rule == "most_frequent":
        return (-frequency[record[attr]], source_rank, recency, member)
    return (source_rank, recency, member)


def _multi(contributions: list[tuple[str, dict]], attr: str, value_key, build, stale_before: int | None,
           limit: int) -> list[dict]:
    merged: dict[tuple, dict] = {}
    newest: dict[tuple, int] = {}
    for member, contribution in contributions:
        record = contribution["record"]
        stated = field_time(contribution, attr)
        for item in record[attr]:
            key = value_key(item)
            entry = merged.get(key)
            if entry is None:
                entry = merged[key] = build(item)
                entry["sources"] = []
                newest[key] = 0
            entry["verified"] = entry["verified"] or item["verified"]
            entry["sources"].append(member)
            newest[key] = max(newest[key], stated)
    values = sorted(merged.items(), key=lambda kv: (not kv[1]["verified"], -len(kv[1]["sources"]), -newest[kv[0]], kv[0]))
    del values[limit:]  # the best-supported values: a golden record stays within what a broker accepts
    result = []
    for index, (key, entry) in enumerate(values):
        entry["sources"] = sorted(set(entry["sources"]))
        entry["preferred"] = index == 0
        entry["confirmed_at"] = newest[key]
        entry["stale"] = stale_before is not None and newest[key] < stale_before
        result.append(entry)
    return result


def winning_consents(statements_by_member: dict[str, list[dict]]) -> list[dict]:
    """The latest statement per (purpose, channel) over all members, by event_time."""
    best: dict[tuple[str, str], tuple] = {}
    for member, statements in statements_by_member.items():
        for st in statements:
            slot = (st["purpose"], st["channel"])
            rank = (st["event_time"], st["status"] != "granted", member)  # on a tie, the restrictive one wins
            if slot not in best or rank > best[slot][0]:
                best[slot] = (rank, member, st)
    return [{"subject": member, "statement": st} for slot, (_, member, st) in sorted(best.items())]


def household_id(golden: dict, secret: bytes) -> str | None:
    """B2C: people whose surname and preferred address agree share one id (a
    keyed hash: the id says nothing about either)."""
    if golden["record_type"] != "person" or not golden["family_name"] or not golden["addresses"]:
        return None
    address = golden["addresses"][0]
    postcode = (address["postcode"] or "").replace(" ", "").upper()
    street = fold(address["line1"])
    if not postcode or not street:
        return None
    return "HH" + hash_key(secret, f"household:{fold(golden['family_name'])}|{postcode}|{street}")


def build_golden(golden_id: str, contributions: dict[str, dict], consents: dict[str, list[dict]],
                 rules: SurvivorshipConfig, surveys: dict[str, list[dict]] | None = None,
                 now_ms: int | None = None, accounts: dict[str, str] | None = None,
                 household_secret: bytes | None = None) -> dict:
    """The golden record's content (version and timestamps are set by `stamp`).
    With `now_ms`, values no source has stated for `rules.stale_after_days` are
    flagged stale; `accounts` maps account source records to their golden ids
    (B2B); with `household_secret`, a person gets a household id (B2C)."""
    priority = {name: rank for rank, name in enumerate(rules.source_priority)}
    stale_before = None
    if now_ms is not None and rules.stale_after_days is not None:
        stale_before = now_ms - int(rules.stale_after_days * 86_400_000)
    items = sorted(contributions.items())
    golden: dict = {"golden_id": golden_id}
    lineage = {}
    for attr in SINGLE:
        rule = rules.rules.get(attr, rules.default_rule)
        holders = [(m, c) for m, c in items if c["record"].get(attr) is not None]
        if not holders:
            golden[attr] = "person" if attr == "record_type" else None
            continue
        frequency: dict = {}
        for _, c in holders:
            frequency[c["record"][attr]] = frequency.get(c["record"][attr], 0) + 1
        member, contribution = min(holders, key=lambda mc: _rank_key(rule, priority, mc[0], mc[1], attr, frequency))
        record = contribution["record"]
        golden[attr] = record[attr]
        # confirmed: the last time any source stated this same value
        confirmed = max(field_time(c, attr) for _, c in holders if c["record"][attr] == record[attr])
        lineage[attr] = {"source": record["source"], "source_id": record["source_id"],
                         "event_time": field_time(contribution, attr), "rule": rule, "confirmed_at": confirmed,
                         # what kind of record this is does not decay
                         "stale": stale_before is not None and confirmed < stale_before and attr != "record_type"}
    golden["emails"] = _multi(items, "emails", lambda e: (e["address"],),
                              lambda e: {"address": e["address"], "verified": False}, stale_before, rules.max_values)
    golden["phones"] = _multi(items, "phones", lambda p: (p["number"],),
                              lambda p: {"number": p["number"], "verified": False}, stale_before, rules.max_values)
    address_fields = ("line1", "line2", "city", "region", "postcode", "country")
    golden["addresses"] = _multi(items, "addresses", lambda a: tuple(a[f] or "" for f in address_fields),
                                 lambda a: {**{f: a[f] for f in address_fields}, "verified": False}, stale_before,
                                 rules.max_values)
    preferences: dict[str, tuple] = {}
    for member, contribution in items:
        record = contribution["record"]
        stated = field_time(contribution, "preferences")
        for key, value in record["preferences"].items():
            if key not in preferences or (stated, value) > preferences[key]:
                preferences[key] = (stated, value)
    golden["preferences"] = {k: v for k, (_, v) in sorted(preferences.items())[:rules.max_preferences]}
    golden["consents"] = winning_consents(consents)
    golden["account_golden_id"] = (accounts or {}).get(golden["account_ref"]) if golden["account_ref"] else None
    golden["household_id"] = household_id(golden, household_secret) if household_secret else None
    golden["survey"] = survey_summary(surveys or {})
    golden["lineage"] = lineage
    golden["members"] = [m for m, _ in items]
    stale = sorted({attr for attr, entry in lineage.items() if entry["stale"]}
                   | {attr for attr in MULTI for value in golden[attr] if value["stale"]})
    held_values = [entry["stale"] for attr, entry in lineage.items() if attr != "record_type"] + [
        value["stale"] for attr in MULTI for value in golden[attr]]
    golden["stale_attributes"] = stale
    golden["freshness"] = round(1 - sum(held_values) / len(held_values), 4) if held_values else 1.0
    scores = [c["quality"]["score"] for _, c in items]
    own = sum(scores) / len(scores) if scores else 0.0
    golden["quality_score"] = round((1 - FRESHNESS_WEIGHT) * own + FRESHNESS_WEIGHT * golden["freshness"], 4)
    golden["last_event_time"] = max((c["record"]["event_time"] for _, c in items), default=0)
    return golden


def next_stale_ms(golden: dict | None, stale_after_days: float | None) -> int | None:
    """When the golden record's next fresh value goes stale (None: never)."""
    if golden is None or stale_after_days is None:
        return None
    confirmed = [entry["confirmed_at"] for attr, entry in golden["lineage"].items()
                 if attr != "record_type" and not entry["stale"]]
    confirmed += [value["confirmed_at"] for attr in MULTI for value in golden[attr] if not value["stale"]]
    return min(confirmed) + int(stale_after_days * 86_400_000) + 1 if confirmed else None


def content_equal(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(a.get(k) == b.get(k) for k in set(a) | set(b) if k not in STAMP_FIELDS)


def changed_attributes(before: dict | None, after: dict) -> list[str]:
    if before is None:
        return sorted(k for k in after if k not in STAMP_FIELDS and k != "golden_id")
    return sorted(k for k in set(before) | set(after) if k not in STAMP_FIELDS and before.get(k) != after.get(k))


def stamp(content: dict, previous: dict | None, now_ms: int, cause: str, produced_at: int | None) -> dict:
    """Give new content its version; unchanged content keeps the previous record as is."""
    if previous is not None and content_equal(previous, content):
        return previous
    return {**content, "version": (previous["version"] + 1) if previous else 1, "updated_at": now_ms,
            "trigger_produced_at": produced_at, "cause": cause}
