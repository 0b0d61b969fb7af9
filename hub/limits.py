"""Limits on the worker's HTTP endpoints: request size and a rate per caller.

`TokenBucket` and `RateLimiter` are pure (the clock is passed in); the aiohttp
middleware answers 413 for a body over the limit and 429 with Retry-After
when a caller (its address, and its bearer token if any) spends its bucket. Rejections are counted in hub_http_rejected_total{reason}; the
answers say nothing about tokens or customers.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict

from hub import metrics

EXEMPT = ("/metrics", "/health")  # scrapes and probes must not be throttled away


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, now: float) -> float:
        """0 if allowed (one token spent), else seconds until a token is there."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """A bucket per caller; the least recently seen callers are forgotten past
    `max_callers`, so a flood of new callers cannot grow memory without bound."""

    def __init__(self, rate: float, burst: float, max_callers: int = 10_000):
        self.rate, self.burst, self.max_callers = rate, burst, max_callers
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, caller: str, now: float) -> float:
        bucket = self.buckets.get(caller)
        if bucket is None:
            bucket = self.buckets[caller] = TokenBucket(self.rate, self.burst, now)
            if len(self.buckets) > self.max_callers:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(caller)
        return bucket.take(now)


def callers_of(request) -> list[str]:
    """The address always (a new token per request must not buy a new bucket:
    guessing tokens stays slow), and the token when there is one (as a digest
    only, never the token itself)."""
    callers = ["a:" + (request.remote or "")]
    auth = request.headers.get("Authorization") or ""
    if auth:
        callers.append("t:" + hashlib.sha256(auth.encode()).hexdigest()[:32])
    return callers


def middleware(max_body_bytes: int, limiter: RateLimiter):
    from aiohttp import web

    @web.middleware
    async def limits(request, handler):
        if request.content_length is not None and request.content_length > max_body_bytes:
            metrics.HTTP_REJECTED.labels("too_large").inc()
            return web.json_response({"error": "request_too_large", "max_bytes": max_body_bytes}, status=413)
        if request.path not in EXEMPT:
            now = time.monotonic()
            wait = max(limiter.check(caller, now) for caller in callers_of(request))
            if wait:
                metrics.HTTP_REJECTED.labels("rate_limited").inc()
                return web.json_response({"error": "rate_limited"}, status=429,
                                         headers={"Retry-After": str(max(1, math.ceil(wait)))})
        return await handler(request)

    return limits


def install(web_app, max_body_bytes: int, rate_per_s: float, burst: float) -> None:
    """On Faust's aiohttp application, before it starts."""
    web_app._client_max_size = max_body_bytes  # bodies sent without Content-Length: 413 when read
    web_app.middlewares.append(middleware(max_body_bytes, RateLimiter(rate_per_s, burst)))
