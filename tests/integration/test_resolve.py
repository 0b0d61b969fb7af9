"""`hub resolve`: a JSONL file through the streaming matcher and the real
(embedded) Redis index, as a person runs it."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import orjson
import pytest

pytestmark = pytest.mark.integration


def test_resolve_links_duplicates_reports_bad_lines_and_ignores_unknown_keys(tmp_path):
    lines = [
        {"source": "crm", "source_id": "1", "given_name": "Anna", "family_name": "Smith",
         "email": "anna.smith@gmail.com", "birth_date": "1980-02-03", "postcode": "LS1 4AB", "country": "GB"},
        {"source": "pos", "source_id": "7", "given_name": "ANNA", "family_name": "SMITH",
         "email": "Anna.Smith@gmail.com", "phone": "07911 123456", "shoe_size": "38"},
        {"source": "web", "source_id": "x", "given_name": "Bob", "family_name": "Jones", "birth_date": "1975"},
        {"source": "web", "given_name": "No", "family_name": "Id"},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(orjson.dumps(x).decode() for x in lines) + "\nnot json\n")
    out = tmp_path / "out.csv"
    result = subprocess.run([sys.executable, "-m", "hub", "resolve", str(path), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["source"], r["source_id"]) for r in rows] == [("crm", "1"), ("pos", "7"), ("web", "x")]
    golden = {r["source_id"]: r["golden_id"] for r in rows}
    assert golden["1"] == golden["7"] != golden["x"]
    assert "line 4: missing_field" in result.stderr and "line 5: not JSON" in result.stderr
    assert "resolved 3 records into 2 golden records (2 lines rejected)" in result.stderr
    # the same file again gives the same ids: golden ids are derived from the records, not from chance
    again = subprocess.run([sys.executable, "-m", "hub", "resolve", str(path)], capture_output=True, text=True,
                           timeout=120)
    assert list(csv.DictReader(io.StringIO(again.stdout))) == rows
