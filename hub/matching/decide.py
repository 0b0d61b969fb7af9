"""The match decision for one record against its candidates: merge, review or
new, with the evidence that explains it. Pure: candidates come in as data.

Only the strongest few candidates are kept as evidence: they explain the
decision, and the rest would only make every audit record heavier.

Candidates are index members (other source records) with the golden id they
belong to; a golden record scores as its best-matching member. Every golden
record at or above the upper threshold is linked: if there are several, this
record proves they are one customer and they merge into the smallest id, so
the survivor does not depend on which worker or replay saw them first.

Over-merge guardrails (`Guardrails`): a merge that would grow a golden record
past `max_golden_size` source records, or that would join two or more golden
records each holding `max_bridged_size` or more (one record chaining two
large clusters), goes to steward review instead, and the decision says why.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping

from hub.matching.comparisons import Comparison, Frequencies, Reading, read_pair

MERGE, REVIEW, NEW, EXISTING = "merge", "review", "new", "existing"


@dataclass(slots=True)
class Candidate:
    member: str
    golden_id: str
    features: dict


@dataclass(slots=True)
class Decision:
    outcome: str
    golden_id: str
    score: float | None
    absorbed: list[str] = field(default_factory=list)
    evidence: list[dict] = field(default_factory=list)
    held_for_review: str | None = None


@dataclass(frozen=True, slots=True)
class Guardrails:
    """Limits on what one automatic merge may do (None: no limit)."""

    max_golden_size: int | None = None
    max_bridged_size: int | None = None


def new_golden_id(member: str) -> str:
    """Deterministic: the golden id a record founds is derived from the record's key."""
    return "G" + hashlib.blake2s(member.encode(), digest_size=10).hexdigest()


EVIDENCE_KEPT = 3
# Attributes that do not lift the names-only guard: they describe the name (a
# middle name) or are shared by half of everyone (gender), so a pair with
# nothing else still rests on its names.
_NAME_LIKE = frozenset(("given_name", "family_name", "middle_name", "gender"))
_PERSONAL = ("birth_date", "national_id", "loyalty_id")
_IDENTIFIERS = ("national_id", "loyalty_id")
_TELLS_RELATIVES_APART = ("gender", "middle_name")


def _corroborated(total: float, readings: list[Reading], lower: float) -> float:
    """Three guards the independence assumption of Fellegi-Sunter misses,
    each capping the score below the merge threshold (review at most):

    - a shared surname with a different given name is a relative (a twin, a
      household member), not the same person, unless something only one
      person has agrees too (birth date, national id or loyalty card, at a
      level that is evidence of a match) and nothing that tells relatives
      apart disagrees (gender, middle name: twins share a birth date);
    - a different given name with a surname that is not the same either is
      two people, whatever town, postcode or birth date they share, unless a
      national id or loyalty card agrees, or they were born the same day at
      the same street address (one person's record with its names garbled);
    - names alone must not merge two records: a pair that has nothing but
      names to compare (every other attribute missing on one side or the
      other) is scored, but reviewed at most. Attributes present and
      disagreeing are evidence, and the score already counts them.
    """
    if total <= lower - 1.0:
        return total  # below every cap already: no guard can lower it (most candidates a record meets)
    by_attribute = {r.comparison.attribute: r for r in readings}
    given, family = by_attribute.get("given_name"), by_attribute.get("family_name")
    if given is not None and given.level is not None and given.level.kind == "else":
        if family is not None and family.level is not None and family.level.agrees:
            if not any(r.weight > 0 for r in readings if r.comparison.attribute in _PERSONAL) or any(
                    _kind(by_attribute.get(attribute)) == "else" for attribute in _TELLS_RELATIVES_APART):
                return min(total, lower - 1.0)
        elif family is not None and family.level is not None and not (
                any(r.weight > 0 for r in readings if r.comparison.attribute in _IDENTIFIERS)
                or (_kind(by_attribute.get("birth_date")) == "exact" and _kind(by_attribute.get("street")) == "exact")):
            return min(total, lower - 1.0)
    if all(r.level is None for r in readings if r.comparison.attribute not in _NAME_LIKE):
        return min(total, lower)
    return total


def _kind(reading: Reading | None) -> str | None:
    return reading.level.kind if reading is not None and reading.level is not None else None


def _held(linked: list[str], sizes: Mapping[str, int] | None, guardrails: Guardrails | None) -> str | None:
    """Why merging into these golden records is held for review (None: it is not)."""
    if guardrails is None or sizes is None:
        return None
    held = [sizes.get(gid, 0) for gid in linked]
    if guardrails.max_golden_size is not None and sum(held) + 1 > guardrails.max_golden_size:
        return (f"the golden record would hold {sum(held) + 1} source records, more than "
                f"max_golden_size {guardrails.max_golden_size}")
    if guardrails.max_bridged_size is not None and len(linked) > 1:
        large = sorted((n for n in held if n >= guardrails.max_bridged_size), reverse=True)
        if len(large) > 1:
            return (f"this record would join {len(large)} golden records of {', '.join(map(str, large))} source "
                    f"records (max_bridged_size {guardrails.max_bridged_size})")
    return None


def decide(member: str, feats: dict, candidates: list[Candidate], comparisons: tuple[Comparison, ...],
           upper: float, lower: float, max_candidates: int, *, frequencies: Frequencies | None = None,
           golden_sizes: Mapping[str, int] | None = None, guardrails: Guardrails | None = None) -> Decision:
    """`frequencies` gives term frequencies of this record's values (see
    comparisons.read_pair); `golden_sizes` the source records each candidate
    golden record holds, for the guardrails."""
    best_per_golden: dict[str, tuple[float, Candidate, list[Reading]]] = {}
    for candidate in candidates:
        if candidate.member == member or candidate.features.get("rt") != feats.get("rt"):
            continue
        total, readings = read_pair(comparisons, feats, candidate.features, frequencies)
        total = _corroborated(total, readings, lower)
        held = best_per_golden.get(candidate.golden_id)
        if held is None or (total, held[1].member) > (held[0], candidate.member):
            best_per_golden[candidate.golden_id] = (total, candidate, readings)
    ranked = sorted(best_per_golden.items(), key=lambda item: (-item[1][0], item[0]))[:max_candidates]
    evidence = [
        {"golden_id": gid, "member": cand.member, "score": round(total, 4),
         "comparisons": [{"attribute": r.comparison.attribute, "level": r.label, "weight": round(r.weight, 4)}
                         for r in readings]}
        for gid, (total, cand, readings) in ranked[:EVIDENCE_KEPT]
    ]
    if not ranked:
        return Decision(NEW, new_golden_id(member), None, [], evidence)
    best_score = ranked[0][1][0]
    linked = sorted(gid for gid, (total, _, _) in ranked if total >= upper)
    if linked:
        reason = _held(linked, golden_sizes, guardrails)
        if reason is None:
            return Decision(MERGE, linked[0], round(best_score, 4), linked[1:], evidence)
        return Decision(REVIEW, new_golden_id(member), round(best_score, 4), [], evidence, reason)
    outcome = REVIEW if best_score >= lower else NEW
    return Decision(outcome, new_golden_id(member), round(best_score, 4), [], evidence)
