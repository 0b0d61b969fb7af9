"""Files as connectors: `file://` as a source (JSONL, or CSV with a column
mapping, for initial loads) and as a target (JSONL, one document per record,
deletes included, fsynced on every flush).
"""

from __future__ import annotations

import csv
import os
import time
from collections import deque
from pathlib import Path
from urllib.parse import unquote, urlsplit

import orjson

from hub.connectors.documents import document
from hub.connectors.mapping import MappingError, check_mapping, default_mapping, map_row
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


class MalformedLine(ValueError):
    """A physical line of a CSV file that does not parse as a row of the header's columns."""


class CsvLines:
    """Rows of a CSV file with the physical line each starts on.

    A quoted field may span lines, so a stray quote would otherwise swallow
    every line up to the next quote (or the end of the file) into one cell.
    A row is taken only if it parses strictly and, when it spans several
    lines, has the header's number of columns; otherwise its first line is
    rejected alone and reading starts again on the line after it."""

    def __init__(self, handle):
        self._handle = handle
        self._pushed: deque[tuple[int, str]] = deque()
        self._taken: list[tuple[int, str]] = []
        self._number = 0
        self._reader = csv.reader(self._physical(), strict=True)
        self.header: list[str] = []

    def _physical(self):
        while True:
            if self._pushed:
                item = self._pushed.popleft()
            else:
                text = self._handle.readline()
                if not text:
                    return
                self._number += 1
                item = (self._number, text)
            self._taken.append(item)
            yield item[1]

    def _row(self) -> tuple[int, list[str] | MalformedLine] | None:
        self._taken = []
        try:
            row = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            row = MalformedLine(f"not a CSV row: {exc}")
        taken = self._taken
        if not taken:
            return None
        number = taken[0][0]
        if isinstance(row, list) and self.header and len(row) > len(self.header):
            row = MalformedLine(f"{len(row)} fields where the header has {len(self.header)} (an unquoted delimiter?)")
        elif isinstance(row, list) and len(taken) > 1 and len(row) != len(self.header):
            row = MalformedLine(f"a quoted field runs over {len(taken)} lines into a row of {len(row)} fields "
                                f"where the header has {len(self.header)} (an unclosed quote?)")
        if isinstance(row, MalformedLine) and len(taken) > 1:
            self._pushed.extendleft(reversed(taken[1:]))  # read again: only the first line is at fault
        return number, row

    def read_header(self) -> list[str]:
        found = self._row()
        if found is None or isinstance(found[1], MalformedLine):
            raise ValueError("no header line (column names) at the start of the CSV file")
        self.header = [name.strip() for name in found[1]]
        return self.header

    def __iter__(self):
        while True:
            found = self._row()
            if found is None:
                return
            number, row = found
            if isinstance(row, list):
                if not any(cell.strip() for cell in row):
                    continue  # a blank line
                row = dict(zip(self.header, row))
            yield number, row, self._taken[0][1].rstrip("\r\n")


class FileSource:
    """Source connector `file:///path/customers.jsonl` or `.csv`.

    JSONL: each line a CustomerEvent in JSON (`source` may be left out). CSV:
    a header line, then rows mapped by `mapping` (hub.connectors.mapping);
    without one, columns named like event fields fill them, and a file with
    no column for `source_id` is refused before anything is read.
    `event_time` defaults to the time of the load. A line that cannot become
    an event (a malformed CSV line included) is kept as Rejected (to the
    source's DLQ), with its line number.
    """

    def __init__(self, url: str, source, format: str | None = None, mapping: dict | None = None,
                 event_time_ms: int | None = None, encoding: str = "utf-8-sig"):
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
        if self.format == "csv":
            rows = CsvLines(handle)
            try:
                self._check_columns(rows.read_header())
            except ValueError:
                handle.close()
                raise
            self._lines = iter(rows)
        else:
            self._lines = iter(handle)

    def _check_columns(self, header: list[str]) -> None:
        mapping = self.mapping if self.mapping is not None else default_mapping(header)
        id_columns = [column for column, field in mapping.items() if field == "source_id" and column in header]
        if id_columns:
            return
        if self.mapping is None:
            raise ValueError(f"{self.path.name}: no column is named like an event field for source_id "
                             f"(columns: {', '.join(header[:12])}); give a mapping (--mapping FILE.yaml, "
                             "one `column: field` line per column, see docs/connectors.md)")
        raise ValueError(f"{self.path.name}: the mapping gives source_id no column of the file "
                         f"(columns: {', '.join(header[:12])})")

    def _one(self, item) -> dict | Rejected | None:
        if self.format == "csv":
            self.line, row, text = item
            if isinstance(row, MalformedLine):
                return Rejected(text.encode(), NOT_DECODABLE, f"line {self.line}: {row}")
            try:
                return map_row(row, self.mapping, self.source.name, self.event_time_ms)
            except MappingError as exc:
                return Rejected(orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS), exc.reason,
                                f"line {self.line}: {exc}")
        self.line += 1
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

    def position(self) -> tuple[int, int] | None:
        """(bytes read so far, the file's size), for a progress bar; None when closed."""
        if self._lines is None:
            return None
        return self._handle.buffer.tell(), os.fstat(self._handle.fileno()).st_size

    def commit(self) -> None:
        pass  # a load is re-run from the start: the hub is idempotent per source record and event time

    def close(self) -> None:
        if self._lines is not None:
            self._handle.close()
            self._lines = None
