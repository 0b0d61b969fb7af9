"""The worker's HTTP limits, on a real worker: 413 for a body over the size
limit, 429 with Retry-After past a caller's rate, per address and per token
(before any token is checked, so guessing tokens is slow), /metrics never throttled."""

from __future__ import annotations

import urllib.request

import pytest

pytestmark = pytest.mark.integration


def _request(worker, path: str, data: bytes | None = None, token: str = "guess") -> tuple[int, dict]:
    request = urllib.request.Request(worker.base_url + path, data=data, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_size_and_rate_limits(local_hub):
    worker = local_hub.worker(env={"HUB_WEB__RATE_PER_S": "1", "HUB_WEB__BURST": "5",
                                   "HUB_WEB__MAX_BODY_BYTES": "4096"})
    status, _ = _request(worker, "/targets/pos/customers/G1", data=b"x" * 5000, token="big")
    assert status == 413
    answers = [_request(worker, "/targets/pos/customers/G1")[0] for _ in range(8)]
    assert answers[:5] == [401] * 5 and answers[5:] == [429] * 3
    status, headers = _request(worker, "/targets/pos/customers/G1")
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert _request(worker, "/targets/pos/customers/G1", token="another")[0] == 429  # the address is limited too
    assert all(worker.get("/metrics")[0] == 200 for _ in range(20))
    assert worker.metric("hub_http_rejected_total", reason="rate_limited") >= 4
    assert worker.metric("hub_http_rejected_total", reason="too_large") == 1


def test_malformed_requests_idle_connections_and_headers_on_the_worker(local_hub):
    """The worker's Faust web server gets the same hardening as every other (hub.limits.harden)."""
    import socket
    import time

    token = "tok-5a4b3c2d1e0f99887766554433221100"
    worker = local_hub.worker()
    idle = socket.create_connection(("127.0.0.1", worker.web_port))
    opened = time.monotonic()
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", worker.web_port), timeout=5) as conn:
            conn.sendall(b"GET /targets/pos/customers/G1 HTTP/1.1\r\nAuthorization: Bearer " + token.encode()
                         + b"\x01\r\n\r\n")
            assert conn.recv(100).startswith(b"HTTP/1.0 400")
    status, headers = _request(worker, "/targets/pos/customers/G1")
    assert status == 401 and headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    assert worker.metric("hub_http_rejected_total", reason="malformed") == 50
    # an idle connection is closed after the header timeout (10 s)
    idle.settimeout(20)
    assert idle.recv(100) == b"" and time.monotonic() - opened < 15
    idle.close()
    worker.stop()
    log = worker.log_path.read_text()
    assert token not in log and token[4:12] not in log
    assert log.count("HTTP request refused: malformed") == 1
