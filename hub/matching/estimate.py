"""Estimating the m and u probabilities of the comparisons, and the match prior, from data.

Owns the unsupervised parameter estimation of the Fellegi-Sunter model in
comparisons.py, done the way Splink does it:

- u (how often a level holds by chance) from random pairs of records, which
  are almost all non-matches;
- m (how often a level holds for a true match) by Expectation-Maximisation
  over the candidate pairs that blocking produces, with u held fixed, one EM
  per blocking rule with the comparisons that rule forces to agree left out;
- lambda, the share of matches among the candidate pairs, by EM over all of
  them with m fixed;
- levels treated as conditionally independent given match status, and the
  null level (a value missing on either side) ignored: it carries no evidence.

Pure: records come in as feature dicts (features.features) with their plain
blocking keys (features.blocking_values); new Comparison objects come out.
Identical comparison vectors are grouped, so EM iterates over the distinct
patterns (a few hundred to a few thousand), not over every pair.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, replace

from hub.matching.comparisons import Comparison, compiled, level_of

__all__ = ["comparison_vector", "estimate_u", "estimate_m", "candidate_pairs", "candidate_vectors",
           "reestimate", "estimate_parameters", "Estimate", "MERGE_PROBABILITY", "match_prior_weight",
           "BLOCKING_RULE_FEATURES"]

# Bounds for lambda: EM must never settle on "no matches" or "all matches",
# where the log-odds prior weight would be infinite.
_LAMBDA_MIN, _LAMBDA_MAX = 1e-6, 1.0 - 1e-6
# Strength (in pairs) of the prior that smooths EM's m (and u) towards the
# starting values: keeps every probability strictly inside (0, 1) and leaves a
# comparison with no non-null evidence at all where it started, not at a guess.
_PRIOR_PAIRS = 1.0


def comparison_vector(comparisons, a: dict, b: dict) -> tuple[int, ...]:
    """Level index per comparison for one pair of feature dicts, -1 for null
    (level_of per comparison, through the comparisons' compiled reader)."""
    return compiled(comparisons).pattern(a, b)


def _comparable(a: dict, b: dict) -> bool:
    # decide() never scores a person against an organisation: such pairs are
    # not part of the population the parameters describe.
    return a.get("rt") == b.get("rt")


def estimate_u(comparisons, feature_list: list[dict], *, pairs: int = 20000,
               seed: int = 1) -> list[list[float]]:
    """u per level of each comparison from random pairs of different records.

    Random pairs are overwhelmingly non-matches, so the level frequencies among
    them estimate u. As u is a probability given both values are present (the
    null level carries no evidence), each comparison draws its pairs from the
    records that have its feature: a national id on a few percent of records
    would otherwise be measured on a handful of pairs. Add-one smoothing keeps
    every u above 0 (a level never seen by chance is rare, not impossible); a
    comparison with fewer than two records holding its feature keeps its
    current u, as there is nothing to learn from.
    """
    comparisons = tuple(comparisons)
    u: list[list[float]] = []
    for k, comparison in enumerate(comparisons):
        # one stream per comparison, so adding a comparison does not move the others' samples
        r = random.Random(f"{seed}:{k}:{comparison.feature}")
        holders = [f for f in feature_list if f.get(comparison.feature)]
        counts = [0] * len(comparison.levels)
        n = len(holders)
        drawn = attempts = 0
        # cross-type pairs are rejected; the bound keeps a lop-sided mix from spinning forever
        while n >= 2 and drawn < pairs and attempts < pairs * 20:
            attempts += 1
            i, j = r.randrange(n), r.randrange(n)
            a, b = holders[i], holders[j]
            if i == j or not _comparable(a, b):
                continue
            drawn += 1
            counts[level_of(comparison, a[comparison.feature], b[comparison.feature])] += 1
        if drawn == 0:
            u.append([level.u for level in comparison.levels])
        elif comparison.levels[0].kind == "exact":
            u.append(_with_exact_u_from_frequencies(counts, holders, comparison.feature))
        else:
            u.append([(c + 1) / (drawn + len(counts)) for c in counts])
    return u


def _with_exact_u_from_frequencies(counts: list[int], holders: list[dict], feature: str) -> list[float]:
    """u of an exact level counted over every pair rather than sampled: the
    share of pairs of holders that share a value, sum of c(c-1) over n(n-1).
    Exact agreement on a birth date or an id is so rare among random pairs
    that a sample of 20,000 sees it a handful of times or never, and add-one
    smoothing would then overstate u several times over, understating the
    weight of the very evidence that identifies a person. The other levels
    keep their sampled (smoothed) shares of the rest."""
    values: Counter = Counter()
    for holder in holders:
        value = holder[feature]
        values.update(set(value) if isinstance(value, list) else (value,))
    n = len(holders)
    all_pairs = n * (n - 1)
    exact = max(sum(c * (c - 1) for c in values.values()), 2) / all_pairs  # at least one pair: never 0
    rest = [c + 1 for c in counts[1:]]
    total = sum(rest)
    return [exact] + [(1.0 - exact) * c / total for c in rest]


def _starting_m(comparison: Comparison) -> list[float]:
    """The comparison's current m, normalised and kept off 0, as EM's start and
    smoothing prior: it already says "the higher levels are the likelier for a
    match", which steers EM to the match cluster rather than its mirror image."""
    size = len(comparison.levels)
    raw = [max(level.m, 0.0) for level in comparison.levels]
    total = sum(raw)
    if total <= 0:
        return [1.0 / size] * size
    return [0.99 * x / total + 0.01 / size for x in raw]


def _em(vectors, m, u, lam, *, m_prior=None, u_prior=None, max_iter: int, tol: float):
    """EM for lambda over comparison vectors, and for m (given m_prior) and u
    (given u_prior), each smoothed towards its prior; the other stays fixed.
    Returns m, u, lambda and the expected level counts among matches at the
    last E-step (the sufficient statistics reestimate pools across rules)."""
    # sorted, so the floating-point sums do not depend on the order pairs came in
    patterns = sorted(Counter(vectors).items())
    expected = [[0.0] * len(row) for row in m]
    if not patterns:
        return m, u, lam, expected
    total_pairs = sum(count for _, count in patterns)
    # the non-null (comparison, level) cells of each pattern
    cells = [[(k, level) for k, level in enumerate(vector) if level >= 0] for vector, _ in patterns]
    counts = [count for _, count in patterns]
    m_products = [math.prod(m[k][level] for k, level in cell) for cell in cells]
    u_products = [math.prod(u[k][level] for k, level in cell) for cell in cells]
    for _ in range(max_iter):
        expected = [[0.0] * len(row) for row in m]
        expected_non = [[0.0] * len(row) for row in u]
        matches = 0.0
        for cell, count, m_product, u_product in zip(cells, counts, m_products, u_products):
            p_match = lam * m_product
            both = p_match + (1.0 - lam) * u_product
            # both products underflowing (very many comparisons) leaves only the prior
            match_weight = count * (p_match / both if both > 0.0 else lam)
            matches += match_weight
            for k, level in cell:
                expected[k][level] += match_weight
                expected_non[k][level] += count - match_weight
        new_lam = min(max(matches / total_pairs, _LAMBDA_MIN), _LAMBDA_MAX)
        change = abs(new_lam - lam)
        lam = new_lam
        if m_prior is not None:
            new_m = [_smoothed(row, prior_row) for row, prior_row in zip(expected, m_prior)]
            change = max(change, _largest_change(new_m, m))
            m = new_m
            m_products = [math.prod(m[k][level] for k, level in cell) for cell in cells]
        if u_prior is not None:
            new_u = [_smoothed(row, prior_row) for row, prior_row in zip(expected_non, u_prior)]
            change = max(change, _largest_change(new_u, u))
            u = new_u
            u_products = [math.prod(u[k][level] for k, level in cell) for cell in cells]
        if change < tol:
            break
    return m, u, lam, expected


def _largest_change(new: list[list[float]], old: list[list[float]]) -> float:
    return max(abs(x - y) for new_row, old_row in zip(new, old) for x, y in zip(new_row, old_row))


def _smoothed(expected: list[float], prior_row: list[float]) -> list[float]:
    total = sum(expected)
    return [(x + _PRIOR_PAIRS * p) / (total + _PRIOR_PAIRS) for x, p in zip(expected, prior_row)]


def estimate_m(comparisons, vectors: list[tuple[int, ...]], u: list[list[float]], *, prior: float = 0.1,
               max_iter: int = 100, tol: float = 1e-6) -> tuple[list[list[float]], float]:
    """m per level and lambda by EM over candidate-pair vectors, u fixed.

    E-step: the probability each distinct pattern is a match,
    lambda * prod(m) / (lambda * prod(m) + (1 - lambda) * prod(u)) over its
    non-null levels. M-step: lambda is the expected share of matches and m the
    expected level frequencies among matches (smoothed towards the starting m,
    so each row sums to 1 and no m is 0 or 1). Identical vectors are grouped,
    so an iteration is one pass over the distinct patterns, not every pair.
    """
    start = [_starting_m(c) for c in comparisons]
    lam = min(max(prior, _LAMBDA_MIN), _LAMBDA_MAX)
    m, _, lam, _ = _em(vectors, start, u, lam, m_prior=start, max_iter=max_iter, tol=tol)
    return m, lam


def _pairs_by_rule(feature_list, blocking_keys, max_block, max_pairs,
                   counted: list | None = None) -> dict[tuple[int, int], frozenset[str]]:
    """Candidate pairs with the blocking rules (key prefixes) that found each
    (`counted`, when given, receives how many there were before sampling)."""
    blocks: dict[str, list[int]] = defaultdict(list)
    for i, keys in enumerate(blocking_keys):
        for key in set(keys):
            blocks[key].append(i)
    found: dict[tuple[int, int], set[str]] = defaultdict(set)
    for key, members in blocks.items():
        if len(members) < 2 or len(members) > max_block:
            continue
        rule = key.split(":", 1)[0]
        members.sort()
        for x, i in enumerate(members):
            for j in members[x + 1:]:
                found[(i, j)].add(rule)
    pairs = sorted(p for p in found if _comparable(feature_list[p[0]], feature_list[p[1]]))
    if counted is not None:
        counted.append(len(pairs))
    if len(pairs) > max_pairs:
        pairs = sorted(random.Random(0).sample(pairs, max_pairs))
    return {p: frozenset(found[p]) for p in pairs}


def candidate_pairs(feature_list: list[dict], blocking_keys: list[list[str]], *, max_block: int = 50,
                    max_pairs: int = 200000) -> list[tuple[int, int]]:
    """Index pairs (i < j) of comparable records sharing at least one blocking key, each once, sorted.

    A key shared by more than max_block records (a shared family inbox, a
    common name) is skipped: it would add many pairs and little evidence.
    Above max_pairs, a fixed-seed sample of the sorted pairs is kept, so the
    cap is deterministic and does not favour early records.
    """
    return list(_pairs_by_rule(feature_list, blocking_keys, max_block, max_pairs))


def candidate_vectors(comparisons, feature_list: list[dict], blocking_keys: list[list[str]], *,
                      max_block: int = 50, max_pairs: int = 200000) -> list[tuple[int, ...]]:
    """Comparison vectors of the candidate pairs (see candidate_pairs), in pair order."""
    comparisons = tuple(comparisons)
    return [comparison_vector(comparisons, feature_list[i], feature_list[j])
            for i, j in candidate_pairs(feature_list, blocking_keys, max_block=max_block, max_pairs=max_pairs)]


# The features each blocking rule of features.blocking_values (by key prefix)
# makes its pairs agree on. Within a rule's pairs, agreement on those is forced
# by the selection, for non-matches too, so it is no evidence of a match: EM
# over that rule leaves them out, as Splink does with a blocking rule's columns.
# A prefix missing here (a new rule) is used with nothing left out.
_ADDRESS = ("st", "pc", "ci")
BLOCKING_RULE_FEATURES: dict[str, tuple[str, ...]] = {
    "n": ("nid",), "l": ("loy",), "o": ("org",),
    # Rules on an address, or on a contact point a family shares (a home phone,
    # a family inbox), find households: the address parts agree together for
    # them, not independently, so each such rule leaves all three out (EM
    # would otherwise read a household as one person with many given names).
    "e": ("em",) + _ADDRESS,    # e-mail
    "p": ("ph",) + _ADDRESS,    # phone
    "a": ("fn",) + _ADDRESS,    # family name sound + postcode district
    "y": ("gn", "fn", "dob"),   # name sounds + birth year
    "g": ("gn", "fn"),          # name sounds (either way round)
    "d": ("dob",),              # full birth date + the initial of either name
    "z": ("fn",) + _ADDRESS,    # postcode (its pairs are households and neighbours: surnames agree too)
    "q": ("gn",) + _ADDRESS,    # given name sound + postcode
    "s": ("fn",) + _ADDRESS,    # street line + town: a household, as "h"
    "h": ("fn",) + _ADDRESS,    # postcode and street line: pairs it finds are mostly households, whose surnames agree too
}


# The posterior match probability at which records merge when the thresholds
# are derived from an estimate (Splink's customary clustering threshold).
MERGE_PROBABILITY = 0.9


@dataclass(frozen=True)
class Estimate:
    """What `estimate_parameters` learnt: the comparisons with new m and u, the
    share of matches among candidate pairs, and how many pairs and records
    that share is of."""

    comparisons: tuple[Comparison, ...]
    match_share: float
    candidate_pairs: int
    records: int

    @property
    def random_pair_prior(self) -> float:
        """The chance that two records drawn at random are one person: the
        expected matches among candidate pairs (blocking finds nearly all of
        them) over every pair of records. Splink's "probability two random
        records match", here estimated rather than asserted."""
        all_pairs = self.records * (self.records - 1) / 2
        if all_pairs <= 0:
            return _LAMBDA_MAX
        return min(max(self.match_share * self.candidate_pairs / all_pairs, _LAMBDA_MIN), _LAMBDA_MAX)

    def upper_threshold(self, probability: float = MERGE_PROBABILITY) -> float:
        """The total match weight at which a pair's posterior match probability
        reaches `probability`: Bayes with the random-pair prior, so a
        threshold follows from the data rather than being tuned for it."""
        return match_prior_weight(probability) - match_prior_weight(self.random_pair_prior)

    def describe(self) -> str:
        """One line for people: what was estimated from what, and where records merge."""
        return (f"estimated from {self.records} records; match share among candidate pairs {self.match_share:.3f}, "
                f"among all pairs {self.random_pair_prior:.2e}; merge threshold {round(self.upper_threshold(), 4)} "
                f"(match probability {MERGE_PROBABILITY})")


def estimate_parameters(comparisons, feature_list: list[dict], blocking_keys: list[list[str]], *,
                        seed: int = 1) -> Estimate:
    """u from random pairs, then m and lambda by EM over the candidate pairs.

    As in Splink, m is trained per blocking rule, on that rule's pairs with the
    comparisons the rule forces to agree left out, and each comparison's m
    pools the expected counts of the rules it was trained under. One EM over
    every candidate pair on the full vectors would read the forced agreement
    (surname and postcode district for the "a" rule, and so on) as evidence,
    call neighbours with one surname matches, and learn from them that a
    different given name or e-mail says little. Lambda is then fitted over all
    candidate pairs, full vectors, with m fixed.

    The comparisons come back as new objects (same attributes, features,
    level kinds and thresholds; new m and u).
    """
    comparisons = tuple(comparisons)
    u = estimate_u(comparisons, feature_list, seed=seed)
    counted: list[int] = []
    by_rule = _pairs_by_rule(feature_list, blocking_keys, 50, 200000, counted)
    vectors = {p: comparison_vector(comparisons, feature_list[p[0]], feature_list[p[1]]) for p in by_rule}
    start = [_starting_m(c) for c in comparisons]
    pooled = [[0.0] * len(c.levels) for c in comparisons]
    for rule in sorted({rule for rules in by_rule.values() for rule in rules}):
        left_out = set(BLOCKING_RULE_FEATURES.get(rule, ()))
        keep = [c.feature not in left_out for c in comparisons]
        session = [tuple(level if kept else -1 for level, kept in zip(vectors[p], keep))
                   for p, rules in by_rule.items() if rule in rules]
        _, _, _, expected = _em(session, start, u, 0.1, m_prior=start, max_iter=100, tol=1e-6)
        for k, kept in enumerate(keep):
            if kept:
                pooled[k] = [x + y for x, y in zip(pooled[k], expected[k])]
    m = [_smoothed(row, prior_row) for row, prior_row in zip(pooled, start)]
    # Non-matching candidate pairs agree far more often than random pairs do
    # (blocking chose them for agreeing), so scoring them with the random-pair
    # u would count neighbours and namesakes as matches: lambda is fitted with
    # m fixed and a candidate-pair u fitted alongside it (and then discarded).
    _, _, lam, _ = _em(list(vectors.values()), m, u, 0.1, u_prior=u, max_iter=500, tol=1e-7)
    updated = tuple(
        replace(c, levels=tuple(replace(level, m=m_k[i], u=u_k[i]) for i, level in enumerate(c.levels)))
        for c, m_k, u_k in zip(comparisons, m, u))
    return Estimate(updated, lam, counted[0], len(feature_list))


def reestimate(comparisons, feature_list: list[dict], blocking_keys: list[list[str]], *,
               seed: int = 1) -> tuple[tuple[Comparison, ...], float]:
    """The comparisons with m and u estimated from the data, and the match
    share among candidate pairs (see estimate_parameters)."""
    estimate = estimate_parameters(comparisons, feature_list, blocking_keys, seed=seed)
    return estimate.comparisons, estimate.match_share


def match_prior_weight(lam: float) -> float:
    """The prior match weight log2(lambda / (1 - lambda)) in bits."""
    return math.log2(lam / (1.0 - lam))
