"""CSV files the hub writes (`hub resolve --out`, and any report to come):
read by people, in spreadsheets, that run a cell starting with `=`, `+`,
`-`, `@` (and tab or carriage return) as a formula: `=HYPERLINK(...)` in a
source id would be a link, `@SUM(1+1)*cmd|' /C calc'!A0` a command.

Every cell of such a file goes through `safe_cell`, which prefixes a cell
starting with one of those characters with a single quote (OWASP's advice):
a spreadsheet shows it as text, and a program reading the file back drops a
leading quote that precedes one of them (`read_cell`).
"""

from __future__ import annotations

import csv
from typing import IO, Iterable

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def read_cell(text: str) -> str:
    """What `safe_cell` was given (for programs reading a hub CSV back)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text


def write_rows(out: IO[str], header: list[str], rows: Iterable[Iterable]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([safe_cell(cell) for cell in header])
    writer.writerows([safe_cell(cell) for cell in row] for row in rows)
