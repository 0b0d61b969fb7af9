"""A golden record's history: what each change did, and the record as it was
at any past time, rebuilt from the audit trail alone.

Pure. Every golden change's audit event carries each changed attribute's
value before and after (JSON), so folding a golden id's events in order gives
its state after each of them; a merge into another record, a withdrawal of
its last member or an erasure ends it. Events are ordered by their time, then
by the version they produced, never by where they were read.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import orjson

from hub.survivorship import STAMP_FIELDS

_ENDS = ("golden_merged", "member_withdrawn", "golden_deleted", "erased")


def erased_id(golden_id: str) -> str:
    """The id an erasure's audit event carries instead of the golden id (nothing personal in it)."""
    return "H" + hashlib.blake2s(golden_id.encode(), digest_size=10).hexdigest()


def _json(value) -> str | None:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def diff(before: dict | None, after: dict | None) -> list[dict]:
    """Each attribute whose value differs, with its value before and after (JSON; None when absent)."""
    before, after = before or {}, after or {}
    names = sorted(k for k in set(before) | set(after) if k not in STAMP_FIELDS)
    return [{"attribute": k, "before": _json(before.get(k)), "after": _json(after.get(k))}
            for k in names if before.get(k) != after.get(k)]


def _order(event: dict) -> tuple:
    version = event.get("after_version")
    if version is None:  # an end: after the version it ended
        version = (event.get("before_version") or 0) + 0.5
    return (event["at"], version, event["audit_id"])


def ordered(events: list[dict], golden_id: str) -> list[dict]:
    """This golden record's events (its own, and its erasure), oldest first, without duplicates
    (at-least-once delivery may repeat an event; its audit id is the same)."""
    ids = {golden_id, erased_id(golden_id)}
    unique = {e["audit_id"]: e for e in events if e.get("golden_id") in ids}
    return sorted(unique.values(), key=_order)


def rebuild(events: list[dict], golden_id: str, at_ms: int | None = None) -> dict | None:
    """The golden record as it stood at `at_ms` (now when None): its version
    and every attribute that had a value; None when it did not exist then."""
    state: dict | None = None
    for event in ordered(events, golden_id):
        if at_ms is not None and event["at"] > at_ms:
            break
        if event["kind"] in _ENDS:
            state = None
        elif event["kind"] in ("golden_created", "golden_updated") and event.get("changes") is not None:
            state = {} if event["kind"] == "golden_created" or state is None else state
            for change in event["changes"]:
                if change["after"] is None:
                    state.pop(change["attribute"], None)
                else:
                    state[change["attribute"]] = orjson.loads(change["after"])
            state["golden_id"] = golden_id
            state["version"] = event["after_version"]
    return state


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _short(value: str | None, width: int = 300) -> str:
    if value is None:
        return "-"
    return value if len(value) <= width else value[:width - 1] + "…"


def describe(events: list[dict], golden_id: str) -> str:
    """The history as text, one block per event, oldest first."""
    lines = []
    for event in ordered(events, golden_id):
        versions = ""
        if event.get("before_version") is not None or event.get("after_version") is not None:
            versions = f" v{event.get('before_version') or '-'}→v{event.get('after_version') or '-'}"
        subject = f" subject {event['subject']}" if event.get("subject") else ""
        lines.append(f"{_time(event['at'])}  {event['kind']}{versions}  cause: {event['cause']}{subject}")
        decision = event.get("decision")
        if decision:
            lines.append(f"    match: {decision['outcome']} score {decision['score']:.2f} "
                         f"(merged {', '.join(decision['merged_golden_ids']) or 'none'})")
        for change in event.get("changes") or ():
            lines.append(f"    {change['attribute']}: {_short(change['before'])} → {_short(change['after'])}")
    if not lines:
        return f"{golden_id}: no audit events found"
    return "\n".join(lines)
