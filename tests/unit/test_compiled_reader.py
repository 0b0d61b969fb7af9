"""The compiled reader (hub.matching.comparisons.compiled) gives what reading a
pair a comparison at a time through level_of gives (read_reference), for every
level kind, lists, missing values, term frequencies and swapped names, to the
last bit of the total and every reading's level, weight and label."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from hub.matching.comparisons import (DEFAULT_COMPARISONS, KINDS, Comparison, Level, compiled, level_of, read_pair,
                                      read_reference)
from hub.matching.estimate import comparison_vector
from hub.matching.features import features
from hub.testing.generator import generate
from hub.standardise import standardise_and_score


def _as_seen(readings):
    return [(r.comparison.attribute, r.level, r.weight, r.label) for r in readings]


def _reference_vector(comparisons, a, b):
    return tuple(level_of(c, a.get(c.feature), b.get(c.feature)) for c in comparisons)


def _same(comparisons, a, b, frequencies=None):
    reader = compiled(comparisons)
    for note in ("", " (names swapped)"):
        expected_total, expected = read_reference(comparisons, a, b, note, frequencies)
        total, readings = reader.read(a, b, note, frequencies)
        assert total == expected_total  # the same additions in the same order: equal, not approximately
        assert _as_seen(readings) == _as_seen(expected)
    assert reader.pattern(a, b) == _reference_vector(comparisons, a, b)


# every kind at least once, two similarities and two edit distances per comparison (computed once each)
EVERY_KIND = (
    Comparison("given_name", "gn", (
        Level("exact", 0.8, 0.01), Level("jaro_winkler", 0.05, 0.01, 0.92), Level("nickname", 0.03, 0.001),
        Level("initial", 0.02, 0.01), Level("jaro_winkler", 0.04, 0.02, 0.7), Level("else", 0.06, 0.95)),
        term_frequency=True),
    Comparison("family_name", "fn", (
        Level("exact", 0.8, 0.01), Level("levenshtein", 0.1, 0.01, 0.8), Level("levenshtein", 0.05, 0.03, 0.5),
        Level("else", 0.05, 0.95)), term_frequency=True),
    Comparison("birth_date", "dob", (
        Level("exact", 0.8, 0.001), Level("date", 0.05, 0.005), Level("date_swap", 0.02, 0.0002),
        Level("damerau", 0.03, 0.003, 1), Level("date_distance", 0.02, 0.01, 40), Level("damerau", 0.02, 0.01, 2),
        Level("year", 0.01, 0.02), Level("else", 0.05, 0.95))),
    Comparison("street", "st", (
        Level("exact", 0.6, 0.001), Level("street", 0.2, 0.002, 0.9), Level("jaro_winkler", 0.1, 0.01, 0.8),
        Level("else", 0.1, 0.98))),
    Comparison("email", "em", (Level("exact", 0.9, 0.001), Level("else", 0.1, 0.999))),
    Comparison("loyalty_id", "loy", (Level("else", 1.0, 1.0),)),  # one level: it always holds
)
assert {lv.kind for c in EVERY_KIND for lv in c.levels} == set(KINDS)

_names = st.sampled_from(["anna", "ann", "anne", "hannah", "bob", "robert", "rob", "r", "a", "jon", "john",
                          "jonathan", "smith", "smyth", "schmidt", "anna maria", "ßen", "é"])
_dates = st.sampled_from(["1984-07-12", "1984-12-07", "1984-07-13", "1984-07", "1984", "1948-07-12",
                          "1984-08-21", "1985-07-12", "1984-7-12", "2041-02-30", "19840712", "abcd"])
_streets = st.sampled_from(["1 station road", "3 station road", "station road", "1 station rd", "flat 2 1 high st",
                            "high street", "po box 7", "12b mill lane"])
_emails = st.sampled_from(["a@x.com", "b@x.com", "ab@x.com", "a@y.com"])


def _maybe(strategy):
    return st.one_of(st.none(), st.just(""), strategy)


_feature_dicts = st.fixed_dictionaries({
    "rt": st.sampled_from(["person", "organisation"]),
    "gn": _maybe(_names), "fn": _maybe(_names), "mn": _maybe(_names), "dob": _maybe(_dates),
    "sx": _maybe(st.sampled_from(["f", "m"])),
    "st": st.one_of(st.just([]), st.lists(_streets, min_size=1, max_size=3, unique=True).map(sorted), _streets),
    "em": st.lists(_emails, max_size=2, unique=True).map(sorted),
    "ph": st.lists(st.sampled_from(["+441", "+442", "+443"]), max_size=2, unique=True).map(sorted),
    "pc": st.lists(st.sampled_from(["SW1A1AA", "SW1A1AB", "N11AA"]), max_size=2, unique=True).map(sorted),
    "ci": st.lists(st.sampled_from(["london", "londn", "leeds"]), max_size=2, unique=True).map(sorted),
    "nid": _maybe(st.sampled_from(["AB123456C", "AB123457C"])),
    "loy": _maybe(st.sampled_from(["L1", "L2"])),
    "org": _maybe(st.sampled_from(["acme", "acme ltd", "acne"])),
})
_counts = st.one_of(st.none(), st.tuples(st.integers(0, 50), st.integers(0, 1000)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_feature_dicts, _feature_dicts, _counts)
def test_default_comparisons_read_as_level_by_level(a, b, counted):
    _same(DEFAULT_COMPARISONS, a, b)
    _same(DEFAULT_COMPARISONS, a, b, lambda feature, value: counted)
    assert read_pair(DEFAULT_COMPARISONS, a, b) is not None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_feature_dicts, _feature_dicts, _counts)
def test_every_level_kind_reads_as_level_by_level(a, b, counted):
    _same(EVERY_KIND, a, b)
    _same(EVERY_KIND, a, b, lambda feature, value: counted)


def test_generated_records_read_as_level_by_level():
    """Pairs of standardised generated records that share a surname or a birth date: duplicates,
    relatives and strangers, with their real lists and partial dates."""
    records = [features(standardise_and_score(ev.value)[0]) for ev in generate(300, seed=5)
               if ev.kind in ("upsert", "update") and ev.topic.startswith("raw.")][:600]
    pairs = [(a, b) for i, a in enumerate(records) for b in records[i + 1:]
             if a["fn"] == b["fn"] or (a["dob"] and a["dob"] == b["dob"]) or set(a["pc"]) & set(b["pc"])]
    assert len(pairs) > 500
    frequencies = {"gn": (3, 500), "fn": (7, 500)}
    for a, b in pairs:
        _same(DEFAULT_COMPARISONS, a, b)
        _same(DEFAULT_COMPARISONS, a, b, lambda feature, value: frequencies.get(feature))
        assert comparison_vector(DEFAULT_COMPARISONS, a, b) == _reference_vector(DEFAULT_COMPARISONS, a, b)


def test_a_similarity_two_levels_ask_for_is_computed_once():
    source = compiled(DEFAULT_COMPARISONS).source
    given_name = source.split("def L0(")[1].split("def L1(")[0]
    assert given_name.count("JW(") == 1 and "jw >= T0_3" in given_name
    birth_date = source.split("def L3(")[1].split("def L4(")[0]
    assert birth_date.count("DL(") == 1 and "score_cutoff=2" in birth_date


def test_compiled_once_per_comparisons_object():
    comparisons = tuple(DEFAULT_COMPARISONS)
    assert compiled(comparisons) is compiled(comparisons)
    assert compiled(DEFAULT_COMPARISONS) is compiled(DEFAULT_COMPARISONS)


def test_the_table_of_readers_stays_bounded():
    """Each m/u estimate makes new comparisons: their readers are kept for the last few only."""
    from hub.matching import comparisons as module

    made = [tuple(DEFAULT_COMPARISONS) for _ in range(module._COMPILED_KEPT + 10)]
    readers = [compiled(c) for c in made]
    assert len(module._COMPILED) <= module._COMPILED_KEPT
    assert compiled(made[-1]) is readers[-1]
    a = {"gn": "anna", "fn": "smith", "rt": "person"}
    assert all(r.read(a, a, "", None)[0] == readers[0].read(a, a, "", None)[0] for r in readers)
