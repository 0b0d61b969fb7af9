"""Token buckets and the per-caller rate limiter (pure: the clock is given)."""

from __future__ import annotations

from hub.limits import RateLimiter, TokenBucket


def test_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 0.5  # one token comes back every 0.5 s
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.6) > 0
    assert bucket.take(100.0) == 0.0  # refilled, never above the burst
    assert bucket.tokens == 2.0


def test_callers_have_their_own_buckets_and_memory_is_bounded():
    limiter = RateLimiter(rate=1.0, burst=1, max_callers=100)
    assert limiter.check("a", 0.0) == 0.0 and limiter.check("a", 0.0) > 0
    assert limiter.check("b", 0.0) == 0.0  # another caller is not slowed down by "a"
    for i in range(10_000):
        limiter.check(f"flood{i}", 1.0)
    assert len(limiter.buckets) == 100
