"""Unit tests for hub.matching: features, blocking keys, comparisons and the match decision."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from rapidfuzz.distance import JaroWinkler

from hub.matching.comparisons import DEFAULT_COMPARISONS, Comparison, Level, compare, score
from hub.matching.decide import MERGE, NEW, REVIEW, Candidate, Decision, decide, new_golden_id
from hub.matching.features import blocking_values, features, fold, hash_key, phonetic
from hub.standardise import standardise_and_score

UPPER, LOWER, MAX_CANDIDATES = 8.0, 3.0, 20
T0 = 1_700_000_000_000
BY_ATTR = {c.attribute: c for c in DEFAULT_COMPARISONS}
HOME = {"line1": "12 High Street", "city": "Leeds", "postcode": "ls1 4ab", "country": "GB"}


def event(source: str = "crm", source_id: str = "1", **fields) -> dict:
    raw = {"source": source, "source_id": source_id, "op": "upsert", "event_time": T0, "record_type": "person"}
    raw.update(fields)
    clean, _quality = standardise_and_score(raw)
    return clean


def feats(**fields) -> dict:
    return features(event(**fields))


def jonathan(**overrides) -> dict:
    fields = dict(given_name="Jonathan", family_name="Smith", birth_date="1984-07-12",
                  emails=[{"address": "Jon.Smith@Example.com"}], phones=[{"number": "07911 123456"}],
                  addresses=[HOME])
    fields.update(overrides)
    return feats(**fields)


def run(member: str, f: dict, candidates: list[Candidate], upper=UPPER, lower=LOWER, max_candidates=MAX_CANDIDATES):
    return decide(member, f, candidates, DEFAULT_COMPARISONS, upper, lower, max_candidates)


def levels(decision: Decision, index: int = 0) -> dict[str, str]:
    return {c["attribute"]: c["level"] for c in decision.evidence[index]["comparisons"]}


# ------------------------------------------------------------------ features


def test_features_of_a_standardised_event():
    f = jonathan(middle_name="José", national_id="QQ 12 34 56 C", loyalty_id="L-77",
                 addresses=[HOME, {"line1": "1 Side Rd", "postcode": "YO1 7HH", "country": "GB"}])
    assert f["rt"] == "person"
    assert f["gn"] == "jonathan" and f["fn"] == "smith" and f["mn"] == "jose"
    assert f["dob"] == "1984-07-12"
    assert f["em"] == ["jon.smith@example.com"]
    assert f["ph"] == ["+447911123456"]
    assert f["st"] == ["1 side rd", "12 high street"]
    assert f["pc"] == ["LS14AB", "YO17HH"]
    assert f["nid"] is not None and f["loy"] is not None
    assert f["org"] is None


def test_features_of_a_sparse_event():
    f = feats(family_name="Smith")
    assert f["gn"] is None and f["dob"] is None
    assert f["em"] == [] and f["ph"] == [] and f["st"] == [] and f["pc"] == [] and f["ci"] == []


def test_features_dedupe_and_sort_contacts():
    f = feats(emails=[{"address": "b@example.com"}, {"address": "a@example.com"}, {"address": "B@example.com"}])
    assert f["em"] == ["a@example.com", "b@example.com"]


def test_organisation_features():
    f = feats(record_type="organisation", organisation_name="Acme Widgets Ltd.")
    assert f["rt"] == "organisation"
    assert f["org"] == "acme widgets ltd"
    assert any(k.startswith("o:o:") for k in blocking_values(f))


@pytest.mark.parametrize("text, folded", [
    ("José", "jose"), ("O'Brien", "obrien"), ("  Mary   Ann ", "mary ann"), ("ÆSIR", "æsir"),
    ("", None), (None, None), ("---", None),
])
def test_fold(text, folded):
    assert fold(text) == folded


def test_phonetic_groups_spellings():
    assert phonetic("smith") == phonetic("smyth")
    assert phonetic("smith") != phonetic("jones")
    assert phonetic(None) is None


# ------------------------------------------------------------------ blocking keys


def test_typo_in_given_name_with_same_email_shares_keys():
    a = jonathan()
    b = feats(source="pos", source_id="9", given_name="Jonathon", family_name="Smith",
              emails=[{"address": "jon.smith@example.com"}])
    shared = set(blocking_values(a)) & set(blocking_values(b))
    assert "e:jon.smith@example.com" in shared


def test_phone_only_record_shares_the_phone_key():
    a = jonathan()
    b = feats(source="contact_center", source_id="7", phones=[{"number": "+44 7911 123456"}])
    shared = set(blocking_values(a)) & set(blocking_values(b))
    assert "p:+447911123456" in shared


def test_same_person_moved_within_postcode_area_shares_the_address_key():
    a = jonathan()
    b = feats(source="pos", source_id="3", given_name="Jon", family_name="Smyth",
              addresses=[{"line1": "4 Other Road", "postcode": "LS1 9ZZ", "country": "GB"}])
    assert set(blocking_values(a)) & set(blocking_values(b))


def test_unrelated_people_share_no_keys():
    a = jonathan()
    b = feats(source="ecommerce", source_id="7", given_name="Priya", family_name="Patel", birth_date="1990-02-03",
              emails=[{"address": "priya@example.org"}], phones=[{"number": "07700 123456"}],
              addresses=[{"line1": "5 Low Road", "city": "York", "postcode": "YO1 7HH", "country": "GB"}])
    assert not set(blocking_values(a)) & set(blocking_values(b))


def test_blocking_keys_are_deterministic():
    assert blocking_values(jonathan()) == blocking_values(jonathan())


def test_hash_key_is_keyed_and_opaque():
    value = "e:jon.smith@example.com"
    h1 = hash_key(b"secret-one", value)
    assert h1 == hash_key(b"secret-one", value)
    assert h1 != hash_key(b"secret-two", value)
    assert h1 != hash_key(b"secret-one", "e:jon.smith@example.org")
    assert len(h1) == 24 and all(c in "0123456789abcdef" for c in h1)
    for part in ("jon", "smith", "example", value):
        assert part not in h1
    for key in blocking_values(jonathan()):
        hashed = hash_key(b"k", key)
        assert key.split(":", 1)[1] not in hashed


# ------------------------------------------------------------------ comparison levels


def test_level_weight_is_log2_m_over_u():
    assert Level("exact", 0.8, 0.1).weight == pytest.approx(3.0)
    assert Level("else", 0.1, 0.8).weight == pytest.approx(-3.0)
    assert Level("jaro_winkler", 0.5, 0.5, 0.9).label == "jaro_winkler>=0.9"
    comparison = BY_ATTR["given_name"]
    assert comparison.weights == tuple(math.log2(lv.m / lv.u) for lv in comparison.levels)


def _label(attribute: str, a, b) -> str:
    comparison = BY_ATTR[attribute]
    index, weight = compare(comparison, a, b)
    if index < 0:
        assert weight == 0.0
        return "null"
    assert weight == comparison.weights[index]
    return comparison.levels[index].label


@pytest.mark.parametrize("a, b, label", [
    ("jonathan", "jonathan", "exact"),
    ("jonathan", "jonathon", "jaro_winkler>=0.92"),
    ("jon", "jonathan", "nickname"),
    ("bob", "robert", "nickname"),
    ("catherine", "kathryn", "nickname"),
    ("catherine", "margaret", "else"),
])
def test_given_name_levels(a, b, label):
    assert _label("given_name", a, b) == label


def test_jaro_winkler_levels_follow_the_similarity():
    assert JaroWinkler.similarity("jonathan", "jonathon") >= 0.92
    assert 0.80 <= JaroWinkler.similarity("jon", "jonathan") < 0.92
    assert JaroWinkler.similarity("catherine", "kathryn") < 0.80


def test_jaro_winkler_threshold_is_inclusive():
    similarity = JaroWinkler.similarity("martha", "marhta")
    at = Comparison("x", "x", (Level("jaro_winkler", 0.9, 0.1, similarity), Level("else", 0.1, 0.9)))
    above = Comparison("x", "x", (Level("jaro_winkler", 0.9, 0.1, similarity + 1e-9), Level("else", 0.1, 0.9)))
    assert compare(at, "martha", "marhta")[0] == 0
    assert compare(above, "martha", "marhta")[0] == 1


@pytest.mark.parametrize("a, b, label", [
    ("1984-07-12", "1984-07-12", "exact"),
    ("1984-07", "1984-07-12", "date"),
    ("1984-07-12", "1984-07", "date"),
    ("1984", "1984-07-12", "date"),
    ("1984-07-12", "1984-12-07", "date_swap"),
    ("1984-07-12", "1984-07-13", "damerau<=1"),  # one keystroke
    ("1984-07-12", "1985-07-12", "damerau<=1"),
    ("1984-07-12", "1985-07-13", "damerau<=2"),  # two
    ("1984-07-12", "1984-03-25", "year"),        # the year alone
    ("1984-07-12", "1948-07-21", "damerau<=2"),  # two transpositions
    ("1984-07-12", "1951-03-25", "else"),
    ("1984-07", "1984-12-07", "year"),
    ("1984-07-07", "1984-07-07", "exact"),
    # invalid dates as matching keeps them (hub.standardise.birth_date_evidence)
    ("1984-16-07", "1984-07-16", "date_swap"),   # month 16: day and month swapped
    ("1984-00-12", "1984-07-12", "damerau<=1"),  # month 00
    ("1984-07-32", "1984-07-12", "damerau<=1"),  # day 32
    ("1084-07-12", "1984-07-12", "damerau<=1"),  # year 1084 for 1984
    ("2084-07-12", "1984-07-12", "damerau<=2"),  # a date in the future
])
def test_birth_date_levels(a, b, label):
    assert _label("birth_date", a, b) == label


@pytest.mark.parametrize("a, b", [
    (None, "jonathan"), ("jonathan", None), (None, None), ("", "jonathan"), ([], ["a@x.com"]), (["a@x.com"], []),
])
def test_null_level_when_either_side_is_missing(a, b):
    attribute = "email" if isinstance(a, list) or isinstance(b, list) else "given_name"
    assert compare(BY_ATTR[attribute], a, b) == (-1, 0.0)


def test_lists_compare_by_best_pair():
    email = BY_ATTR["email"]
    assert _label("email", ["zed@example.org", "jon.smith@example.com"],
                  ["other@example.net", "jon.smith@example.com"]) == "exact"
    assert _label("email", ["jon.smith@example.com", "zed@example.org"],
                  ["jon.smith@example.co", "nobody@nowhere.net"]) == "jaro_winkler>=0.95"
    assert _label("email", ["a@example.org"], ["qqq@zzz.net"]) == "else"
    # a list compares like a scalar
    assert compare(email, ["jon.smith@example.com"], "jon.smith@example.com")[0] == 0


def test_phone_and_ids_are_exact_one_keystroke_off_or_else():
    assert _label("phone", ["+447911123456"], ["+447911123456"]) == "exact"
    assert _label("phone", ["+447911123456"], ["+447911123457"]) == "else"  # numbers come in blocks
    assert _label("national_id", "QQ123456C", "QQ123456C") == "exact"
    assert _label("national_id", "2423787", "2427387") == "damerau<=1"
    assert _label("national_id", "2423787", "2427388") == "else"
    assert _label("loyalty_id", "L-1", "L-2") == "else"  # cards are numbered in sequence


def test_score_sums_the_evidence():
    a, b = jonathan(), jonathan(given_name="Jonathon", birth_date="1984-07", phones=[])
    total, evidence = score(DEFAULT_COMPARISONS, a, b)
    assert [attr for attr, _, _ in evidence] == [c.attribute for c in DEFAULT_COMPARISONS]
    assert dict((attr, lv) for attr, lv, _ in evidence) == {
        "given_name": "jaro_winkler>=0.92", "middle_name": "null", "family_name": "exact", "birth_date": "date",
        "gender": "null", "email": "exact", "phone": "null", "street": "exact", "postcode": "exact", "city": "exact",
        "national_id": "null", "loyalty_id": "null", "organisation_name": "null"}
    assert total == pytest.approx(sum(w for _, _, w in evidence), abs=1e-3)
    assert total == pytest.approx(BY_ATTR["given_name"].weights[1] + BY_ATTR["family_name"].weights[0]
                                  + BY_ATTR["birth_date"].weights[1] + BY_ATTR["email"].weights[0]
                                  + BY_ATTR["street"].weights[0] + BY_ATTR["postcode"].weights[0]
                                  + BY_ATTR["city"].weights[0])


# ------------------------------------------------------------------ decide


def test_new_golden_id_is_deterministic():
    assert new_golden_id("crm:1") == new_golden_id("crm:1")
    assert new_golden_id("crm:1") != new_golden_id("crm:2")
    assert new_golden_id("crm:1").startswith("G") and len(new_golden_id("crm:1")) == 21


def test_no_candidates_is_new():
    d = run("crm:1", jonathan(), [])
    assert d.outcome == NEW
    assert d.golden_id == new_golden_id("crm:1")
    assert d.score is None and d.absorbed == [] and d.evidence == []


def test_own_member_is_not_a_candidate():
    d = run("crm:1", jonathan(), [Candidate("crm:1", "G-own", jonathan())])
    assert d.outcome == NEW and d.golden_id == new_golden_id("crm:1") and d.evidence == []


def test_clear_duplicate_merges_with_evidence():
    mine = feats(source="pos", source_id="9", given_name="Jonathon", family_name="Smith",
                 emails=[{"address": "jon.smith@example.com"}], phones=[{"number": "+447911123456"}])
    d = run("pos:9", mine, [Candidate("crm:1", "G-jon", jonathan())])
    assert d.outcome == MERGE
    assert d.golden_id == "G-jon"
    assert d.absorbed == []
    assert d.score >= UPPER
    [ev] = d.evidence
    assert ev["golden_id"] == "G-jon" and ev["member"] == "crm:1" and ev["score"] == d.score
    by_attr = {c["attribute"]: c for c in ev["comparisons"]}
    assert list(by_attr) == [c.attribute for c in DEFAULT_COMPARISONS]
    assert by_attr["given_name"]["level"] == "jaro_winkler>=0.92"
    assert by_attr["given_name"]["weight"] == round(BY_ATTR["given_name"].weights[1], 4)
    assert by_attr["family_name"]["level"] == "exact"
    assert by_attr["email"]["level"] == "exact"
    assert by_attr["email"]["weight"] == round(BY_ATTR["email"].weights[0], 4)
    assert by_attr["phone"]["level"] == "exact"
    assert by_attr["birth_date"] == {"attribute": "birth_date", "level": "null", "weight": 0.0}
    assert by_attr["street"]["level"] == by_attr["postcode"]["level"] == by_attr["city"]["level"] == "null"
    assert d.score == pytest.approx(sum(c["weight"] for c in ev["comparisons"]), abs=1e-3)


def test_between_thresholds_is_review():
    mine = {**jonathan(), "gn": "jonathon", "dob": "1990-01-01", "em": [], "ph": [], "st": [], "pc": [], "ci": []}
    other = {**jonathan(), "em": [], "ph": [], "st": [], "pc": [], "ci": []}
    d = run("pos:2", mine, [Candidate("crm:1", "G-jon", other)])
    assert levels(d)["given_name"] == "jaro_winkler>=0.92"
    assert LOWER <= d.score < UPPER
    assert d.outcome == REVIEW
    assert d.golden_id == new_golden_id("pos:2")
    assert d.absorbed == []


def test_thresholds_are_inclusive():
    mine, other = jonathan(phones=[]), jonathan(given_name="Jonathon")
    total, _ = score(DEFAULT_COMPARISONS, mine, other)
    cand = [Candidate("crm:1", "G1", other)]
    assert run("pos:2", mine, cand, upper=total, lower=total - 1).outcome == MERGE
    assert run("pos:2", mine, cand, upper=total + 1e-6, lower=total).outcome == REVIEW
    assert run("pos:2", mine, cand, upper=total + 2, lower=total + 1e-6).outcome == NEW


def test_unrelated_person_is_new():
    other = feats(source="ecommerce", source_id="7", given_name="Priya", family_name="Patel",
                  birth_date="1990-02-03", emails=[{"address": "priya@example.org"}], addresses=[
                      {"line1": "5 Low Road", "city": "York", "postcode": "YO1 7HH", "country": "GB"}])
    d = run("crm:1", jonathan(), [Candidate("ecommerce:7", "G-priya", other)])
    assert d.outcome == NEW
    assert d.golden_id == new_golden_id("crm:1")
    assert d.score < LOWER
    assert d.evidence[0]["golden_id"] == "G-priya"


def _household():
    father = feats(given_name="James", family_name="Walker", birth_date="1961-05-02", addresses=[HOME])
    daughter = feats(source="pos", source_id="2", given_name="Sophie", family_name="Walker",
                     birth_date="1993-11-20", addresses=[HOME])
    return father, daughter


def test_household_member_is_never_merged():
    father, daughter = _household()
    d = run("pos:2", daughter, [Candidate("crm:1", "G-father", father)])
    assert levels(d)["family_name"] == "exact" and levels(d)["street"] == levels(d)["postcode"] == "exact"
    assert levels(d)["given_name"] == "else" and levels(d)["birth_date"] == "else"
    assert d.outcome != MERGE
    assert d.golden_id == new_golden_id("pos:2")


def test_household_member_is_new():
    father, daughter = _household()
    d = run("pos:2", daughter, [Candidate("crm:1", "G-father", father)])
    assert d.outcome == NEW


def test_household_member_without_birth_date_is_not_merged():
    father, _ = _household()
    daughter = feats(source="pos", source_id="2", given_name="Sophie", family_name="Walker", addresses=[HOME])
    d = run("pos:2", daughter, [Candidate("crm:1", "G-father", father)])
    assert levels(d)["given_name"] == "else" and levels(d)["birth_date"] == "null"
    assert d.outcome != MERGE


def test_household_member_sharing_a_landline_is_not_merged():
    landline = [{"number": "0113 496 0000"}]
    father = feats(given_name="James", family_name="Walker", birth_date="1961-05-02", addresses=[HOME], phones=landline)
    daughter = feats(source="pos", source_id="2", given_name="Sophie", family_name="Walker",
                     birth_date="1993-11-20", addresses=[HOME], phones=landline)
    d = run("pos:2", daughter, [Candidate("crm:1", "G-father", father)])
    assert d.outcome != MERGE


def test_golden_scores_as_its_best_member():
    weak = feats(source="pos", source_id="5", given_name="Jon", family_name="Smith")
    strong = jonathan()
    mine = jonathan(given_name="Jonathon")
    d = run("ecommerce:3", mine, [Candidate("pos:5", "G1", weak), Candidate("crm:1", "G1", strong)])
    assert len(d.evidence) == 1
    assert d.evidence[0]["member"] == "crm:1"
    assert d.score == pytest.approx(score(DEFAULT_COMPARISONS, mine, strong)[0], abs=1e-4)


def test_two_goldens_above_threshold_merge_into_the_smaller_id():
    mine = jonathan()
    best = jonathan()  # scores higher than `good`
    good = feats(source="pos", source_id="4", given_name="Jonathan", family_name="Smith",
                 emails=[{"address": "jon.smith@example.com"}])
    d = run("ecommerce:1", mine, [Candidate("crm:1", "G-b", best), Candidate("pos:4", "G-a", good)])
    assert d.evidence[0]["golden_id"] == "G-b" and d.evidence[0]["score"] > d.evidence[1]["score"] >= UPPER
    assert d.outcome == MERGE
    assert d.golden_id == "G-a"
    assert d.absorbed == ["G-b"]
    assert d.score == d.evidence[0]["score"]


def test_three_goldens_above_threshold():
    mine = jonathan()
    cands = [Candidate(f"crm:{i}", gid, jonathan()) for i, gid in enumerate(["G-c", "G-a", "G-b"])]
    cands.append(Candidate("pos:9", "G-0-unrelated", feats(given_name="Priya", family_name="Patel")))
    d = run("ecommerce:1", mine, cands)
    assert (d.outcome, d.golden_id, d.absorbed) == (MERGE, "G-a", ["G-b", "G-c"])


def test_candidates_of_another_record_type_are_ignored():
    mine = jonathan()
    org = {**jonathan(), "rt": "organisation"}
    d = run("ecommerce:1", mine, [Candidate("crm:1", "G-org", org)])
    assert d.outcome == NEW and d.evidence == [] and d.score is None
    d = run("ecommerce:1", mine, [Candidate("crm:1", "G-org", org), Candidate("pos:5", "G-p", jonathan())])
    assert d.outcome == MERGE and d.golden_id == "G-p"
    assert [e["golden_id"] for e in d.evidence] == ["G-p"]


def test_max_candidates_limits_the_evidence():
    mine = jonathan()
    cands = [Candidate(f"pos:{i}", f"G{i}", feats(given_name="Jonathan", family_name=f"Smith{'e' * i}"))
             for i in range(5)]
    d = run("crm:1", mine, cands, max_candidates=2)
    assert len(d.evidence) == 2
    assert d.evidence[0]["score"] >= d.evidence[1]["score"]


def _mixed_candidates():
    return [
        Candidate("crm:1", "G-b", jonathan()),
        Candidate("pos:4", "G-a", feats(given_name="Jonathan", family_name="Smith",
                                        emails=[{"address": "jon.smith@example.com"}])),
        Candidate("pos:5", "G-a", feats(given_name="Jon", family_name="Smith")),
        Candidate("ecommerce:2", "G-c", feats(given_name="Jonathan", family_name="Smith", birth_date="1950-01-01")),
        Candidate("ecommerce:3", "G-d", feats(given_name="Priya", family_name="Patel")),
    ]


def test_decision_is_independent_of_candidate_order():
    mine = jonathan(given_name="Jonathon")
    candidates = _mixed_candidates()
    reference = run("contact_center:1", mine, candidates)
    for perm in itertools.permutations(candidates):
        assert run("contact_center:1", mine, list(perm)) == reference


def test_review_decision_is_independent_of_candidate_order():
    mine = {**jonathan(), "gn": "jon", "dob": "1990-01-01", "em": [], "ph": [], "st": [], "pc": [], "ci": []}
    candidates = _mixed_candidates()
    reference = run("contact_center:1", mine, candidates)
    rng = random.Random(5)
    for _ in range(30):
        shuffled = candidates[:]
        rng.shuffle(shuffled)
        assert run("contact_center:1", mine, shuffled) == reference


def test_equal_scoring_members_of_one_golden_are_order_independent():
    mine = jonathan(given_name="Jonathon")
    twins = [Candidate("pos:7", "G1", jonathan()), Candidate("crm:3", "G1", jonathan())]
    assert run("ecommerce:1", mine, twins) == run("ecommerce:1", mine, twins[::-1])



def test_names_swapped_between_given_and_family_are_read_the_other_way_round():
    from hub.matching.comparisons import DEFAULT_COMPARISONS, score

    a = {"rt": "person", "gn": "mikayla", "fn": "jones", "mn": None, "dob": "1984-07-12", "em": [], "ph": [], "st": [], "pc": [], "ci": [],
         "nid": None, "loy": None, "org": None}
    swapped = {**a, "gn": "jones", "fn": "mikayla"}
    total, evidence = score(DEFAULT_COMPARISONS, a, swapped)
    levels = {attribute: level for attribute, level, _ in evidence}
    assert levels["given_name"] == "exact (names swapped)" and levels["family_name"] == "exact (names swapped)"
    assert total == score(DEFAULT_COMPARISONS, a, a)[0]
    other = {**a, "gn": "peter", "fn": "brown", "dob": "1990-01-01"}
    assert score(DEFAULT_COMPARISONS, a, other)[0] < 0  # no swap reading helps unrelated names
    # and the blocking keys meet: the swap-invariant name key is shared
    from hub.matching.features import blocking_values

    assert set(blocking_values(a)) & set(blocking_values(swapped))


def test_blocking_keys_for_names_without_a_phonetic_code():
    from hub.matching.features import blocking_values

    feats = {"rt": "person", "gn": "anna", "fn": "9", "mn": None, "dob": "1984-07-12", "em": [], "ph": [],
             "st": ["1 high st"], "pc": ["LS14AB"], "ci": [], "nid": None, "loy": None, "org": None}
    keys = blocking_values(feats)  # must not raise
    assert any(k.startswith("g:") for k in keys) and any(k.startswith("d:") for k in keys)


def test_a_surname_changed_by_marriage_still_shares_a_blocking_key():
    from hub.matching.features import blocking_values

    before = jonathan(given_name="Emma", family_name="Brown", birth_date=None, emails=[], phones=[])
    after = jonathan(given_name="Emma", family_name="Okafor", birth_date=None, emails=[], phones=[],
                     addresses=[{**HOME, "line1": "40 Park Lane"}])
    shared = set(blocking_values(before)) & set(blocking_values(after))
    assert {k.split(":", 1)[0] for k in shared} == {"z", "q"}  # postcode; given name sound + postcode


def test_a_mistyped_postcode_still_finds_the_street_in_its_town():
    from hub.matching.features import blocking_values

    a = jonathan(given_name="Kody", birth_date=None, emails=[], phones=[])
    b = jonathan(given_name="Lilly", family_name="Whyte", birth_date=None, emails=[], phones=[],
                 addresses=[{**HOME, "postcode": "LS1 4BA"}])
    shared = set(blocking_values(a)) & set(blocking_values(b))
    assert {k.split(":", 1)[0] for k in shared} == {"s"}


def test_household_guard_covers_a_mistyped_shared_surname():
    father = feats(given_name="James", family_name="Walker", birth_date="1961-05-02", addresses=[HOME])
    son = feats(source="pos", source_id="3", given_name="Oliver", family_name="Walkers", addresses=[HOME])
    d = run("pos:3", son, [Candidate("crm:1", "G-father", father)])
    assert levels(d)["family_name"].startswith("jaro_winkler") and levels(d)["given_name"] == "else"
    assert d.outcome == NEW


def test_household_guard_yields_to_a_national_id_one_keystroke_off():
    a = feats(given_name="Flynn", family_name="Rollins", national_id="2427387", addresses=[HOME])
    b = feats(source="pos", source_id="4", given_name="Zachary", family_name="Rollins", national_id="2423787",
              addresses=[HOME])
    d = run("pos:4", b, [Candidate("crm:1", "G-a", a)])
    assert levels(d)["national_id"] == "damerau<=1"
    assert d.outcome == MERGE


def test_two_records_whose_names_both_differ_do_not_merge_on_place_and_birth_date():
    a = feats(given_name="Alice", family_name="Archer", birth_date="1985-04-12", addresses=[HOME],
              phones=[{"number": "07911 100001"}])
    b = feats(source="pos", source_id="2", given_name="Brian", family_name="Booth", birth_date="1985-04-12",
              addresses=[{**HOME, "line1": "2 High Street"}], phones=[{"number": "07911 100002"}])
    d = run("pos:2", b, [Candidate("crm:1", "G-a", a)])
    assert levels(d)["birth_date"] == "exact" and levels(d)["postcode"] == "exact"
    assert d.outcome == NEW
    # ... unless an identifier only one person has agrees
    a2, b2 = {**a, "nid": "AB123456C"}, {**b, "nid": "AB123456C"}
    assert run("pos:2", b2, [Candidate("crm:1", "G-a", a2)]).outcome == MERGE


@pytest.mark.parametrize("a, b, label", [
    ("12 high street", "12 high street", "exact"),
    ("12 high street", "12 hihg street", "street>=0.9"),
    ("high street", "hihg street", "street>=0.9"),          # no numbers: not held against it
    ("1 station road", "3 station road", "else"),           # neighbours, not a typo
    ("flat 2 12 high street", "flat 3 12 high street", "else"),
])
def test_street_lines_agree_only_with_the_same_house_numbers(a, b, label):
    assert _label("street", [a], [b]) == label


def test_a_look_alike_surname_is_not_a_shared_one():
    """Chloe Carter and Alice Archer, neighbours born the same day: two people."""
    a = feats(given_name="Alice", family_name="Archer", birth_date="1985-04-12", addresses=[HOME])
    b = feats(source="pos", source_id="3", given_name="Chloe", family_name="Carter", birth_date="1985-04-12",
              addresses=[{**HOME, "line1": "3 High Street"}])
    d = run("pos:3", b, [Candidate("crm:1", "G-a", a)])
    assert levels(d)["family_name"] == "jaro_winkler>=0.8" and levels(d)["street"] == "else"
    assert d.outcome == NEW


def test_names_alone_never_merge_however_rare():
    """Two records that agree on nothing but a name (the other knows nothing else) go to review at most,
    though the names' weights alone pass the merge threshold."""
    found = feats(given_name="Zebedee", family_name="Quintavalle")
    known = Candidate("pos:1", "G1", feats(given_name="Zebedee", family_name="Quintavalle",
                                          emails=[{"address": "zq@example.com"}]))
    names_weight = sum(c["weight"] for c in run("crm:2", found, [known]).evidence[0]["comparisons"])
    assert names_weight > UPPER  # what the guard is for
    decision = run("crm:2", found, [known])
    assert decision.outcome == REVIEW and decision.score == LOWER
    same_email = feats(given_name="Zebedee", family_name="Quintavalle", emails=[{"address": "zq@example.com"}])
    assert run("crm:2", same_email, [known]).outcome == MERGE


# ------------------------------------------------------------------ issue 16: evidence kept, more compared


def test_an_invalid_birth_date_is_kept_as_evidence_for_matching():
    """A birth date that fails validation is flagged by data quality but still
    compared: one keystroke from the real date, the pair has more than names."""
    typed = event(source="pos", source_id="2", given_name="Jonathan", family_name="Smith", birth_date="1984-07-32")
    assert typed["birth_date"] is None  # the golden record never takes it
    mine, other = features(typed), feats(given_name="Jonathan", family_name="Smith", birth_date="1984-07-12")
    assert mine["dob"] == "1984-07-32"
    d = run("pos:2", mine, [Candidate("crm:1", "G-jon", other)])
    assert levels(d)["birth_date"] == "damerau<=1"
    assert d.outcome == MERGE


@pytest.mark.parametrize("raw, real, level", [
    ("1984-16-07", "1984-07-16", "date_swap"),   # month 16
    ("1984-00-12", "1984-07-12", "damerau<=1"),  # month 00
    ("19O4-07-12", "1904-07-12", "exact"),       # letter O for zero
    ("1084-07-12", "1984-07-12", "damerau<=1"),  # year 1084 for 1984
    ("2084-07-12", "1984-07-12", "damerau<=2"),  # a date in the future
])
def test_invalid_birth_dates_compare_by_keystrokes(raw, real, level):
    mine = feats(given_name="Jonathan", family_name="Smith", birth_date=raw)
    other = feats(given_name="Jonathan", family_name="Smith", birth_date=real)
    assert _label("birth_date", mine["dob"], other["dob"]) == level


def test_blocking_uses_an_invalid_birth_date():
    mine = feats(given_name="Jonathan", family_name="Smith", birth_date="1984-16-07")
    assert "d:1984-16-07:j" in blocking_values(mine) and "d:1984-16-07:s" in blocking_values(mine)
    twin_typo = feats(given_name="Jon", family_name="Smyth", birth_date="1984-16-07")
    assert {k for k in blocking_values(mine) if k.startswith("d:")} & set(blocking_values(twin_typo))


@pytest.mark.parametrize("year", [2000, 2050])
def test_matching_features_do_not_depend_on_the_clock(clock, year):
    """Replay determinism: a birth date after the event (2023) is invalid for
    data quality, but matching keeps it under any clock."""
    clock(year)
    f = feats(given_name="Jonathan", family_name="Smith", birth_date="2031-06-15")
    assert f["dob"] == "2031-06-15"
    assert "d:2031-06-15:j" in blocking_values(f)


@pytest.mark.parametrize("attribute, a, b, label", [
    ("gender", "F", "F", "exact"), ("gender", "F", "M", "else"), ("gender", None, "M", "null"),
    ("middle_name", "james", "james", "exact"), ("middle_name", "j", "james", "initial"),
    ("middle_name", "james", "j", "initial"), ("middle_name", "j", "k", "else"), ("middle_name", "james", "john", "else"),
    ("middle_name", None, "james", "null"),
])
def test_gender_and_middle_name_levels(attribute, a, b, label):
    assert _label(attribute, a, b) == label


def test_gender_and_middle_name_are_features():
    f = feats(given_name="Ann", middle_name="J.", family_name="Smith", gender="female")
    assert f["sx"] == "F" and f["mn"] == "j"


def _twins(**second):
    first = feats(given_name="Oliver", family_name="Walker", birth_date="1993-11-20", gender="male",
                  addresses=[HOME], phones=[{"number": "0113 496 0000"}])
    fields = dict(source="pos", source_id="2", given_name="Amelia", family_name="Walker", birth_date="1993-11-20",
                  gender="female", addresses=[HOME], phones=[{"number": "0113 496 0000"}])
    fields.update(second)
    return first, feats(**fields)


def test_twins_of_different_gender_are_not_merged():
    a, b = _twins()
    d = run("pos:2", b, [Candidate("crm:1", "G-oliver", a)])
    assert levels(d)["birth_date"] == "exact" and levels(d)["family_name"] == "exact"
    assert levels(d)["gender"] == "else"
    assert d.outcome == NEW


def test_twins_with_different_middle_initials_are_not_merged():
    a = {**_twins()[0], "mn": "j"}
    b = {**_twins(given_name="Jack", gender="male")[1], "mn": "r"}
    d = run("pos:2", b, [Candidate("crm:1", "G-oliver", a)])
    assert levels(d)["gender"] == "exact" and levels(d)["middle_name"] == "else"
    assert d.outcome == NEW


def test_a_household_member_with_a_copied_birth_date_is_not_merged():
    father = feats(given_name="James", family_name="Walker", birth_date="1961-05-02", gender="M", addresses=[HOME])
    daughter = feats(source="pos", source_id="2", given_name="Sophie", family_name="Walker", birth_date="1961-05-02",
                     gender="F", addresses=[HOME])
    assert run("pos:2", daughter, [Candidate("crm:1", "G-father", father)]).outcome == NEW


def test_gender_and_middle_name_do_not_lift_the_names_only_guard():
    a = feats(given_name="Jonathan", middle_name="Robert", family_name="Smith", gender="male")
    b = feats(source="pos", source_id="2", given_name="Jonathan", middle_name="Robert", family_name="Smith",
              gender="male")
    d = run("pos:2", b, [Candidate("crm:1", "G1", a)], upper=5.0, lower=3.0)
    assert levels(d)["gender"] == "exact" and levels(d)["middle_name"] == "exact"
    assert d.score == LOWER and d.outcome == REVIEW


NAMES_AND_CITY = (
    Comparison("given_name", "gn", (Level("exact", 0.9, 0.01), Level("else", 0.1, 0.99))),
    Comparison("family_name", "fn", (Level("exact", 0.9, 0.01), Level("else", 0.1, 0.99))),
    Comparison("city", "ci", (Level("exact", 0.8, 0.2), Level("else", 0.2, 0.8))),
)


def test_the_names_only_guard_caps_only_pairs_with_nothing_but_names():
    """Another attribute present and disagreeing is evidence the score counts;
    the guard is for pairs that have nothing else to compare."""
    a = {"rt": "person", "gn": "jonathan", "fn": "smith", "ci": ["leeds"]}
    moved = {**a, "ci": ["york"]}
    d = decide("pos:2", moved, [Candidate("crm:1", "G1", a)], NAMES_AND_CITY, UPPER, LOWER, MAX_CANDIDATES)
    assert levels(d)["city"] == "else" and d.score == pytest.approx(2 * math.log2(90) - 2)
    assert d.outcome == MERGE
    unknown = {**a, "ci": []}
    d = decide("pos:2", unknown, [Candidate("crm:1", "G1", a)], NAMES_AND_CITY, UPPER, LOWER, MAX_CANDIDATES)
    assert levels(d)["city"] == "null" and d.score == LOWER and d.outcome == REVIEW


# ------------------------------------------------------------------ term frequencies


def test_exact_agreement_on_a_rare_name_weighs_more_than_on_a_common_one():
    from hub.matching.comparisons import read_pair, tf_u

    a = {"rt": "person", "gn": "jonathan", "fn": "smith"}
    family = BY_ATTR["family_name"]
    plain = score(DEFAULT_COMPARISONS, a, a)[1]
    common = score(DEFAULT_COMPARISONS, a, a, lambda f, v: (2_000, 100_000) if f == "fn" else None)[1]
    rare = score(DEFAULT_COMPARISONS, a, a, lambda f, v: (1, 100_000) if f == "fn" else None)[1]
    weight = {name: dict((attr, w) for attr, _, w in ev)["family_name"]
              for name, ev in (("plain", plain), ("common", common), ("rare", rare))}
    assert weight["common"] < weight["plain"] < weight["rare"]
    assert weight["common"] == pytest.approx(math.log2(family.levels[0].m / tf_u(2_000, 100_000, family.levels[0].u)))
    label = dict((attr, lv) for attr, lv, _ in rare)["family_name"]
    assert label.startswith("exact (tf 1 in ")
    # an empty index: no adjustment
    empty = read_pair(DEFAULT_COMPARISONS, a, a, lambda f, v: (0, 0))[0]
    assert empty == pytest.approx(read_pair(DEFAULT_COMPARISONS, a, a)[0])
    # only exact agreement is adjusted
    near = score(DEFAULT_COMPARISONS, a, {**a, "fn": "smyth"}, lambda f, v: (1, 100_000))[1]
    assert dict((attr, lv) for attr, lv, _ in near)["family_name"] == "jaro_winkler>=0.8"


def test_tf_u_fades_in_with_the_counts_and_is_bounded():
    from hub.matching.comparisons import tf_u

    assert tf_u(0, 0, 0.005) == pytest.approx(0.005)
    assert tf_u(1, 10, 0.005) == pytest.approx(2 / 210)            # little data: near the average
    assert tf_u(1, 1_000_000, 0.005) == pytest.approx(2 / 1_000_200)
    assert tf_u(0, 1_000_000, 0.005) >= 1 / (1_000_000 + 200)      # never 0


def test_term_counts_follow_records_entering_changing_and_leaving():
    from hub.matching.frequencies import TermCounts, flatten

    counts = TermCounts()
    smith = flatten({"fn": "h-smith", "gn": "h-ann"})
    jones = flatten({"fn": "h-jones", "gn": "h-ann"})
    counts.replace((), smith)
    counts.replace((), smith)
    assert counts.frequencies({"fn": "h-smith"})("fn", "smith") == (2, 2)
    counts.replace(smith, jones)  # one Smith married
    assert counts.frequencies({"fn": "h-smith", "gn": "h-ann"})("fn", "smith") == (1, 2)
    assert counts.frequencies({"gn": "h-ann"})("gn", "ann") == (2, 2)
    counts.replace(jones, ())
    assert counts.frequencies({"fn": "h-jones"})("fn", "jones") == (0, 1)
    assert dict(counts.counts) == {"h-smith": 1, "#fn": 1, "h-ann": 1, "#gn": 1}


def test_term_keys_are_keyed_hashes_of_the_compared_values():
    from hub.matching.features import term_keys, term_values

    f = jonathan()
    assert term_values(f, DEFAULT_COMPARISONS) == {"gn": "t:gn:jonathan", "fn": "t:fn:smith"}
    keys = term_keys(b"k", f, DEFAULT_COMPARISONS)
    assert keys == {"gn": hash_key(b"k", "t:gn:jonathan"), "fn": hash_key(b"k", "t:fn:smith")}
    assert term_keys(b"k", {**f, "gn": None}, DEFAULT_COMPARISONS).keys() == {"fn"}


# ------------------------------------------------------------------ guardrails


def test_a_record_joining_two_large_golden_records_goes_to_review():
    from hub.matching.decide import Guardrails

    mine = jonathan()
    cands = [Candidate("crm:1", "G-a", jonathan()), Candidate("pos:4", "G-b", jonathan())]
    guard = Guardrails(max_golden_size=100, max_bridged_size=10)
    d = decide("web:1", mine, cands, DEFAULT_COMPARISONS, UPPER, LOWER, MAX_CANDIDATES,
               golden_sizes={"G-a": 12, "G-b": 30}, guardrails=guard)
    assert d.outcome == REVIEW and d.golden_id == new_golden_id("web:1") and d.absorbed == []
    assert "join 2 golden records of 30, 12 source records" in d.held_for_review
    # one small side: a chain of one record is not a large cluster
    d = decide("web:1", mine, cands, DEFAULT_COMPARISONS, UPPER, LOWER, MAX_CANDIDATES,
               golden_sizes={"G-a": 12, "G-b": 3}, guardrails=guard)
    assert (d.outcome, d.golden_id, d.absorbed, d.held_for_review) == (MERGE, "G-a", ["G-b"], None)


def test_a_golden_record_at_its_cap_takes_no_more_records_automatically():
    from hub.matching.decide import Guardrails

    cands = [Candidate("crm:1", "G-a", jonathan())]
    d = decide("web:1", jonathan(), cands, DEFAULT_COMPARISONS, UPPER, LOWER, MAX_CANDIDATES,
               golden_sizes={"G-a": 100}, guardrails=Guardrails(max_golden_size=100))
    assert d.outcome == REVIEW and "would hold 101 source records, more than max_golden_size 100" in d.held_for_review
    assert decide("web:1", jonathan(), cands, DEFAULT_COMPARISONS, UPPER, LOWER, MAX_CANDIDATES,
                  golden_sizes={"G-a": 99}, guardrails=Guardrails(max_golden_size=100)).outcome == MERGE
    assert run("web:1", jonathan(), cands).outcome == MERGE  # no guardrails, no sizes: as before


# ------------------------------------------------------------------ candidate ties


def test_tied_candidates_are_chosen_neutrally_not_by_record_key():
    from hub.stages.match import _most_shared

    crm = [f"crm:{i:03d}" for i in range(40)]
    pos = [f"pos:{i:03d}" for i in range(40)]
    groups = [set(crm + pos)]  # every one shares the one key: a full tie
    chosen = _most_shared(groups, 40, "web:1")
    assert len(chosen) == 40
    from_crm = sum(1 for m in chosen if m.startswith("crm:"))
    assert 10 < from_crm < 30, from_crm  # not all from the source whose keys sort first
    assert _most_shared(groups, 40, "web:1") == chosen  # deterministic
    assert set(_most_shared(groups, 40, "web:2")) != set(chosen)  # and not the same for every record


def test_candidates_sharing_more_specific_keys_come_first():
    from hub.stages.match import _most_shared

    crowd = {f"crm:{i:03d}" for i in range(30)}
    # the crowd and pos:a share two keys each; pos:a's second key is held by 2 records, not 31
    groups = [crowd | {"pos:a"}, {"pos:a", "pos:b"}, crowd | {"ecommerce:z"}]
    assert _most_shared(groups, 1, "web:1") == ["pos:a"]
    assert _most_shared(groups, 3, "web:1")[0] == "pos:a"
    assert "pos:b" not in _most_shared(groups, 31, "web:1") and "ecommerce:z" not in _most_shared(groups, 31, "web:1")


def test_explain_names_each_level_and_why_a_merge_was_held():
    from hub.explain import explain_text
    from hub.matching.decide import Guardrails

    cands = [Candidate("crm:1", "G-a", jonathan()), Candidate("pos:4", "G-b", jonathan())]
    d = decide("web:1", jonathan(), cands, DEFAULT_COMPARISONS, UPPER, LOWER, MAX_CANDIDATES,
               frequencies=lambda f, v: (3, 900), golden_sizes={"G-a": 12, "G-b": 30},
               guardrails=Guardrails(max_bridged_size=10))
    decision = {"outcome": d.outcome, "score": d.score, "upper_threshold": UPPER, "lower_threshold": LOWER,
                "golden_id": d.golden_id, "merged_golden_ids": d.absorbed, "blocking_keys_skipped": 0,
                "candidates": d.evidence, "held_for_review": d.held_for_review}
    text = explain_text("web:1", d.golden_id, decision)
    assert "decision: review" in text
    assert "held for review instead of merging: this record would join 2 golden records" in text
    assert "family_name        exact (tf 1 in 275)" in text  # (3 + 1) / (900 + 1/0.005)
    assert "middle_name        null" in text
    # a decision kept before the field existed still explains
    del decision["held_for_review"]
    assert "held for review" not in explain_text("web:1", d.golden_id, decision)


def test_a_pairs_readings_are_what_its_levels_say_shared_or_not():
    """read_pair hands out one Reading per level made once (the scoring hot path builds none); a reading
    adjusted for term frequency or for swapped names is its own, and the shared ones are never changed."""
    from hub.testing.harness import standardised_records
    from hub.matching.comparisons import Reading, read_pair

    comparisons = tuple(Comparison(c.attribute, c.feature, c.levels, True) if c.attribute == "family_name" else c
                        for c in DEFAULT_COMPARISONS)
    rng = random.Random(4)
    people = [features(record) for record, _ in standardised_records(300, 4, "x:")]
    frequencies = {None: None, "tf": lambda feature, value: (3, 1000)}
    for _ in range(2000):
        a, b = rng.choice(people), rng.choice(people)
        if rng.random() < 0.3:
            b = {**a, "gn": a.get("fn"), "fn": a.get("gn")}
        for name, counted in frequencies.items():
            total, readings = read_pair(comparisons, a, b, counted)
            assert total == pytest.approx(sum(r.weight for r in readings))
            other = b
            if any(r.label.endswith("(names swapped)") for r in readings):  # read against b with its names swapped
                other = {**b, "gn": b.get("fn"), "fn": b.get("gn")}
            for comparison, reading in zip(comparisons, readings):
                assert reading.comparison is comparison
                index, weight = compare(comparison, a.get(comparison.feature), other.get(comparison.feature))
                if index < 0:
                    assert reading == Reading(comparison, None, 0.0, "null")
                    continue
                assert reading.level is comparison.levels[index]
                assert reading.label.startswith(comparison.labels[index])
                if reading.label == comparison.labels[index]:
                    assert reading.weight == weight and reading is comparison.readings[index]
                else:  # its own reading, the shared one untouched
                    assert reading is not comparison.readings[index]
                    assert "(tf 1 in" in reading.label or reading.label.endswith("(names swapped)")
    for comparison in comparisons:
        assert [(r.level, r.weight, r.label) for r in comparison.readings] == list(
            zip(comparison.levels, comparison.weights, comparison.labels))
