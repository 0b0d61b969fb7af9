"""`hub resolve`: a JSONL file through the streaming matcher, as a person runs
it: with its default in-memory identity index, and into the machine's Redis
(`--redis-url`), which must give the same golden records."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("limits", [None, {"max_block_size": 3, "max_scored": 2}], ids=["defaults", "tight-limits"])
def test_resolve_into_redis_gives_what_the_in_memory_index_gives(tmp_path, shared_redis, limits):
    """A few thousand generated records (duplicates across sources, typos,
    households; m/u estimated from the file), `hub resolve` without and with
    `--redis-url`: the same CSV, golden ids included. Tight limits put broad
    blocking keys and cut candidate lists in play (the file's largest key
    holds about ten records)."""
    import redis
    import yaml

    from hub.config import DEFAULT_CONFIG
    from hub.testing.generator import generate

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.accuracy import resolve_records

    records, _ = resolve_records(generate(1500, seed=31))
    path = tmp_path / "records.jsonl"
    path.write_text("".join(orjson.dumps(r).decode() + "\n" for r in records))
    config = []
    if limits:
        data = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
        data["match"].update(limits)
        (tmp_path / "hub.yaml").write_text(yaml.safe_dump(data))
        config = ["--config", str(tmp_path / "hub.yaml")]
    outputs = {}
    for name, extra in (("memory", []), ("redis", ["--redis-url", shared_redis])):
        result = subprocess.run([sys.executable, "-m", "hub", "resolve", str(path), *config, *extra],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        outputs[name] = result.stdout
    assert outputs["memory"] == outputs["redis"]
    rows = list(csv.DictReader(io.StringIO(outputs["memory"])))
    assert len(rows) == len(records) > 2500
    assert len({r["golden_id"] for r in rows}) < 0.7 * len(rows)  # duplicates merged
    assert redis.Redis.from_url(shared_redis).dbsize()  # the records went into that Redis
