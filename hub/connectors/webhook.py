"""Target connector `http(s)://...`: an HTTP webhook, fed in batches.

Each flush POSTs the records added since the last one, in requests of at
most `max_records`, as `{"records": [document, ...]}` (hub.connectors.documents:
op upsert or delete, key, value, idempotency_key). The `Idempotency-Key`
header is the record's own key for a one-record request, else a digest of
the request's record keys, so a retried request carries the same one. Any
answer but 2xx (or no answer) raises: the connector runner retries with
backoff and dead-letters what still fails. Standard library only.
"""

from __future__ import annotations

import hashlib
import http.client
from urllib.parse import urlsplit

import orjson

from hub.connectors.documents import document


class WebhookError(RuntimeError):
    """The endpoint did not accept a request."""


class WebhookSink:
    def __init__(self, url: str, max_records: int = 100, timeout_s: float = 10.0, headers: dict | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url}: expected http(s)://host[:port]/path")
        self.url = url
        self._parts = parts
        self.max_records = int(max_records)
        self.timeout_s = float(timeout_s)
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self._pending: list[dict] = []
        self._connection: http.client.HTTPConnection | None = None

    def setup(self) -> None:
        pass

    def add(self, record) -> None:
        self._pending.append(document(record))

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            self._connection = kind(self._parts.hostname, self._parts.port, timeout=self.timeout_s)
        return self._connection

    def _post(self, documents: list[dict]) -> None:
        if len(documents) == 1:
            key = documents[0]["idempotency_key"]
        else:
            key = hashlib.sha256("\0".join(d["idempotency_key"] for d in documents).encode()).hexdigest()[:32]
        body = orjson.dumps({"records": documents})
        path = self._parts.path or "/"
        if self._parts.query:
            path += "?" + self._parts.query
        headers = {"Content-Type": "application/json", "Idempotency-Key": key, **self.headers}
        for attempt in (1, 2):
            reused = self._connection is not None
            try:
                connection = self._connect()
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                # a kept-alive connection the server closed meanwhile: once more on a fresh one
                if not (reused and attempt == 1):
                    raise WebhookError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if not 200 <= response.status < 300:
            raise WebhookError(f"{self.url}: HTTP {response.status} {response.reason}")

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.max_records):
            self._post(pending[start:start + self.max_records])

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        self._close()
