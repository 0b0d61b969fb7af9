"""What a pipeline configuration says, normalised, and what changed between
two of them: the content of the `config_changed` and `parameters_changed`
audit events and of `hub history --config`.

Pure. `summary` keeps what governs who receives what and how records are
matched and merged (sources, targets with their purposes, fields and token
digests, purposes, match rules, survivorship, retention, quality, connectors
without credentials); `fingerprint` is a digest of it; `diff` lists each
changed setting as a dotted path with its value before and after (JSON), and
`describe_changes` says it in one line (tokens added or removed by digest).
Token digests appear shortened to `TOKEN_DIGEST_CHARS` hex characters: enough
to tell tokens apart, and only ever digests of random tokens.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

import orjson

from hub.config import PipelineConfig
from hub.messages import audit_event

TOKEN_DIGEST_CHARS = 12
CONFIG_KEY_PREFIX = "config:"  # audit topic key of configuration events: config:<app id>


def short_digest(digest: str) -> str:
    return digest[:TOKEN_DIGEST_CHARS]


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def summary(pipeline: PipelineConfig) -> dict:
    """The configuration as plain JSON-able data, in a stable order."""
    def tokens(digests: list[str]) -> list[str]:
        return sorted(short_digest(d) for d in digests)

    return {
        "sources": {s.name: {"topic": s.raw_topic, "format": s.format, "schema_registry_url": s.schema_registry_url,
                             "tokens": tokens(s.tokens_sha256)} for s in pipeline.sources},
        "targets": {t.name: {"topic": t.output_topic, "purposes": sorted(t.purposes),
                             "legal_bases": sorted(t.legal_bases), "channels": sorted(t.channels),
                             "fields": list(t.fields), "key": t.key, "format": t.format,
                             "record_types": sorted(t.record_types), "tokens": tokens(t.tokens_sha256),
                             "audit_reads": t.audit_reads} for t in pipeline.targets},
        "purposes": {p.name: {"granted_by_default": p.granted_by_default} for p in pipeline.purposes},
        "steward_tokens": tokens(pipeline.steward_tokens_sha256),
        "match": pipeline.match.model_dump(),
        "survivorship": pipeline.survivorship.model_dump(),
        "retention": pipeline.retention.model_dump(),
        "quality": pipeline.quality.model_dump(),
        "partitions": pipeline.partitions,
        "topics": pipeline.topics.model_dump(),
        "connectors": {c.name: {"url": _without_password(c.url), "target": c.target, "source": c.source}
                       for c in pipeline.connectors},
    }


def fingerprint(data: dict) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _json(value) -> str | None:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _leaves(data, path: str = "") -> dict[str, object]:
    """Dotted path -> value, down to values that are not mappings (lists stay whole)."""
    if isinstance(data, dict) and data:
        found: dict[str, object] = {}
        for key in sorted(data):
            found.update(_leaves(data[key], f"{path}.{key}" if path else str(key)))
        return found
    return {path: data}


def diff(before: dict | None, after: dict) -> list[dict]:
    """Each setting whose value differs: {attribute: dotted path, before, after} (JSON; None: absent)."""
    old, new = _leaves(before or {}), _leaves(after)
    return [{"attribute": path, "before": _json(old.get(path)), "after": _json(new.get(path))}
            for path in sorted(set(old) | set(new)) if old.get(path) != new.get(path)]


def describe_changes(changes: list[dict], limit: int = 1000) -> str:
    """One line: what changed, with tokens added or removed by digest."""
    parts = []
    for change in changes:
        path = change["attribute"]
        before = orjson.loads(change["before"]) if change["before"] is not None else None
        after = orjson.loads(change["after"]) if change["after"] is not None else None
        if path.endswith("tokens") and isinstance(before or after or [], list):
            added = sorted(set(after or []) - set(before or []))
            removed = sorted(set(before or []) - set(after or []))
            words = [f"token {d} added" for d in added] + [f"token {d} removed" for d in removed]
            parts.append(f"{path}: {', '.join(words)}")
        elif before is None:
            parts.append(f"{path} added")
        elif after is None:
            parts.append(f"{path} removed")
        else:
            parts.append(f"{path} {change['before']} -> {change['after']}")
    text = "; ".join(parts) or "no change"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def config_event(app_id: str, new: dict, old: dict | None, old_fingerprint: str | None, now_ms: int) -> dict:
    """The `config_changed` audit event (hub.AuditEvent) of a worker starting with configuration `new`."""
    changes = diff(old, new)
    first = old is None
    new_fingerprint = fingerprint(new)
    return audit_event(f"C{new_fingerprint}:{old_fingerprint or 'none'}", now_ms, "config_changed",
                       (f"configuration {new_fingerprint} (first recorded)" if first else
                        f"configuration {old_fingerprint} -> {new_fingerprint}: {describe_changes(changes, 900)}"),
                       subject=app_id, changed_attributes=sorted({c["attribute"].split(".")[0] for c in changes}),
                       changes=changes)


def parameters_summary(comparisons: list[dict], upper_threshold: float | None, lower_threshold: float | None,
                       version: int) -> dict:
    """Match parameters as `hub estimate` stores them (m and u per comparison level), for a diff."""
    levels = {}
    for comparison in comparisons:
        for level in comparison["levels"]:
            label = level["kind"] if level.get("threshold") is None else f"{level['kind']}@{level['threshold']}"
            levels[f"{comparison['attribute']}.{label}"] = {"m": round(level["m"], 6), "u": round(level["u"], 6)}
    return {"version": version, "upper_threshold": upper_threshold, "lower_threshold": lower_threshold,
            "levels": levels}


def parameters_event(app_id: str, old: dict, new: dict, records: int, now_ms: int) -> dict:
    """The `parameters_changed` audit event of `hub estimate` storing new m/u and thresholds."""
    changes = diff(old, new)
    return audit_event(f"P{new['version']}:{fingerprint(new)}", now_ms, "parameters_changed",
                       f"hub estimate: match parameters version {old.get('version', 0)} -> {new['version']} "
                       f"(estimated from {records} records): {describe_changes(changes, 700)}",
                       subject=app_id, before_version=old.get("version", 0), after_version=new["version"],
                       changed_attributes=sorted({c["attribute"].split(".")[0] for c in changes}), changes=changes)


def describe_events(events: list[dict]) -> str:
    """`hub history --config`: configuration and parameter changes, oldest first."""
    from datetime import datetime, timezone

    unique = {e["audit_id"]: e for e in events}  # a change recorded twice (workers starting together) once
    lines = []
    for event in sorted(unique.values(), key=lambda e: (e["at"], e["audit_id"])):
        when = datetime.fromtimestamp(event["at"] / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        lines.append(f"{when}Z  {event['kind']}  {event['subject'] or ''}  {event['cause']}")
        for change in event.get("changes") or ():
            lines.append(f"    {change['attribute']}: {change['before'] or '-'} → {change['after'] or '-'}")
    return "\n".join(lines) if lines else "no configuration changes recorded"
