"""hub.testing.harness.percentile: the one quantile every benchmark reports its latencies with."""

import math

from hub.testing.harness import percentile


def test_the_quantile_is_the_nearest_rank_of_the_sorted_values():
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 100.0  # past the end: the largest, not an IndexError


def test_no_values_give_nan_not_an_error():
    assert math.isnan(percentile([], 0.99))
