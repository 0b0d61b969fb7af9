"""Declarative per-attribute comparisons as ordered levels, Fellegi-Sunter style.

Each comparison names a feature and lists levels, tried in order: the first
level that holds decides that attribute's match weight, log2(m/u). A missing
value on either side is the null level (weight 0, no evidence either way).
Level kinds: exact, jaro_winkler and levenshtein at a threshold (similarity),
damerau at a threshold (at most that many insertions, deletions,
substitutions or transpositions: a mistyped identifier or date), street
(Jaro-Winkler at a threshold between street lines with the same house
numbers), date
(partial-date aware), date_swap (day and month transposed), nickname (known
diminutives, hub.matching.nicknames), else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler, Levenshtein

from hub import caches
from hub.matching.nicknames import same_name


@dataclass(frozen=True, slots=True)
class Level:
    kind: str
    m: float
    u: float
    threshold: float | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}>={self.threshold}" if self.threshold is not None else self.kind

    @property
    def weight(self) -> float:
        return math.log2(self.m / self.u)


@dataclass(frozen=True, slots=True)
class Comparison:
    attribute: str
    feature: str
    levels: tuple[Level, ...]
    weights: tuple[float, ...] = field(init=False)
    labels: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(level.weight for level in self.levels))
        object.__setattr__(self, "labels", tuple(level.label for level in self.levels))


def _dates_agree(a: str, b: str) -> bool:
    """Partial dates agree when the shorter is a prefix of the longer (1984-07 ~ 1984-07-12)."""
    return a.startswith(b) if len(a) >= len(b) else b.startswith(a)


def _day_month_swapped(a: str, b: str) -> bool:
    return len(a) == len(b) == 10 and a[:4] == b[:4] and a[5:7] == b[8:10] and a[8:10] == b[5:7] and a != b


@lru_cache(maxsize=caches.CUSTOMER_VALUES)
def _house_numbers(line: str) -> tuple[str, ...]:
    return tuple(token for token in line.split() if any(c.isdigit() for c in token))


def _same_house_numbers(a: str, b: str) -> bool:
    """1 and 3 Station Road are different addresses however alike the text; a
    line without a number on one side (a PO box, a mistyped line) is not held
    against it."""
    numbers_a, numbers_b = _house_numbers(a), _house_numbers(b)
    return not numbers_a or not numbers_b or numbers_a == numbers_b


def _holds(level: Level, a: str, b: str) -> bool:
    kind = level.kind
    if kind == "exact":
        return a == b
    if kind == "jaro_winkler":
        return JaroWinkler.similarity(a, b) >= level.threshold
    if kind == "levenshtein":
        return Levenshtein.normalized_similarity(a, b) >= level.threshold
    if kind == "street":
        return _same_house_numbers(a, b) and JaroWinkler.similarity(a, b) >= level.threshold
    if kind == "damerau":
        return DamerauLevenshtein.distance(a, b, score_cutoff=int(level.threshold)) <= level.threshold
    if kind == "date":
        return _dates_agree(a, b)
    if kind == "date_swap":
        return _day_month_swapped(a, b)
    if kind == "nickname":
        return same_name(a, b)
    return kind == "else"


def compare(comparison: Comparison, a, b) -> tuple[int, float]:
    """Index of the level that holds (-1 for null) and its weight. Lists compare
    as their best-agreeing pair (any shared e-mail is an exact e-mail match)."""
    if not a or not b:
        return -1, 0.0
    levels = comparison.levels
    last = len(levels) - 1
    # the scoring hot path: a scalar pair (most features) without building pairs
    if type(a) is not list and type(b) is not list:
        for i in range(last):
            if _holds(levels[i], a, b):
                return i, comparison.weights[i]
        return last, comparison.weights[last]
    left = a if type(a) is list else (a,)
    right = b if type(b) is list else (b,)
    for i in range(last):
        level = levels[i]
        for x in left:
            for y in right:
                if _holds(level, x, y):
                    return i, comparison.weights[i]
    return last, comparison.weights[last]


_SWAP = ("gn", "fn")


def _swapped(b: dict) -> dict:
    return {**b, "gn": b.get("fn"), "fn": b.get("gn")}


def score(comparisons: tuple[Comparison, ...], a: dict, b: dict) -> tuple[float, list[tuple[str, str, float]]]:
    """Total match weight of two feature dicts and the evidence per attribute.
    Given and family name are also compared the other way round (a record
    with them swapped); the reading with more weight counts, and says so."""
    total, evidence = _score(comparisons, a, b, "")
    if (a.get("gn") and a.get("fn") and b.get("gn") and b.get("fn") and a["gn"] != b["gn"]
            and max(JaroWinkler.similarity(a["gn"], b["fn"]), JaroWinkler.similarity(a["fn"], b["gn"])) >= 0.8):
        reversed_total, reversed_evidence = _score(comparisons, a, _swapped(b), " (names swapped)")
        if reversed_total > total:
            return reversed_total, reversed_evidence
    return total, evidence


def _score(comparisons, a: dict, b: dict, note: str) -> tuple[float, list[tuple[str, str, float]]]:
    total = 0.0
    evidence = []
    for comparison in comparisons:
        feature = comparison.feature
        index, weight = compare(comparison, a.get(feature), b.get(feature))
        total += weight
        label = "null" if index < 0 else comparison.labels[index]
        if note and feature in _SWAP:
            label += note
        evidence.append((comparison.attribute, label, weight))  # rounded where it is shown (decide)
    return total, evidence


def _lv(kind: str, m: float, u: float, threshold: float | None = None) -> Level:
    return Level(kind, m, u, threshold)


# Starting m/u values from the record-linkage literature for person data; the
# matching issue replaces them with estimates from the stream (EM).
DEFAULT_COMPARISONS: tuple[Comparison, ...] = (
    Comparison("given_name", "gn", (
        _lv("exact", 0.85, 0.01), _lv("jaro_winkler", 0.07, 0.005, 0.92), _lv("nickname", 0.03, 0.001),
        _lv("jaro_winkler", 0.035, 0.02, 0.80), _lv("else", 0.015, 0.964))),
    Comparison("family_name", "fn", (
        _lv("exact", 0.88, 0.005), _lv("jaro_winkler", 0.06, 0.003, 0.92),
        _lv("jaro_winkler", 0.03, 0.01, 0.80), _lv("else", 0.03, 0.982))),
    Comparison("birth_date", "dob", (
        _lv("exact", 0.85, 0.0005), _lv("date", 0.06, 0.005), _lv("date_swap", 0.02, 0.0002),
        _lv("damerau", 0.03, 0.003, 1), _lv("else", 0.04, 0.9913))),
    Comparison("email", "em", (
        _lv("exact", 0.6, 0.0001), _lv("jaro_winkler", 0.1, 0.001, 0.95), _lv("else", 0.3, 0.9989))),
    # no "one keystroke off" level for phones: numbers come in blocks, neighbours' differ by one digit
    Comparison("phone", "ph", (_lv("exact", 0.6, 0.0002), _lv("else", 0.4, 0.9998))),
    Comparison("street", "st", (
        _lv("exact", 0.6, 0.0005), _lv("street", 0.15, 0.002, 0.9), _lv("else", 0.25, 0.9975))),
    Comparison("postcode", "pc", (
        _lv("exact", 0.75, 0.005), _lv("damerau", 0.05, 0.01, 1), _lv("else", 0.2, 0.985))),
    Comparison("city", "ci", (
        _lv("exact", 0.8, 0.01), _lv("jaro_winkler", 0.05, 0.005, 0.9), _lv("else", 0.15, 0.985))),
    Comparison("national_id", "nid", (
        _lv("exact", 0.9, 0.00001), _lv("damerau", 0.05, 0.0001, 1), _lv("else", 0.05, 0.99989))),
    # no "one keystroke off" level: cards are numbered in sequence, a family's differ by one digit
    Comparison("loyalty_id", "loy", (_lv("exact", 0.95, 0.00001), _lv("else", 0.05, 0.99999))),
    Comparison("organisation_name", "org", (
        _lv("exact", 0.9, 0.001), _lv("jaro_winkler", 0.06, 0.005, 0.9), _lv("else", 0.04, 0.994))),
)


def to_json(comparisons: tuple[Comparison, ...]) -> list[dict]:
    return [{"attribute": c.attribute, "feature": c.feature,
             "levels": [{"kind": lv.kind, "threshold": lv.threshold, "m": lv.m, "u": lv.u} for lv in c.levels]}
            for c in comparisons]


def from_json(data: list[dict]) -> tuple[Comparison, ...]:
    return tuple(Comparison(c["attribute"], c["feature"],
                            tuple(Level(lv["kind"], lv["m"], lv["u"], lv["threshold"]) for lv in c["levels"]))
                 for c in data)
