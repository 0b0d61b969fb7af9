"""Hardening of every HTTP server the hub runs (the worker's Faust web server,
`hub lookup-server`, `hub connect --metrics-port`, and any server to come):
one call, `harden(web_app, ...)`, on an aiohttp application before it starts.

What it installs:
- sizes: a body over `max_body_bytes` gets 413 (declared or read);
- a rate per caller: `TokenBucket` and `RateLimiter` are pure (the clock is
  passed in); past a caller's bucket (its address, and its bearer token if
  any) the answer is 429 with Retry-After; /metrics and /health are exempt;
- timeouts: a connection must complete each request head within
  `header_timeout_s` of opening or of its previous answer (slow headers and
  idle keep-alive connections are closed alike), and a body must arrive
  within `body_timeout_s` (else 408 and the connection is closed);
- security headers on every answer (`SECURITY_HEADERS`);
- quiet rejections: aiohttp logs a request its parser refuses with the raw
  bytes (a bearer token, a customer's e-mail) and a traceback. `RequestErrorLog`
  stands in for its logger: it counts every refusal in
  hub_http_rejected_total{reason}, writes at most one line per reason per
  `log_every_s` naming only the reason and the exception type, and never a
  request byte, header or address.

Rejections are counted in hub_http_rejected_total{reason} (reasons:
`REASONS`); no answer says anything about tokens or customers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict

from hub import metrics
from hub.records import describe_exception

EXEMPT = ("/metrics", "/health")  # scrapes and probes must not be throttled away
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
LINGER_S = 2.0
LOG_EVERY_S = 10.0
REASONS = ("too_large", "rate_limited", "body_timeout", "bad_method", "line_too_long", "bad_body", "malformed",
           "internal_error")
# JSON APIs: nothing may be sniffed, framed, cached or followed with a referrer; a page that needs more
# (a steward workbench) sets its own Content-Security-Policy and keeps the rest
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}


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


def rejection_reason(exc: BaseException | None) -> str:
    """A bounded label for why aiohttp refused or failed a request."""
    from aiohttp import http_exceptions as http
    from aiohttp.web_protocol import RequestPayloadError

    if isinstance(exc, http.BadStatusLine):  # BadHttpMethod too: not HTTP at all, or TLS to a plain port
        return "bad_method"
    if isinstance(exc, http.LineTooLong):
        return "line_too_long"
    if isinstance(exc, (http.PayloadEncodingError, http.ContentEncodingError, http.DecompressSizeError,
                        RequestPayloadError)):
        return "bad_body"
    if isinstance(exc, http.HttpProcessingError):
        return "malformed"
    return "internal_error"


class RequestErrorLog:
    """aiohttp's server logger, replaced (the `logger` of its request handler):
    counts, rate-limits and sanitises. aiohttp calls `debug`, `exception` and
    `warning` on it."""

    def __init__(self, log: logging.Logger | None = None, every_s: float = LOG_EVERY_S, clock=time.monotonic):
        self.log = log or logging.getLogger("hub.http")
        self.every_s = every_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def exception(self, msg: str = "", *args, exc_info=None, **kwargs) -> None:
        self._refused(exc_info if isinstance(exc_info, BaseException) else None)

    def debug(self, msg: str = "", *args, exc_info=None, **kwargs) -> None:
        # aiohttp logs a first request that is not HTTP at all at debug level: still a refusal to count
        if isinstance(exc_info, BaseException):
            self._refused(exc_info)

    def warning(self, msg: str = "", *args, **kwargs) -> None:
        # the one warning aiohttp has quotes the handler's settings, nothing from a request
        self.log.warning("HTTP server: %s", str(msg).split(",")[0])

    info = error = warning

    def _refused(self, exc: BaseException | None) -> None:
        reason = rejection_reason(exc)
        metrics.HTTP_REJECTED.labels(reason).inc()
        now = self.clock()
        if now - self._last.get(reason, -math.inf) < self.every_s:
            self._since[reason] = self._since.get(reason, 0) + 1
            return
        self._last[reason] = now
        more = self._since.pop(reason, 0)
        also = f" ({more} more since the last line)" if more else ""
        kind = type(exc).__name__ if exc is not None else "unknown"
        if reason == "internal_error":
            self.log.error("HTTP request failed in the hub: %s%s", describe_exception(exc) if exc else kind, also)
        else:
            self.log.warning("HTTP request refused: %s (%s)%s", reason, kind, also)


def _reject(reason: str, status: int, body: dict, **headers: str):
    from aiohttp import web

    metrics.HTTP_REJECTED.labels(reason).inc()
    response = web.json_response(body, status=status, headers=headers or None)
    if status in (408, 413):
        response.force_close()  # the rest of a slow or oversized body is not read: the connection cannot be reused
    return response


def middleware(max_body_bytes: int, limiter: RateLimiter, body_timeout_s: float = BODY_TIMEOUT_S):
    from aiohttp import web

    @web.middleware
    async def limits(request, handler):
        if request.content_length is not None and request.content_length > max_body_bytes:
            return _reject("too_large", 413, {"error": "request_too_large", "max_bytes": max_body_bytes})
        if request.path not in EXEMPT:
            now = time.monotonic()
            wait = max(limiter.check(caller, now) for caller in callers_of(request))
            if wait:
                return _reject("rate_limited", 429, {"error": "rate_limited"},
                               **{"Retry-After": str(max(1, math.ceil(wait)))})
        if request.can_read_body:
            # read here, under a deadline (the handler's own read() gets the same bytes): a body trickled
            # a byte at a time must not hold a connection and a handler forever
            try:
                await asyncio.wait_for(request.read(), body_timeout_s)
            except asyncio.TimeoutError:
                return _reject("body_timeout", 408, {"error": "request_timeout", "timeout_s": body_timeout_s})
            except web.HTTPRequestEntityTooLarge:
                return _reject("too_large", 413, {"error": "request_too_large", "max_bytes": max_body_bytes})
        return await handler(request)

    return limits


def harden(web_app, web_settings, *, header_timeout_s: float = HEADER_TIMEOUT_S,
           body_timeout_s: float = BODY_TIMEOUT_S, error_log: RequestErrorLog | None = None,
           security_headers: dict | None = SECURITY_HEADERS) -> None:
    """Everything a hub HTTP server needs (see the module), on an aiohttp Application before it starts,
    with the sizes and rates of `web_settings` (hub.config.WebSettings, `HUB_WEB__*`). `security_headers`
    None: the application sets its own (pages with scripts and styles need their own policy)."""
    web_app._client_max_size = web_settings.max_body_bytes  # bodies sent without Content-Length: 413 when read
    # aiohttp's request handler takes these per application; `keepalive_timeout` runs from the
    # connection's start (and from each answer) until a complete request head: the header and idle timeout;
    # `lingering_time`: how long the unread rest of a refused body is drained before the connection closes
    web_app._handler_args = {**(web_app._handler_args or {}), "keepalive_timeout": header_timeout_s,
                             "lingering_time": LINGER_S, "logger": error_log or RequestErrorLog()}
    web_app.middlewares.append(middleware(web_settings.max_body_bytes,
                                          RateLimiter(web_settings.rate_per_s, web_settings.burst), body_timeout_s))
    if security_headers:
        async def headers(request, response) -> None:
            for name, value in security_headers.items():
                response.headers.setdefault(name, value)

        web_app.on_response_prepare.append(headers)


class BackgroundServer:
    """An aiohttp application served on its own event loop in a daemon thread
    (a process whose main thread does something else: `hub connect`)."""

    def __init__(self, web_app, host: str, port: int):
        self.web_app, self.host, self.port = web_app, host, port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name=f"http-{port}", daemon=True)

    def start(self, timeout_s: float = 10.0) -> "BackgroundServer":
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"HTTP server on {self.host}:{self.port} did not start within {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self

    def _serve(self) -> None:
        from aiohttp import web

        loop = self._loop = asyncio.new_event_loop()
        runner = web.AppRunner(self.web_app, access_log=None)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, self.host, self.port).start())
        except BaseException as exc:  # the port is taken, the address is wrong: the caller says so
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def metrics_app(web_settings):
    """A hardened HTTP server of /metrics alone, for processes that have no other (`hub connect`)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/metrics", metrics.exposition)
    harden(app, web_settings)
    return app
