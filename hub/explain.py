"""Explanations of match decisions for people: why a source record belongs to
its golden record, attribute by attribute, each by the name of the comparison
level that held (docs/matching.md). Pure formatting of the decision the match
stage kept (hub.MatchDecision as JSON)."""

from __future__ import annotations


def explain_text(member: str, golden_id: str | None, decision: dict | None) -> str:
    if golden_id is None:
        return f"{member}: not in the identity index (never seen, deleted or erased)"
    if decision is None:
        return f"{member}: in golden record {golden_id}; no decision kept for it"
    lines = [f"{member} -> golden record {golden_id}",
             f"decision: {decision['outcome']}"
             + (f" (score {decision['score']:+.2f}; merge at >= {decision['upper_threshold']}, "
                f"review at >= {decision['lower_threshold']})" if decision["score"] is not None else
                " (no candidate found under its blocking keys)")]
    if decision.get("held_for_review"):
        lines.append(f"held for review instead of merging: {decision['held_for_review']}")
    if decision["golden_id"] != golden_id:
        lines.append(f"placed in {decision['golden_id']} at the time; that record has since been merged into {golden_id}")
    if decision["merged_golden_ids"]:
        lines.append(f"this record joined golden records: {', '.join(decision['merged_golden_ids'])} into it")
    if decision["blocking_keys_skipped"]:
        lines.append(f"{decision['blocking_keys_skipped']} blocking key(s) skipped: shared by too many records")
    for rank, candidate in enumerate(decision["candidates"], 1):
        lines.append(f"candidate {rank}: {candidate['member']} in {candidate['golden_id']}, "
                     f"score {candidate['score']:+.2f}")
        for comparison in candidate["comparisons"]:
            lines.append(f"    {comparison['attribute']:<18} {comparison['level']:<28} {comparison['weight']:+7.2f}")
    return "\n".join(lines)
