"""A data-subject access export: everything the hub holds about one person,
as one JSON document.

Pure: the parts are read by the caller (the workbench) and assembled here:
the golden record with its lineage, every member source record as the hub
holds it (its contribution), the consent statements and survey answers held
per member, the golden record's history from the audit trail, the open and
decided review items naming its records, and per target whether it may
receive the record, what it last received (the key and a fingerprint of the
projection) and, when that is the current projection, the projection itself.
"""

from __future__ import annotations

from hub import history
from hub.config import PipelineConfig
from hub.consent import target_verdict
from hub.projection import encode, fingerprint, project

FORMAT = "hub.subject_access.v1"


def targets_view(golden: dict, pipeline: PipelineConfig, sent: dict[str, tuple[str, str]], now_ms: int) -> list[dict]:
    """Per target: the consent verdict now, and what it was last sent (from the syndication state)."""
    purposes = {p.name: p for p in pipeline.purposes}
    rows = []
    for target in pipeline.targets:
        verdict = target_verdict(golden, target, purposes, now_ms)
        projection = project(golden, target)
        current = fingerprint(encode(projection, target))
        held = sent.get(target.name)
        row = {"target": target.name, "topic": target.output_topic, "verdict": verdict,
               "fields": list(target.fields), "received": held is not None}
        if held is not None:
            key, sent_hash = held
            row.update({"key": key, "fingerprint": sent_hash, "current": sent_hash == current})
            if sent_hash == current:
                row["record"] = projection
        rows.append(row)
    return rows


def export(golden: dict, contributions: dict[str, dict], consents: dict[str, list[dict]],
           surveys: dict[str, list[dict]], audit_events: list[dict], reviews: list[dict],
           targets: list[dict], now_ms: int, requested_by: str) -> dict:
    gid = golden["golden_id"]
    return {
        "format": FORMAT, "generated_at": now_ms, "requested_by": requested_by, "golden_id": gid,
        "golden_record": golden,
        "lineage": golden.get("lineage") or {},
        "members": [{"member": member, "source": c["record"]["source"], "source_id": c["record"]["source_id"],
                     "record": c["record"], "quality": c.get("quality"), "stated_at": c.get("times")}
                    for member, c in sorted(contributions.items())],
        "consent_statements": {m: s for m, s in sorted(consents.items()) if s},
        "survey_answers": {m: a for m, a in sorted(surveys.items()) if a},
        "history": history.ordered(audit_events, gid),
        "reviews": reviews,
        "targets": targets,
    }
