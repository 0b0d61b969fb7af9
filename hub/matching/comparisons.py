"""Per-attribute comparisons as ordered levels, Fellegi-Sunter style.

A level is a predicate and a name (as in Splink): `Level(kind, m, u,
threshold)` takes its predicate from `KINDS`, one small `Kind` each: exact,
jaro_winkler and levenshtein at a similarity threshold, damerau at an edit
distance (at most that many insertions, deletions, substitutions or
transpositions: a mistyped identifier or date), street (Jaro-Winkler between
street lines with the same house numbers), date (partial-date aware), date_swap
(day and month transposed), date_distance (real dates at most that many days
apart), year (the same year), nickname (known diminutives,
hub.matching.nicknames), initial (an initial and a name it starts), else.

A comparison is an attribute with its ordered levels: the first level that
holds decides that attribute's match weight, log2(m/u). A missing value on
either side is the null level (weight 0, no evidence either way). The levels
are configured in the pipeline YAML (`match.comparisons`, hub.config) and m and
u are estimated from the data (hub.matching.estimate); DEFAULT_COMPARISONS are
the starting values.

A comparison with `term_frequency` scores its exact level with u taken from
how common the value is (Splink's term-frequency adjustment): two records
sharing a rare surname are more likely one person than two sharing a common
one. The frequencies come from the identity index (counts kept as records are
linked) through a `Frequencies` callable; without it, the average u holds.

A pair is read against every candidate a record meets, and the estimate reads
hundreds of thousands: `compiled(comparisons)` turns a set of comparisons into
straight-line Python once (each comparison's levels one chain of conditions, a
similarity several levels ask for computed once). `read_reference` and
`level_of` say the same a comparison at a time; they define what it must give.
"""

from __future__ import annotations

import datetime as _dt
import math
import operator
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from textwrap import indent
from typing import Callable, Optional

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler, Levenshtein

from hub import caches
from hub.matching.nicknames import same_name

# attribute -> the feature (hub.matching.features) it compares
ATTRIBUTE_FEATURES: dict[str, str] = {
    "given_name": "gn", "middle_name": "mn", "family_name": "fn", "birth_date": "dob", "gender": "sx",
    "email": "em", "phone": "ph", "street": "st", "postcode": "pc", "city": "ci", "national_id": "nid",
    "loyalty_id": "loy", "organisation_name": "org",
}

Predicate = Callable[[str, str], bool]
# (feature, value) -> (records in the index holding that value, records holding the feature), or None
Frequencies = Callable[[str, str], Optional[tuple[int, int]]]


# --------------------------------------------------------------------------- predicates


def _dates_agree(a: str, b: str) -> bool:
    """Partial dates agree when the shorter is a prefix of the longer (1984-07 ~ 1984-07-12)."""
    return a.startswith(b) if len(a) >= len(b) else b.startswith(a)


def _day_month_swapped(a: str, b: str) -> bool:
    return len(a) == len(b) == 10 and a[:4] == b[:4] and a[5:7] == b[8:10] and a[8:10] == b[5:7] and a != b


def _same_year(a: str, b: str) -> bool:
    return len(a) >= 4 and len(b) >= 4 and a[:4] == b[:4] and a[:4].isdigit()


@lru_cache(maxsize=caches.CUSTOMER_VALUES)
def _ordinal(text: str) -> int | None:
    """Day number of a real YYYY-MM-DD date; None for anything else (a partial
    or invalid date has no distance)."""
    if len(text) != 10:
        return None
    try:
        return _dt.date.fromisoformat(text).toordinal()
    except ValueError:
        return None


@lru_cache(maxsize=caches.CUSTOMER_VALUES)
def _house_numbers(line: str) -> tuple[str, ...]:
    return tuple(token for token in line.split() if any(c.isdigit() for c in token))


def _same_house_numbers(a: str, b: str) -> bool:
    """1 and 3 Station Road are different addresses however alike the text; a
    line without a number on one side (a PO box, a mistyped line) is not held
    against it."""
    numbers_a, numbers_b = _house_numbers(a), _house_numbers(b)
    return not numbers_a or not numbers_b or numbers_a == numbers_b


def _initial(a: str, b: str) -> bool:
    """An initial and a name it starts (J and James), or two equal initials."""
    return (len(a) == 1 or len(b) == 1) and a[0] == b[0]


def _exact(threshold):
    return operator.eq


def _jaro_winkler(threshold):
    return lambda a, b: JaroWinkler.similarity(a, b) >= threshold


def _levenshtein(threshold):
    return lambda a, b: Levenshtein.normalized_similarity(a, b) >= threshold


def _damerau(threshold):
    edits = int(threshold)
    return lambda a, b: DamerauLevenshtein.distance(a, b, score_cutoff=edits) <= edits


def _street(threshold):
    return lambda a, b: _same_house_numbers(a, b) and JaroWinkler.similarity(a, b) >= threshold


def _date_distance(threshold):
    def within(a: str, b: str) -> bool:
        x, y = _ordinal(a), _ordinal(b)
        return x is not None and y is not None and abs(x - y) <= threshold
    return within


def _fixed(predicate):
    return lambda threshold: predicate


def _any(threshold):
    return lambda a, b: True


@dataclass(frozen=True)
class Kind:
    """One kind of comparison level: how its predicate is built from the
    threshold, what the threshold means, and whether the level says "the same
    value, give or take a slip" (which the decision's guards count as
    agreement: a look-alike name is not the same name)."""

    name: str
    build: Callable[[float | None], Predicate]
    threshold: str | None = None  # None: takes none; "similarity": 0 < t <= 1; "edits": 1, 2, ...; "days": >= 0
    agrees: Callable[[float | None], bool] = lambda threshold: False
    doc: str = ""

    def check(self, threshold: float | None) -> str | None:
        """Why `threshold` does not suit this kind (None: it does)."""
        if self.threshold is None:
            return None if threshold is None else f"{self.name} takes no threshold"
        if threshold is None:
            return f"{self.name} needs a threshold ({self.threshold})"
        if self.threshold == "similarity" and not 0 < threshold <= 1:
            return f"{self.name} threshold is a similarity: above 0, at most 1"
        if self.threshold == "edits" and (threshold < 1 or threshold != int(threshold)):
            return f"{self.name} threshold is a number of edits: a whole number, at least 1"
        if self.threshold == "days" and threshold < 0:
            return f"{self.name} threshold is a number of days: at least 0"
        return None


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("exact", _exact, None, lambda t: True, "the values are equal"),
    Kind("jaro_winkler", _jaro_winkler, "similarity", lambda t: t >= 0.9,
         "Jaro-Winkler similarity at least the threshold"),
    Kind("levenshtein", _levenshtein, "similarity", lambda t: t >= 0.9,
         "normalised Levenshtein similarity at least the threshold"),
    Kind("damerau", _damerau, "edits", lambda t: t <= 1,
         "at most that many insertions, deletions, substitutions or transpositions"),
    Kind("street", _street, "similarity", lambda t: t >= 0.9,
         "street lines with the same house numbers, Jaro-Winkler at least the threshold"),
    Kind("date", _fixed(_dates_agree), None, lambda t: True,
         "partial dates agree as far as both go (1984-07 and 1984-07-12)"),
    Kind("date_swap", _fixed(_day_month_swapped), None, lambda t: True, "day and month transposed"),
    Kind("date_distance", _date_distance, "days", lambda t: False, "real dates at most that many days apart"),
    Kind("year", _fixed(_same_year), None, lambda t: False, "the same year"),
    Kind("nickname", _fixed(same_name), None, lambda t: True, "known forms of one given name (Bob, Robert)"),
    Kind("initial", _fixed(_initial), None, lambda t: False, "an initial and a name it starts (J, James)"),
    Kind("else", _any, None, lambda t: False, "anything else (the last level)"),
)}


@dataclass(frozen=True, slots=True)
class Level:
    kind: str
    m: float
    u: float
    threshold: float | None = None
    holds: Predicate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kind = KINDS.get(self.kind)
        if kind is None:
            raise ValueError(f"unknown level kind {self.kind!r}; known: {sorted(KINDS)}")
        object.__setattr__(self, "holds", kind.build(self.threshold))

    @property
    def label(self) -> str:
        """The level's name, as decisions and `hub explain` show it."""
        if self.threshold is None:
            return self.kind
        threshold = int(self.threshold) if self.threshold == int(self.threshold) else self.threshold
        return f"{self.kind}<={threshold}" if KINDS[self.kind].threshold in ("edits", "days") \
            else f"{self.kind}>={threshold}"

    @property
    def agrees(self) -> bool:
        """Whether this level says "the same value" (see Kind)."""
        return KINDS[self.kind].agrees(self.threshold)

    @property
    def weight(self) -> float:
        return math.log2(self.m / self.u)


@dataclass(frozen=True, slots=True)
class Comparison:
    attribute: str
    feature: str
    levels: tuple[Level, ...]
    term_frequency: bool = False
    weights: tuple[float, ...] = field(init=False)
    labels: tuple[str, ...] = field(init=False)
    # the reading of each level, and of a null, made once: scoring a pair then builds no objects for them
    # (a pair is read against every candidate; most readings are one of these)
    readings: tuple["Reading", ...] = field(init=False, repr=False, compare=False)
    null_reading: "Reading" = field(init=False, repr=False, compare=False)
    # the predicates of every level but the last, which holds for whatever they leave
    predicates: tuple[Predicate, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "predicates", tuple(level.holds for level in self.levels[:-1]))
        object.__setattr__(self, "weights", tuple(level.weight for level in self.levels))
        object.__setattr__(self, "labels", tuple(level.label for level in self.levels))
        object.__setattr__(self, "readings", tuple(
            Reading(self, level, weight, label) for level, weight, label in zip(self.levels, self.weights, self.labels)))
        object.__setattr__(self, "null_reading", Reading(self, None, 0.0, "null"))


def compare(comparison: Comparison, a, b) -> tuple[int, float]:
    """Index of the level that holds (-1 for null) and its weight (see level_of)."""
    index = level_of(comparison, a, b)
    return index, (comparison.weights[index] if index >= 0 else 0.0)


def level_of(comparison: Comparison, a, b) -> int:
    """Index of the level that holds, -1 for null (a value missing on either
    side). Lists compare as their best-agreeing pair (any shared e-mail is an
    exact e-mail match). The scoring hot path: a pair is read against every
    candidate, and the estimate reads hundreds of thousands of pairs."""
    if not a or not b:
        return -1
    predicates = comparison.predicates
    if type(a) is not list and type(b) is not list:  # most features: no pairs to build
        index = 0
        for holds in predicates:
            if holds(a, b):
                return index
            index += 1
        return index
    left = a if type(a) is list else (a,)
    right = b if type(b) is list else (b,)
    for index, holds in enumerate(predicates):
        for x in left:
            for y in right:
                if holds(x, y):
                    return index
    return len(predicates)


def tf_u(count: int, total: int, average_u: float) -> float:
    """u of exact agreement on one value: its share of the records holding the
    attribute, shrunk towards the comparison's average u as if 1/u more
    records had been seen, one of them holding the value. With few records in
    the index a value's share says little and the adjustment fades out; an
    empty index gives the average u; a value held by one record among many
    gets about 2/total. Bounded: u never falls below 1/(total + 1/u)."""
    prior = 1.0 / average_u
    return (count + 1.0) / (total + prior)


def _tf_weight(level: Level, u: float) -> float:
    return math.log2(level.m / u)


@dataclass(frozen=True, slots=True)
class Reading:
    """One comparison's outcome for a pair: the level that held (None: null),
    its weight and the name it is shown by."""

    comparison: Comparison
    level: Level | None
    weight: float
    label: str


_SWAP = ("gn", "fn")


def _swapped(b: dict) -> dict:
    return {**b, "gn": b.get("fn"), "fn": b.get("gn")}


def read_pair(comparisons: tuple[Comparison, ...], a: dict, b: dict,
              frequencies: Frequencies | None = None) -> tuple[float, list[Reading]]:
    """Total match weight of two feature dicts and the reading per comparison.
    Given and family name are also compared the other way round (a record
    with them swapped); the reading with more weight counts, and says so.
    `frequencies` (of `a`'s values) adjusts the exact level of comparisons
    with term_frequency."""
    read = compiled(comparisons).read
    total, readings = read(a, b, "", frequencies)
    if (a.get("gn") and a.get("fn") and b.get("gn") and b.get("fn") and a["gn"] != b["gn"]
            and max(JaroWinkler.similarity(a["gn"], b["fn"]), JaroWinkler.similarity(a["fn"], b["gn"])) >= 0.8):
        reversed_total, reversed_readings = read(a, _swapped(b), " (names swapped)", frequencies)
        if reversed_total > total:
            return reversed_total, reversed_readings
    return total, readings


def score(comparisons: tuple[Comparison, ...], a: dict, b: dict,
          frequencies: Frequencies | None = None) -> tuple[float, list[tuple[str, str, float]]]:
    """Total match weight of two feature dicts and the evidence per attribute,
    (attribute, level name, weight); see read_pair."""
    total, readings = read_pair(comparisons, a, b, frequencies)
    return total, [(r.comparison.attribute, r.label, r.weight) for r in readings]


def read_reference(comparisons, a: dict, b: dict, note: str, frequencies) -> tuple[float, list[Reading]]:
    """What `compiled(comparisons).read` does, a comparison at a time through level_of: the
    definition the compiled reader is tested against."""
    total = 0.0
    readings = []
    append = readings.append
    for comparison in comparisons:
        feature = comparison.feature
        value, other = a.get(feature), b.get(feature)
        if not value or not other:  # as compare() says, without the call: most pairs miss some attributes
            append(comparison.null_reading)
            continue
        index = level_of(comparison, value, other)
        weight = comparison.weights[index]
        if index == 0 and comparison.term_frequency and frequencies is not None and type(value) is str \
                and comparison.levels[0].kind == "exact":
            counted = frequencies(feature, value)
            if counted is not None:
                level = comparison.levels[0]
                u = tf_u(counted[0], counted[1], level.u)
                weight = _tf_weight(level, u)
                label = f"{comparison.labels[0]} (tf 1 in {max(1, round(1 / u)):,})"
                if note and feature in _SWAP:
                    label += note
                total += weight
                append(Reading(comparison, level, weight, label))  # rounded where it is shown (decide)
                continue
        total += weight
        if note and feature in _SWAP:
            append(Reading(comparison, comparison.levels[index], weight, comparison.labels[index] + note))
        else:
            append(comparison.readings[index])
    return total, readings


# --------------------------------------------------------------------------- the compiled reader


@dataclass(frozen=True, slots=True)
class CompiledReader:
    """A set of comparisons turned into straight-line Python once (see `compiled`):
    `read(a, b, note, frequencies)` is read_reference's result, `pattern(a, b)` the
    level index per comparison (-1: null)."""

    read: Callable[..., tuple[float, list[Reading]]]
    pattern: Callable[[dict, dict], tuple[int, ...]]
    source: str


def _best_of_lists(level: Callable[[object, object], int], a, b, last: int) -> int:
    """level_of over lists: the best-agreeing pair's level. The lowest level any
    pair reaches is the first level some pair holds, which is what level_of
    finds predicate by predicate."""
    best = last
    for x in (a if type(a) is list else (a,)):
        for y in (b if type(b) is list else (b,)):
            index = level(x, y)
            if index < best:
                if index == 0:
                    return 0
                best = index
    return best


def _conditions(k: int, comparison: Comparison) -> list[str]:
    """One Python condition on x and y per level but the last (which holds for
    whatever they leave). A similarity or a distance several levels ask for is
    computed once, by the first of them: every level reached has had the
    conditions before it evaluated."""
    conditions, computed = [], set()
    levels = comparison.levels[:-1]
    most_edits = max((int(lv.threshold) for lv in levels if lv.kind == "damerau"), default=0)
    for i, level in enumerate(levels):
        threshold = f"T{k}_{i}"
        if level.kind == "exact":
            condition = "x == y"
        elif level.kind in ("jaro_winkler", "street"):
            similarity = "jw" if "jw" in computed else "(jw := JW(x, y))"
            computed.add("jw")
            condition = f"{similarity} >= {threshold}"
            if level.kind == "street":  # the cheap similarity first: most street pairs are nothing alike
                condition += " and SAME_HOUSE(x, y)"
        elif level.kind == "levenshtein":
            condition = f"{'lev' if 'lev' in computed else '(lev := LEV(x, y))'} >= {threshold}"
            computed.add("lev")
        elif level.kind == "damerau":
            # with a cutoff, rapidfuzz gives the distance up to it and cutoff + 1 beyond: the same
            # answer for every level at or under the largest
            condition = f"{'dl' if 'dl' in computed else f'(dl := DL(x, y, score_cutoff={most_edits}))'} <= {threshold}"
            computed.add("dl")
        elif level.kind == "date":
            condition = "(x.startswith(y) if len(x) >= len(y) else y.startswith(x))"
        else:
            condition = f"P{k}_{i}(x, y)"
        conditions.append(condition)
    return conditions


def _chain(conditions: list[str], last: int) -> str:
    """The level of one pair of values, as `i`, in an if/elif chain."""
    if not conditions:
        return f"i = {last}\n"
    return "".join(f"{'if' if i == 0 else 'elif'} {condition}:\n    i = {i}\n" for i, condition in enumerate(conditions)) \
        + f"else:\n    i = {last}\n"


def _reading_source(k: int, comparison: Comparison) -> str:
    """The read of comparison k once its level `i` is known: its weight added and its reading appended, as
    read_reference does (the exact level of a term-frequency comparison weighted by the value's frequency;
    a swapped name's label saying so)."""
    swap = comparison.feature in _SWAP
    plain = f"total += W{k}[i]\n" + (
        f"if note:\n    append(Reading(C{k}, LV{k}[i], W{k}[i], LB{k}[i] + note))\nelse:\n    append(R{k}[i])\n"
        if swap else f"append(R{k}[i])\n")
    if not (comparison.term_frequency and comparison.levels[0].kind == "exact"):
        return plain
    return (f"if i == 0 and frequencies is not None and type(x) is str "
            f"and (counted := frequencies(F{k}, x)) is not None:\n"
            f"    u = tf_u(counted[0], counted[1], LV{k}[0].u)\n"
            f"    w = TF_WEIGHT(LV{k}[0], u)\n"
            f"    label = f\"{{LB{k}[0]}} (tf 1 in {{max(1, round(1 / u)):,}})\"\n"
            + ("    if note:\n        label += note\n" if swap else "")
            + f"    total += w\n    append(Reading(C{k}, LV{k}[0], w, label))\n"
            f"else:\n{indent(plain, '    ')}")


def _compile(comparisons: tuple[Comparison, ...]) -> CompiledReader:
    names: dict[str, object] = {"JW": JaroWinkler.similarity, "LEV": Levenshtein.normalized_similarity,
                                "DL": DamerauLevenshtein.distance, "SAME_HOUSE": _same_house_numbers,
                                "BEST": _best_of_lists, "Reading": Reading, "tf_u": tf_u, "TF_WEIGHT": _tf_weight}
    level_functions = []
    read = "def read(a, b, note, frequencies):\n    total = 0.0\n    readings = []\n    append = readings.append\n"
    pattern = "def pattern(a, b):\n"
    for k, comparison in enumerate(comparisons):
        last = len(comparison.levels) - 1
        names.update({f"C{k}": comparison, f"F{k}": comparison.feature, f"N{k}": comparison.null_reading,
                      f"R{k}": comparison.readings, f"W{k}": comparison.weights, f"LB{k}": comparison.labels,
                      f"LV{k}": comparison.levels})
        for i, level in enumerate(comparison.levels[:-1]):
            names[f"T{k}_{i}"] = int(level.threshold) if level.kind == "damerau" else level.threshold
            names[f"P{k}_{i}"] = level.holds
        conditions = _conditions(k, comparison)
        # one pair of values (an element of each list, for lists)
        level_functions.append(f"def L{k}(x, y):\n"
                               + "".join(f"    if {c}:\n        return {i}\n" for i, c in enumerate(conditions))
                               + f"    return {last}\n")
        level = ("if type(x) is not list and type(y) is not list:\n"
                 + indent(_chain(conditions, last), "    ") + f"else:\n    i = BEST(L{k}, x, y, {last})\n")
        fetch = f"x = a.get(F{k})\ny = b.get(F{k})\n"
        pattern += indent(f"{fetch}if not x or not y:\n    i{k} = -1\nelse:\n"
                          + indent(level + f"i{k} = i\n", "    "), "    ")
        read += indent(f"{fetch}if not x or not y:\n    append(N{k})\nelse:\n"
                       + indent(level + _reading_source(k, comparison), "    "), "    ")
    read += "    return total, readings\n"
    pattern += f"    return ({''.join(f'i{k}, ' for k in range(len(comparisons)))})\n"
    source = "".join(level_functions) + read + pattern
    exec(compile(source, "<hub.matching.comparisons compiled reader>", "exec"), names)
    return CompiledReader(names["read"], names["pattern"], source)


# id -> (the comparisons, their reader): comparisons are built once per configuration or estimate,
# and hashing a tuple of them per pair would cost more than reading it
_COMPILED: dict[int, tuple[tuple[Comparison, ...], CompiledReader]] = {}
_COMPILED_KEPT = 64
_COMPILING = threading.Lock()  # the look-up stays lock-free; a thread that compiles changes the table alone


def compiled(comparisons: tuple[Comparison, ...]) -> CompiledReader:
    """The reader of these comparisons: each comparison's levels as one chain of
    conditions, with its constants bound, no loop over comparisons or levels, no
    call per predicate where an expression does, a similarity several levels
    ask for computed once. Made once per comparisons object."""
    held = _COMPILED.get(id(comparisons))
    if held is not None and held[0] is comparisons:
        return held[1]
    reader = _compile(tuple(comparisons))
    with _COMPILING:
        if len(_COMPILED) >= _COMPILED_KEPT:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[id(comparisons)] = (comparisons, reader)
    return reader


def _lv(kind: str, m: float, u: float, threshold: float | None = None) -> Level:
    return Level(kind, m, u, threshold)


# Starting m/u values from the record-linkage literature for person data,
# replaced by estimates from the data (hub.matching.estimate). hub/defaults/hub.yaml
# states the same levels (tests/unit/test_config.py keeps the two in step).
DEFAULT_COMPARISONS: tuple[Comparison, ...] = (
    Comparison("given_name", "gn", (
        _lv("exact", 0.85, 0.01), _lv("jaro_winkler", 0.07, 0.005, 0.92), _lv("nickname", 0.03, 0.001),
        _lv("jaro_winkler", 0.035, 0.02, 0.80), _lv("else", 0.015, 0.964)), term_frequency=True),
    Comparison("middle_name", "mn", (
        _lv("exact", 0.75, 0.02), _lv("initial", 0.2, 0.05), _lv("else", 0.05, 0.93))),
    Comparison("family_name", "fn", (
        _lv("exact", 0.88, 0.005), _lv("jaro_winkler", 0.06, 0.003, 0.92),
        _lv("jaro_winkler", 0.03, 0.01, 0.80), _lv("else", 0.03, 0.982)), term_frequency=True),
    # an invalid date is kept as the source wrote it (features.py), so a slip
    # of one or two keys, a swap or a shared year still counts for something
    Comparison("birth_date", "dob", (
        _lv("exact", 0.85, 0.0005), _lv("date", 0.06, 0.005), _lv("date_swap", 0.02, 0.0002),
        _lv("damerau", 0.03, 0.003, 1), _lv("damerau", 0.01, 0.01, 2), _lv("year", 0.01, 0.02),
        _lv("else", 0.02, 0.9613))),
    Comparison("gender", "sx", (_lv("exact", 0.97, 0.5), _lv("else", 0.03, 0.5))),
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
    return [{"attribute": c.attribute, "feature": c.feature, "term_frequency": c.term_frequency,
             "levels": [{"kind": lv.kind, "threshold": lv.threshold, "m": lv.m, "u": lv.u} for lv in c.levels]}
            for c in comparisons]


def from_json(data: list[dict]) -> tuple[Comparison, ...]:
    return tuple(Comparison(c["attribute"], c["feature"],
                            tuple(Level(lv["kind"], lv["m"], lv["u"], lv["threshold"]) for lv in c["levels"]),
                            c.get("term_frequency", False))
                 for c in data)


def with_estimates(configured: tuple[Comparison, ...], estimated: tuple[Comparison, ...]) -> tuple[Comparison, ...]:
    """The configured comparisons with m and u taken from an estimate where it
    has the same attribute with the same levels. The configuration says what
    is compared and how; an estimate made under other rules (before a level
    was added, say) cannot speak for them, and those keep their configured m
    and u until the next `hub estimate`."""
    by_attribute = {c.attribute: c for c in estimated}
    out = []
    for comparison in configured:
        found = by_attribute.get(comparison.attribute)
        if found is not None and [(lv.kind, lv.threshold) for lv in found.levels] == \
                [(lv.kind, lv.threshold) for lv in comparison.levels]:
            comparison = Comparison(comparison.attribute, comparison.feature, found.levels, comparison.term_frequency)
        out.append(comparison)
    return tuple(out)
