"""Files as connectors: `file://` as a source (JSONL, or CSV with a column
mapping, for initial loads) and as a target (JSONL, one document per record,
deletes included, fsynced on every flush).
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import orjson

from hub.connectors.documents import document
from hub.connectors.mapping import MappingError, check_mapping, map_row
from hub.ports import Rejected
from hub.validation import NOT_DECODABLE, SCHEMA_MISMATCH


def path_of(url: str) -> Path:
    """file:///abs/path, file://relative/path or a plain path."""
    if "://" not in url:
        return Path(url)
    parts = urlsplit(url)
    return Path(unquote(parts.netloc + parts.path))


class FileSink:
    """Target connector `file:///path/out.jsonl`: appends one JSON line per record."""

    def __init__(self, url: str):
        self.path = path_of(url)
        self._pending: list[bytes] = []

    def setup(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, record) -> None:
        self._pending.append(orjson.dumps(document(record)) + b"\n")

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        with open(self.path, "ab") as out:
            out.write(b"".join(pending))
            out.flush()
            os.fsync(out.fileno())


class FileSource:
    """Source connector `file:///path/customers.jsonl` or `.csv`.

    JSONL: each line a CustomerEvent in JSON (`source` may be left out). CSV:
    a header line, then rows mapped by `mapping` (hub.connectors.mapping);
    `event_time` defaults to the time of the load. A line that cannot become
    an event is kept as Rejected (to the source's DLQ), with its line number.
    """

    def __init__(self, url: str, source, format: str | None = None, mapping: dict | None = None,
                 event_time_ms: int | None = None, encoding: str = "utf-8"):
        self.path = path_of(url)
        self.source = source
        self.format = format or ("csv" if self.path.suffix.lower() == ".csv" else "jsonl")
        if self.format not in ("csv", "jsonl"):
            raise ValueError(f"format {self.format!r}: csv or jsonl")
        self.mapping = check_mapping(dict(mapping)) if mapping is not None else None
        self.event_time_ms = event_time_ms or int(time.time() * 1000)
        self.encoding = encoding
        self._lines = None
        self.line = 0

    def setup(self) -> None:
        handle = open(self.path, encoding=self.encoding, errors="replace", newline="")
        self._handle = handle
        self._lines = csv.DictReader(handle) if self.format == "csv" else handle
        if self.format == "csv":
            self.line = 1  # the header

    def _one(self, item) -> dict | Rejected | None:
        self.line += 1
        if self.format == "csv":
            try:
                return map_row(item, self.mapping, self.source.name, self.event_time_ms)
            except MappingError as exc:
                return Rejected(orjson.dumps(item, option=orjson.OPT_NON_STR_KEYS), exc.reason, f"line {self.line}: {exc}")
        text = item.strip()
        if not text:
            return None
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return Rejected(text.encode(), NOT_DECODABLE, f"line {self.line}: {exc}")
        if not isinstance(event, dict):
            return Rejected(text.encode(), SCHEMA_MISMATCH, f"line {self.line}: not a JSON object")
        event.setdefault("source", self.source.name)
        return event

    def poll(self, max_records: int) -> list | None:
        out: list = []
        for item in self._lines:
            record = self._one(item)
            if record is not None:
                out.append(record)
            if len(out) >= max_records:
                return out
        return out or None

    def commit(self) -> None:
        pass  # a load is re-run from the start: the hub is idempotent per source record and event time

    def close(self) -> None:
        if self._lines is not None:
            self._handle.close()
            self._lines = None
