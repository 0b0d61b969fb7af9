"""The records the hub writes to its own topics, built in one place: audit
events (hub.AuditEvent, the `audit` topic) and instructions to the master
stage (hub.LinkedRecord, `customer.linked`). Every field of the schema is
set here, so a caller says only what its event is about, and a field added
to a schema is added once."""

from __future__ import annotations

from typing import Iterable


def audit_event(audit_id: str, at: int, kind: str, cause: str, *, golden_id: str | None = None,
                subject: str | None = None, decision=None, before_version: int | None = None,
                after_version: int | None = None, changed_attributes: Iterable[str] = (),
                changes: Iterable[dict] = (), sealed: bytes | None = None) -> dict:
    """A hub.AuditEvent. `decision`: a (schema name, MatchDecision) pair, which tells fastavro the
    union's branch (without it, it tries each branch: twice as slow)."""
    return {"audit_id": audit_id, "at": at, "kind": kind, "golden_id": golden_id, "subject": subject,
            "cause": cause, "decision": decision, "before_version": before_version, "after_version": after_version,
            "changed_attributes": list(changed_attributes), "changes": list(changes), "sealed": sealed}


def link_instruction(golden_id: str, kind: str, cause: str, *, canonical=None, absorbed: Iterable[str] = (),
                     split_member: str | None = None, split_to: str | None = None) -> dict:
    """A hub.LinkedRecord for the master: `contribution` (a source record, `canonical` as a (schema name,
    record) pair, joining `golden_id` and folding in `absorbed`), `recompute` (no new contribution:
    consent, a survey, a timer), `erase`, or a steward's split."""
    return {"golden_id": golden_id, "kind": kind, "canonical": canonical, "decision": None,
            "absorbed_golden_ids": list(absorbed), "cause": cause, "split_member": split_member,
            "split_to": split_to}
