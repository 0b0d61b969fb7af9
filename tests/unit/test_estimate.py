"""Unit tests for hub.matching.estimate: u from random pairs, m and lambda by EM."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from hub.matching.comparisons import DEFAULT_COMPARISONS, Comparison, Level, score
from hub.testing.generator import generate, truth
from hub.matching.estimate import (
    BLOCKING_RULE_FEATURES, candidate_pairs, candidate_vectors, comparison_vector, estimate_m, estimate_u,
    match_prior_weight, reestimate,
)
from hub.matching.features import blocking_values, features
from hub.standardise import standardise_and_score

BY_ATTR = {c.attribute: c for c in DEFAULT_COMPARISONS}

# --------------------------------------------------------------------------- synthetic EM recovery

TRUE_M = [[0.80, 0.12, 0.08], [0.90, 0.06, 0.04], [0.70, 0.30], [0.85, 0.10, 0.05], [0.60, 0.25, 0.15]]
TRUE_U = [[0.01, 0.04, 0.95], [0.005, 0.015, 0.98], [0.02, 0.98], [0.002, 0.05, 0.948], [0.05, 0.15, 0.80]]
TRUE_LAMBDA = 0.3
NULL_SHARE = (0.0, 0.1, 0.3, 0.05, 0.2)


def synthetic_comparisons() -> tuple[Comparison, ...]:
    """Comparisons whose starting m is wrong but ordered ("higher levels likelier"), as EM's start."""
    out = []
    for k, row in enumerate(TRUE_M):
        start = [0.5] + [0.5 / (len(row) - 1)] * (len(row) - 1)
        out.append(Comparison(f"attr{k}", f"f{k}", tuple(Level("exact", m, 0.1) for m in start)))
    return tuple(out)


def draw(r: random.Random, probs: list[float]) -> int:
    return r.choices(range(len(probs)), probs)[0]


def synthetic_vectors(n: int, seed: int = 3) -> list[tuple[int, ...]]:
    r = random.Random(seed)
    vectors = []
    for _ in range(n):
        table = TRUE_M if r.random() < TRUE_LAMBDA else TRUE_U
        vectors.append(tuple(-1 if r.random() < NULL_SHARE[k] else draw(r, row) for k, row in enumerate(table)))
    return vectors


def test_em_recovers_known_m_and_lambda_given_true_u():
    m, lam = estimate_m(synthetic_comparisons(), synthetic_vectors(40000), TRUE_U)
    assert abs(lam - TRUE_LAMBDA) < 0.02, lam
    for estimated, true in zip(m, TRUE_M):
        assert math.isclose(sum(estimated), 1.0)
        for e, t in zip(estimated, true):
            assert abs(e - t) < 0.03, (m, TRUE_M)


def test_em_is_order_independent_and_deterministic():
    vectors = synthetic_vectors(5000, seed=9)
    shuffled = vectors[:]
    random.Random(1).shuffle(shuffled)
    first = estimate_m(synthetic_comparisons(), vectors, TRUE_U)
    assert estimate_m(synthetic_comparisons(), vectors, TRUE_U) == first
    assert estimate_m(synthetic_comparisons(), shuffled, TRUE_U) == first


def test_em_keeps_unseen_levels_and_silent_comparisons_off_zero():
    comparisons = synthetic_comparisons()
    # level 0 of every comparison always; comparison 4 always null
    vectors = [(0, 0, 0, 0, -1)] * 500 + [(2, 2, 1, 2, -1)] * 500
    m, lam = estimate_m(comparisons, vectors, TRUE_U)
    for row in m:
        assert math.isclose(sum(row), 1.0)
        assert all(0.0 < x < 1.0 for x in row)
    # no evidence at all: the comparison stays (close to) where it started
    assert m[4] == pytest.approx([0.5, 0.25, 0.25], abs=0.01)
    assert 0.0 < lam < 1.0
    assert estimate_m(comparisons, [], TRUE_U)[1] == pytest.approx(0.1)


# --------------------------------------------------------------------------- generator data

@pytest.fixture(scope="module")
def stream():
    """Standardised features of the upserts of generate(3000), with record keys and ground truth."""
    events = generate(3000)
    keys, feats = [], []
    for event in events:
        if event.kind == "upsert":
            keys.append(event.key.decode())
            feats.append(features(standardise_and_score(event.value)[0]))
    blocks = [blocking_values(f) for f in feats]
    return keys, feats, blocks, truth(events)


@pytest.fixture(scope="module")
def estimated(stream):
    _keys, feats, blocks, _truth = stream
    return reestimate(DEFAULT_COMPARISONS, feats, blocks)


def test_u_from_distinct_people_is_small_for_agreement_and_large_for_else(stream):
    keys, feats, _blocks, people = stream
    seen, distinct = set(), []
    for key, f in zip(keys, feats):
        if people[key] not in seen:
            seen.add(people[key])
            distinct.append(f)
    u = estimate_u(DEFAULT_COMPARISONS, distinct)
    given = u[DEFAULT_COMPARISONS.index(BY_ATTR["given_name"])]
    family = u[DEFAULT_COMPARISONS.index(BY_ATTR["family_name"])]
    assert given[0] < 0.03 and family[0] < 0.03
    assert given[-1] > 0.9 and family[-1] > 0.9
    for row in u:
        assert math.isclose(sum(row), 1.0)
        assert all(0.0 < x < 1.0 for x in row)
    assert estimate_u(DEFAULT_COMPARISONS, distinct) == u
    assert estimate_u(DEFAULT_COMPARISONS, distinct, seed=2) != u


def test_reestimate_separates_true_from_false_pairs(stream, estimated):
    keys, feats, blocks, people = stream
    comparisons, lam = estimated
    pairs = candidate_pairs(feats, blocks)
    same = [people[keys[i]] == people[keys[j]] for i, j in pairs]
    true_share = sum(same) / len(pairs)
    # within a factor of 2 is the bar; the candidate-pair u fit does far better
    # (plain EM with the random-pair u lands near 0.73 here, against 0.47)
    assert true_share / 2 < lam < true_share * 2, (lam, true_share)
    assert abs(lam / true_share - 1) < 0.25, (lam, true_share)

    weights = [score(comparisons, feats[i], feats[j])[0] for i, j in pairs]
    true_w = [w for w, s in zip(weights, same) if s]
    false_w = [w for w, s in zip(weights, same) if not s]
    assert statistics.mean(true_w) > statistics.mean(false_w) + 15, (statistics.mean(true_w),
                                                                       statistics.mean(false_w))
    # rank separation (AUC): a true pair outscores a false one far more often than chance
    ranked = sorted((w, s) for w, s in zip(weights, same))
    below = wins = 0
    for _w, s in ranked:
        if s:
            wins += below
        else:
            below += 1
    # (the postcode rules bring households and neighbours into the candidate
    # pairs, whose address parts agree: the bar is 0.9, measured 0.92)
    assert wins / (len(true_w) * len(false_w)) > 0.9

    for c in comparisons:
        assert c.weights[0] > 0 > c.weights[-1], c  # agreement is evidence for, disagreement against
    assert len(pairs) == len(candidate_vectors(DEFAULT_COMPARISONS, feats, blocks))


def test_reestimated_m_of_disagreement_is_near_its_share_among_true_pairs(stream, estimated):
    """Forced agreement within a blocking rule is no evidence: trained on it, EM
    takes neighbours and namesakes for matches and learns that a different
    e-mail or phone is common among matches (about 0.25 instead of 0.05-0.09)."""
    keys, feats, blocks, people = stream
    comparisons, _lam = estimated
    true_pairs = [(i, j) for i, j in candidate_pairs(feats, blocks) if people[keys[i]] == people[keys[j]]]
    vectors = [comparison_vector(comparisons, feats[i], feats[j]) for i, j in true_pairs]
    for attribute in ("given_name", "family_name", "email", "phone", "street", "postcode", "city"):
        k = [c.attribute for c in comparisons].index(attribute)
        levels = [v[k] for v in vectors if v[k] >= 0]
        observed = levels.count(len(comparisons[k].levels) - 1) / len(levels)
        assert abs(comparisons[k].levels[-1].m - observed) < 0.1, (attribute, comparisons[k].levels[-1].m, observed)


def test_reestimate_keeps_structure_and_no_probability_is_0_or_1(estimated):
    comparisons, lam = estimated
    assert 0.0 < lam < 1.0
    for new, old in zip(comparisons, DEFAULT_COMPARISONS, strict=True):
        assert (new.attribute, new.feature, new.labels) == (old.attribute, old.feature, old.labels)
        assert [(lv.kind, lv.threshold) for lv in new.levels] == [(lv.kind, lv.threshold) for lv in old.levels]
        assert math.isclose(sum(lv.m for lv in new.levels), 1.0)
        assert math.isclose(sum(lv.u for lv in new.levels), 1.0)
        for level in new.levels:
            assert 0.0 < level.m < 1.0 and 0.0 < level.u < 1.0
        assert new.levels != old.levels


def test_reestimate_is_deterministic(stream, estimated):
    _keys, feats, blocks, _truth = stream
    assert reestimate(DEFAULT_COMPARISONS, feats, blocks) == estimated


def test_every_blocking_rule_is_known(stream):
    """Guards BLOCKING_RULE_FEATURES against drifting from features.blocking_values."""
    _keys, feats, blocks, _truth = stream
    prefixes = {key.split(":", 1)[0] for keys in blocks for key in keys}
    assert prefixes <= set(BLOCKING_RULE_FEATURES)
    known = {c.feature for c in DEFAULT_COMPARISONS}
    assert all(set(fs) <= known for fs in BLOCKING_RULE_FEATURES.values())


# --------------------------------------------------------------------------- small pieces

def test_comparison_vector_marks_nulls():
    a = {"gn": "jonathan", "fn": "smith", "dob": None, "em": ["j@x.com"], "ph": []}
    b = {"gn": "jonathon", "fn": "smith", "dob": "1984-07-12", "em": ["j@x.com"], "ph": ["+44"]}
    vector = comparison_vector(DEFAULT_COMPARISONS, a, b)
    assert len(vector) == len(DEFAULT_COMPARISONS)
    by_attr = dict(zip((c.attribute for c in DEFAULT_COMPARISONS), vector))
    assert by_attr["given_name"] == 1 and by_attr["family_name"] == 0 and by_attr["email"] == 0
    assert by_attr["birth_date"] == -1 and by_attr["phone"] == -1 and by_attr["national_id"] == -1


def test_candidate_pairs_once_skip_big_blocks_and_cap_deterministically():
    feats = [{"rt": "person"} for _ in range(6)] + [{"rt": "organisation"}]
    blocks = [["k:a", "k:b"], ["k:a", "k:b"], ["k:a"], ["k:c"], ["k:c"], ["k:big"], ["k:a"]]
    # 0-1 share two keys but appear once; 6 shares a key but is another record type
    assert candidate_pairs(feats, blocks) == [(0, 1), (0, 2), (1, 2), (3, 4)]
    assert candidate_pairs(feats, blocks, max_block=2) == [(0, 1), (3, 4)]
    capped = candidate_pairs(feats, blocks, max_pairs=2)
    assert len(capped) == 2 and capped == candidate_pairs(feats, blocks, max_pairs=2)
    assert set(capped) <= {(0, 1), (0, 2), (1, 2), (3, 4)}


def test_match_prior_weight():
    assert match_prior_weight(0.5) == 0.0
    assert match_prior_weight(0.2) == pytest.approx(-2.0)
    assert match_prior_weight(0.8) == pytest.approx(2.0)


def test_exact_u_is_counted_over_every_pair_not_sampled():
    """A birth date shared by 2 of 200 records: 2 of 39,800 ordered pairs agree.
    Sampling 20,000 pairs with add-one smoothing would put u near 1e-4."""
    records = [{"rt": "person", "dob": f"19{i // 12:02d}-{i % 12 + 1:02d}-01"} for i in range(199)]
    records.append({"rt": "person", "dob": records[0]["dob"]})
    dob = next(c for c in DEFAULT_COMPARISONS if c.feature == "dob")
    [u] = estimate_u((dob,), records)
    assert u[0] == pytest.approx(2 / (200 * 199))
    assert sum(u) == pytest.approx(1.0)
    assert all(x > 0 for x in u)


def test_estimate_derives_the_merge_threshold_from_the_prior():
    from hub.matching.estimate import Estimate

    estimate = Estimate(DEFAULT_COMPARISONS, match_share=0.25, candidate_pairs=4000, records=2001)
    # 1,000 expected matching pairs among 2,001,000 pairs
    assert estimate.random_pair_prior == pytest.approx(1000 / 2_001_000)
    threshold = estimate.upper_threshold(0.9)
    assert threshold == pytest.approx(math.log2(9) - match_prior_weight(1000 / 2_001_000))
    # a pair at exactly that weight has posterior 0.9
    prior = estimate.random_pair_prior
    odds = prior / (1 - prior) * 2 ** threshold
    assert odds / (1 + odds) == pytest.approx(0.9)
    assert estimate.upper_threshold(0.99) > threshold


def test_estimate_parameters_counts_pairs_and_records(stream):
    from hub.matching.estimate import estimate_parameters

    _keys, feats, blocks, _truth = stream
    estimate = estimate_parameters(DEFAULT_COMPARISONS, feats, blocks)
    assert estimate.records == len(feats)
    assert estimate.candidate_pairs == len(candidate_pairs(feats, blocks))
    assert (estimate.comparisons, estimate.match_share) == reestimate(DEFAULT_COMPARISONS, feats, blocks)
