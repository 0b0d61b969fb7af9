"""Term frequencies: how many records in the identity index hold a value, for
the exact levels of comparisons with `term_frequency` (comparisons.tf_u).

The index counts, per record it holds, one keyed hash per counted value and
one total per counted feature (features.term_keys); the Redis store keeps
them in one hash, `{hub:}tf`, updated by its link script as records enter,
change and leave. `TermCounts` is the same bookkeeping in memory: the match
stage's view of the counts while it decides a batch (later records see the
earlier ones, as if linked one at a time), and the index in pure tests.
Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping

from hub.matching.comparisons import Frequencies


def flatten(keys: Mapping[str, str]) -> list[str]:
    """A record's term keys (feature -> hashed value key) as the index counts
    them: each value's key and its feature's total ("#<feature>")."""
    out = []
    for feature, key in keys.items():
        out.append(key)
        out.append("#" + feature)
    return out


class TermCounts:
    """Counts of term keys, as `{hub:}tf` holds them."""

    def __init__(self, counts: Mapping[str, int] | None = None):
        self.counts: Counter = Counter(counts or {})

    def replace(self, old: Iterable[str], new: Iterable[str]) -> None:
        """A record's terms changed from `old` to `new` (either may be empty:
        the record entered or left), as the link script counts them."""
        old, new = set(old), set(new)
        for key in old - new:
            self.counts[key] -= 1
            if self.counts[key] <= 0:
                del self.counts[key]
        for key in new - old:
            self.counts[key] += 1

    def frequencies(self, keys: Mapping[str, str]) -> Frequencies:
        """The frequencies of one record's own values (keys: feature -> its
        value's key) as they stand now: (records holding the value, records
        holding the feature). A pair agrees exactly only on the record's own
        value, so nothing else is ever asked."""
        known = {feature: (self.counts.get(key, 0), self.counts.get("#" + feature, 0))
                 for feature, key in keys.items()}
        return lambda feature, value: known.get(feature)
