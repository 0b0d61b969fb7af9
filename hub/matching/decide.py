"""The match decision for one record against its candidates: merge, review or
new, with the evidence that explains it. Pure: candidates come in as data.

Only the strongest few candidates are kept as evidence: they explain the
decision, and the rest would only make every audit record heavier.

Candidates are index members (other source records) with the golden id they
belong to; a golden record scores as its best-matching member. Every golden
record at or above the upper threshold is linked: if there are several, this
record proves they are one customer and they merge into the smallest id, so
the survivor does not depend on which worker or replay saw them first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from hub.matching.comparisons import Comparison, score

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


def new_golden_id(member: str) -> str:
    """Deterministic: the golden id a record founds is derived from the record's key."""
    return "G" + hashlib.blake2s(member.encode(), digest_size=10).hexdigest()


EVIDENCE_KEPT = 3
_NAMES = ("given_name", "family_name")


_PERSONAL = ("birth_date", "national_id", "loyalty_id")
_IDENTIFIERS = ("national_id", "loyalty_id")


def _name_agrees(label: str | None) -> bool:
    """A name level that says "the same name": exact, a nickname, or
    Jaro-Winkler at 0.9 or more (a typo). Lower similarity (Carter, Archer)
    says two names that merely look alike."""
    if not label:
        return False
    label = label.split(" (", 1)[0]  # "(names swapped)" reads the same
    if label in ("exact", "nickname"):
        return True
    kind, _, threshold = label.partition(">=")
    return kind in ("jaro_winkler", "levenshtein") and float(threshold or 0) >= 0.9


def _corroborated(total: float, evidence: list[tuple[str, str, float]], lower: float) -> float:
    """Three guards the independence assumption of Fellegi-Sunter misses,
    each capping the score below the merge threshold (review at most):

    - a shared surname and address with a different given name is a
      relative, not the same person, unless something only one person has
      agrees too (birth date, national id or loyalty card, at a level that is
      evidence of a match: exact, or one keystroke off);
    - a different given name with a surname that is not the same either is
      two people, whatever town, postcode or birth date they share, unless a
      national id or loyalty card agrees, or they were born the same day at
      the same street address (one person's record with its names garbled);
    - names alone (a common name, nothing else known on one side) must not
      merge two records.
    """
    levels = {attribute: level for attribute, level, _ in evidence}
    given = levels.get("given_name")
    if given is not None and given.startswith("else"):
        if _name_agrees(levels.get("family_name")):
            if not any(weight > 0 for attribute, _, weight in evidence if attribute in _PERSONAL):
                return min(total, lower - 1.0)
        elif levels.get("family_name", "null") != "null" and not (
                any(weight > 0 for attribute, _, weight in evidence if attribute in _IDENTIFIERS)
                or (levels.get("birth_date") == "exact" and levels.get("street") == "exact")):
            return min(total, lower - 1.0)
    corroborating = any(weight > 0 for attribute, _, weight in evidence if attribute not in _NAMES)
    if not corroborating:
        return min(total, lower)
    return total


def decide(member: str, feats: dict, candidates: list[Candidate], comparisons: tuple[Comparison, ...],
           upper: float, lower: float, max_candidates: int) -> Decision:
    best_per_golden: dict[str, tuple[float, Candidate, list]] = {}
    for candidate in candidates:
        if candidate.member == member or candidate.features.get("rt") != feats.get("rt"):
            continue
        total, evidence = score(comparisons, feats, candidate.features)
        total = _corroborated(total, evidence, lower)
        held = best_per_golden.get(candidate.golden_id)
        if held is None or (total, held[1].member) > (held[0], candidate.member):
            best_per_golden[candidate.golden_id] = (total, candidate, evidence)
    ranked = sorted(best_per_golden.items(), key=lambda item: (-item[1][0], item[0]))[:max_candidates]
    evidence = [
        {"golden_id": gid, "member": cand.member, "score": round(total, 4),
         "comparisons": [{"attribute": a, "level": lv, "weight": round(w, 4)} for a, lv, w in ev]}
        for gid, (total, cand, ev) in ranked[:EVIDENCE_KEPT]
    ]
    if not ranked:
        return Decision(NEW, new_golden_id(member), None, [], evidence)
    best_score = ranked[0][1][0]
    linked = sorted(gid for gid, (total, _, _) in ranked if total >= upper)
    if linked:
        return Decision(MERGE, linked[0], round(best_score, 4), linked[1:], evidence)
    outcome = REVIEW if best_score >= lower else NEW
    return Decision(outcome, new_golden_id(member), round(best_score, 4), [], evidence)
