"""Every HTTP server the hub runs is hardened by one call (hub.limits.harden):
here the lookup server and the connectors' /metrics server, on real sockets.
Malformed requests carrying a token or a customer's data reach no log line
and are counted; the log lines are rate-limited; slow headers, slow bodies
and idle connections are closed; callers are rate-limited; every answer
carries the security headers."""

from __future__ import annotations

import http.client
import logging
import socket
import time

import pytest
from aiohttp import web

from hub.config import WebSettings, load_pipeline
from hub.connectors.embedded import free_port
from hub.demo import with_demo_tokens
from hub.limits import SECURITY_HEADERS, BackgroundServer, RequestErrorLog, harden
from hub.lookup_api import server_app
from hub.limits import metrics_app
from hub.metrics import REGISTRY
from hub.store.redis import RedisStore

TOKEN = "tok-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
CUSTOMER = b'{"given_name": "Zebulonia", "emails": [{"address": "zeb.qux@quxmail.example"}], "phones": [{"number": "07700 900461"}]}'
SECRETS = [TOKEN.encode(), b"Zebulonia", b"zeb.qux@quxmail.example", b"07700 900461", b"9f8e7d6c"]


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("hub_http_rejected_total", {"reason": reason}) or 0.0


def exchange(port: int, data: bytes, timeout_s: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
        conn.sendall(data)
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    return answer


def closed_within(conn: socket.socket, seconds: float, feed: bytes | None = None, every_s: float = 0.2) -> float | None:
    """Seconds until the server closes `conn` (None if it did not within `seconds`), feeding `feed` byte by byte."""
    started = time.monotonic()
    conn.settimeout(every_s)
    position = 0
    while time.monotonic() - started < seconds:
        if feed is not None and position < len(feed):
            try:
                conn.sendall(feed[position:position + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
            position += 1
        try:
            chunk = conn.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
        if chunk == b"":
            return time.monotonic() - started
        if feed is None or b"408" in chunk:
            continue
    return None


@pytest.fixture
def lookup_server(tmp_path, redis_url):
    pipeline, tokens = with_demo_tokens(load_pipeline(None), tmp_path / "hub.yaml")
    app = server_app(pipeline, RedisStore.from_url(redis_url), b"k" * 32, WebSettings(rate_per_s=1, burst=20),
                     header_timeout_s=1.0, body_timeout_s=1.0)
    server = BackgroundServer(app, "127.0.0.1", free_port()).start()
    server.tokens = tokens.targets
    yield server
    server.stop()


def test_malformed_requests_leave_no_bytes_in_the_log_and_are_counted(lookup_server, caplog):
    caplog.set_level(logging.DEBUG)
    port = lookup_server.port
    before = {r: rejected(r) for r in ("malformed", "bad_method", "line_too_long", "bad_body")}
    for i in range(100):
        # a control character in a header holding a bearer token
        exchange(port, b"GET /targets/pos/lookup?email=x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
                 + TOKEN.encode() + b"\x01\r\n\r\n")
        # a body longer than its Content-Length: the rest is parsed as the next request
        exchange(port, b"POST /targets/pos/lookup HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}" + CUSTOMER)
        # a header line past the parser's limit, made of a customer's data
        exchange(port, b"GET / HTTP/1.1\r\nX-Customer: " + CUSTOMER * 100 + b"\r\n\r\n")
        # a chunked body whose chunk size is a customer's name
        exchange(port, b"POST /targets/pos/lookup HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"Zebulonia\r\n" + CUSTOMER + b"\r\n0\r\n\r\n")
    time.sleep(0.2)
    logged = caplog.text.encode() + b"".join(str(r.__dict__).encode() for r in caplog.records)
    assert not [s for s in SECRETS if s in logged], "request bytes reached the log"
    counted = {r: rejected(r) - before[r] for r in before}
    assert counted["malformed"] >= 200 and counted["bad_method"] >= 100 and counted["line_too_long"] == 100
    refusals = [r for r in caplog.records if r.name == "hub.http"]
    assert 1 <= len(refusals) <= 4, [r.getMessage() for r in refusals]  # one line per reason per 10 s
    assert all(r.levelno == logging.WARNING and "Traceback" not in r.getMessage() for r in refusals)
    assert not [r for r in caplog.records if r.name.startswith("aiohttp")]


def test_refusal_lines_are_rate_limited_and_say_how_many_were_left_out():
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    log = logging.getLogger("test.refusals")
    log.addHandler(Collect())
    log.propagate = False
    now = [0.0]
    from aiohttp.http_exceptions import BadHttpMessage

    error_log = RequestErrorLog(log, every_s=10, clock=lambda: now[0])
    for i in range(100):
        now[0] = i * 0.05
        error_log.exception("Error handling request from %s", "10.0.0.1", exc_info=BadHttpMessage("b'secret'"))
    now[0] = 12.0
    error_log.exception("Error handling request from %s", "10.0.0.1", exc_info=BadHttpMessage("b'secret'"))
    assert lines == ["HTTP request refused: malformed (BadHttpMessage)",
                     "HTTP request refused: malformed (BadHttpMessage) (99 more since the last line)"]


def test_a_failing_handler_is_logged_by_type_and_place_never_by_its_message(caplog):
    caplog.set_level(logging.DEBUG)

    async def fails(request):
        raise ValueError("customer zeb.qux@quxmail.example not found")

    app = web.Application()
    app.router.add_get("/boom", fails)
    harden(app, WebSettings())
    server = BackgroundServer(app, "127.0.0.1", free_port()).start()
    try:
        before = rejected("internal_error")
        assert exchange(server.port, b"GET /boom HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").startswith(
            b"HTTP/1.1 500")
    finally:
        server.stop()
    assert rejected("internal_error") == before + 1
    assert b"quxmail" not in caplog.text.encode()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "hub.http"]
    assert "ValueError" in line and "test_http_hardening.py" in line and "in fails" in line


def test_slow_headers_slow_bodies_and_idle_connections_are_closed(lookup_server):
    port = lookup_server.port
    with socket.create_connection(("127.0.0.1", port)) as idle:
        assert closed_within(idle, 6.0) is not None
    with socket.create_connection(("127.0.0.1", port)) as slow_head:
        slow_head.sendall(b"GET /health HTTP/1.1\r\n")
        assert closed_within(slow_head, 6.0, feed=b"X-Trickle: " + b"a" * 40) is not None
    before = rejected("body_timeout")
    with socket.create_connection(("127.0.0.1", port)) as slow_body:
        slow_body.sendall(b"POST /targets/pos/lookup HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
                          + lookup_server.tokens["pos"].encode() + b"\r\nContent-Length: 100\r\n\r\n")
        assert closed_within(slow_body, 6.0, feed=b"x" * 100) is not None
    assert rejected("body_timeout") == before + 1
    # a keep-alive connection idle after its answer
    with socket.create_connection(("127.0.0.1", port)) as kept:
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        assert closed_within(kept, 6.0) is not None


def test_the_lookup_server_rate_limits_guessed_tokens(lookup_server):
    conn = http.client.HTTPConnection("127.0.0.1", lookup_server.port, timeout=5)
    statuses = []
    for i in range(60):
        conn.request("GET", "/targets/pos/lookup?email=a@b.example", headers={"Authorization": f"Bearer guess{i}"})
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
    assert statuses[:20] == [401] * 20 and set(statuses[21:]) == {429}
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert response.status == 200 and b"hub_http_rejected_total" in response.read()  # scrapes are never throttled


def test_every_answer_carries_the_security_headers(lookup_server):
    conn = http.client.HTTPConnection("127.0.0.1", lookup_server.port, timeout=5)
    token = lookup_server.tokens["pos"]
    for method, path, headers, body, status in [
        ("GET", "/health", {}, None, 200),
        ("GET", "/openapi.json", {}, None, 200),
        ("GET", "/targets/pos/lookup?email=nobody@example.com", {"Authorization": f"Bearer {token}"}, None, 404),
        ("GET", "/targets/pos/lookup?email=nobody@example.com", {}, None, 401),
        ("GET", "/no/such/route", {}, None, 404),
        ("POST", "/targets/pos/lookup", {"Content-Length": str(2 << 20)}, None, 413),
    ]:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == status, path
        assert {k: response.getheader(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS, path
        if response.will_close:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", lookup_server.port, timeout=5)


def test_the_connectors_metrics_server_is_hardened_too(caplog):
    caplog.set_level(logging.DEBUG)
    server = BackgroundServer(metrics_app(WebSettings()), "127.0.0.1", free_port()).start()
    try:
        answer = exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") and b"X-Content-Type-Options: nosniff" in answer
        before = rejected("malformed")
        exchange(server.port, b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() + b"\x01\r\n\r\n")
    finally:
        server.stop()
    assert rejected("malformed") == before + 1 and TOKEN not in caplog.text
