"""Sizes of the hub's in-process caches (functools.lru_cache), in one place.

The worker memoises pure functions of the values it sees: standardising
names, e-mails, phones and addresses; folded text and phonetic codes for
matching. An entry costs about 340 bytes (key, value and the cache's own
link; tracemalloc on the soak stream), and a full cache keeps them for the
life of the process, so these sizes are the memory bound:
5 x CUSTOMER_VALUES + 4 x VOCABULARY entries, about 25 MB at most.

At 65,536 entries each (as before) the caches held 70 MB after the first
62,000 events of `benchmarks/soak.py` (6 minutes at 200 events/s), 220,000
of their 540,000 entries, and kept growing the worker's memory (about
180 MB when full). On that stream the hit rates at these sizes are those
at 65,536 (e-mails 0.40, phones 0.20, addresses 0.20, house numbers 0.45,
folded text 0.92, names 0.95).
"""

# A customer's own values (e-mails, phones, addresses, streets) come back
# within a few thousand records: the same customer in another source, an
# update. Older ones are rarely seen again.
CUSTOMER_VALUES = 4096

# Names, towns, birth dates and phonetic codes form a vocabulary that keeps
# being reused, so a larger share of it is worth keeping.
VOCABULARY = 16384
