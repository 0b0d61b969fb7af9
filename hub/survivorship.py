"""Survivorship: the golden record computed from its members' contributions.

Pure and order-independent: the same contributions give the same golden record
whatever order they arrived in. Single-valued attributes take the value of the
best contribution under the attribute's rule (source priority, then most
recent, then the member key as a deterministic tie-break) and record its
lineage; multi-valued attributes keep every value with its sources and mark
one preferred (verified first, then most sources, then most recent).
"""

from __future__ import annotations

from hub.config import SurvivorshipConfig
from hub.surveys import summary as survey_summary

SINGLE = ("record_type", "given_name", "middle_name", "family_name", "birth_date", "gender",
          "national_id", "loyalty_id", "organisation_name")
_CONTENT_SKIP = ("version", "updated_at", "trigger_produced_at", "cause")


def _rank_key(rule: str, priority: dict[str, int], member: str, contribution: dict):
    record = contribution["record"]
    source_rank = priority.get(record["source"], len(priority))
    recency = -record["event_time"]
    if rule == "most_recent":
        return (recency, source_rank, member)
    if rule == "most_complete":
        return (-contribution["quality"]["completeness"], source_rank, recency, member)
    return (source_rank, recency, member)


def _multi(contributions: list[tuple[str, dict]], attr: str, value_key, build) -> list[dict]:
    merged: dict[tuple, dict] = {}
    newest: dict[tuple, int] = {}
    for member, contribution in contributions:
        record = contribution["record"]
        for item in record[attr]:
            key = value_key(item)
            entry = merged.get(key)
            if entry is None:
                entry = merged[key] = build(item)
                entry["sources"] = []
                newest[key] = 0
            entry["verified"] = entry["verified"] or item["verified"]
            entry["sources"].append(member)
            newest[key] = max(newest[key], record["event_time"])
    values = sorted(merged.items(), key=lambda kv: (not kv[1]["verified"], -len(kv[1]["sources"]), -newest[kv[0]], kv[0]))
    result = []
    for index, (_, entry) in enumerate(values):
        entry["sources"] = sorted(set(entry["sources"]))
        entry["preferred"] = index == 0
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


def build_golden(golden_id: str, contributions: dict[str, dict], consents: dict[str, list[dict]],
                 rules: SurvivorshipConfig, surveys: dict[str, list[dict]] | None = None) -> dict:
    """The golden record's content (version and timestamps are set by `stamp`)."""
    priority = {name: rank for rank, name in enumerate(rules.source_priority)}
    items = sorted(contributions.items())
    golden: dict = {"golden_id": golden_id}
    lineage = {}
    for attr in SINGLE:
        rule = rules.rules.get(attr, rules.default_rule)
        holders = [(m, c) for m, c in items if c["record"][attr] is not None]
        if not holders:
            golden[attr] = "person" if attr == "record_type" else None
            continue
        member, contribution = min(holders, key=lambda mc: _rank_key(rule, priority, mc[0], mc[1]))
        record = contribution["record"]
        golden[attr] = record[attr]
        lineage[attr] = {"source": record["source"], "source_id": record["source_id"],
                         "event_time": record["event_time"], "rule": rule}
    golden["emails"] = _multi(items, "emails", lambda e: (e["address"],),
                              lambda e: {"address": e["address"], "verified": False})
    golden["phones"] = _multi(items, "phones", lambda p: (p["number"],),
                              lambda p: {"number": p["number"], "verified": False})
    address_fields = ("line1", "line2", "city", "region", "postcode", "country")
    golden["addresses"] = _multi(items, "addresses", lambda a: tuple(a[f] or "" for f in address_fields),
                                 lambda a: {**{f: a[f] for f in address_fields}, "verified": False})
    preferences: dict[str, tuple] = {}
    for member, contribution in items:
        record = contribution["record"]
        for key, value in record["preferences"].items():
            if key not in preferences or record["event_time"] > preferences[key][0]:
                preferences[key] = (record["event_time"], value)
    golden["preferences"] = {k: v for k, (_, v) in sorted(preferences.items())}
    golden["consents"] = winning_consents(consents)
    golden["survey"] = survey_summary(surveys or {})
    golden["lineage"] = lineage
    golden["members"] = [m for m, _ in items]
    scores = [c["quality"]["score"] for _, c in items]
    golden["quality_score"] = round(sum(scores) / len(scores), 4) if scores else 0.0
    golden["last_event_time"] = max((c["record"]["event_time"] for _, c in items), default=0)
    return golden


def content_equal(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(a.get(k) == b.get(k) for k in set(a) | set(b) if k not in _CONTENT_SKIP)


def changed_attributes(before: dict | None, after: dict) -> list[str]:
    if before is None:
        return sorted(k for k in after if k not in _CONTENT_SKIP and k != "golden_id")
    return sorted(k for k in set(before) | set(after) if k not in _CONTENT_SKIP and before.get(k) != after.get(k))


def stamp(content: dict, previous: dict | None, now_ms: int, cause: str, produced_at: int | None) -> dict:
    """Give new content its version; unchanged content keeps the previous record as is."""
    if previous is not None and content_equal(previous, content):
        return previous
    return {**content, "version": (previous["version"] + 1) if previous else 1, "updated_at": now_ms,
            "trigger_produced_at": produced_at, "cause": cause}
