"""Bulk load and export at small scale on the real broker, Redis and a worker:
`hub load --follow` of a source system's CSV export (a malformed line, a row
with no id, a row the ingest stage refuses) until every record is mastered,
then `hub export` of every golden record with its source records and a
target's slice, to JSONL and Parquet. benchmarks/bulk.py runs the same at
volume."""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys

import orjson
import pyarrow.parquet as pq
import pytest
import yaml

from hub.connectors.kafka import end_offsets
from hub.follow import behind, committed_offsets, worker_input_topics
from hub.records import ERROR_EXCEPTION
from hub.store.redis import RedisStore
from hub.testing.generator import EXPORT_COLUMNS, EXPORT_MAPPING, export_rows
from hub.testing.harness import latest_since

pytestmark = pytest.mark.integration

RECORDS = 2000
FUTURE = 32_472_144_000_000  # 2999: the ingest stage refuses it (absurd_value)


def _export_file(path) -> set[str]:
    """A CSV export of RECORDS good rows, a malformed line (line 13), a row without an id and one from 2999;
    returns the ids of the good rows."""
    good = set()
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, EXPORT_COLUMNS)
        writer.writeheader()
        for i, row in enumerate(export_rows(RECORDS, seed=5)):
            writer.writerow(row)
            good.add(row["CustNo"])
            if i == 10:
                out.write('BROKEN-1,"1767225600000,Ann\n')  # an unclosed quote: line 13
            elif i == 20:
                writer.writerow({**row, "CustNo": ""})
            elif i == 30:
                writer.writerow({**row, "CustNo": "FUTURE-1", "Changed": FUTURE})
    return good


def test_load_follow_until_mastered_then_export(local_hub, pipeline, tmp_path):
    local_hub.worker()
    export_csv, mapping = tmp_path / "crm-export.csv", tmp_path / "mapping.yaml"
    good = _export_file(export_csv)
    mapping.write_text(yaml.safe_dump(EXPORT_MAPPING))
    env = {**os.environ, "HUB_KAFKA__BOOTSTRAP_SERVERS": local_hub.bootstrap, "HUB_REDIS__URL": local_hub.redis_url}

    done = subprocess.run([sys.executable, "-m", "hub", "load", str(export_csv), "--source", "crm", "--mapping",
                           str(mapping), "--follow", "--timeout", "600"], env=env, capture_output=True, text=True,
                          timeout=700)
    assert done.returncode == 0, done.stderr[-3000:]
    out, progress = done.stdout, done.stderr
    assert f"{RECORDS + 1} events to raw.crm, 2 rejected to dlq.crm (" in out
    assert "not_decodable 1" in out and "missing_field 1" in out
    assert "rejected by their ingest stage: 1 (absurd_value 1)" in out
    # progress for a log, not a terminal: plain lines, never a carriage return
    assert "\r" not in progress and "loading raw.crm" in progress and "mastering raw.crm" in progress
    # --follow returned only once the workers had done everything there is
    ends = end_offsets(local_hub.bootstrap, worker_input_topics(pipeline))
    assert behind(ends, committed_offsets(local_hub.bootstrap, "hub", ends)) == {}
    dead = [dict(h) for h in _headers(local_hub.bootstrap, "dlq.crm")]
    assert len(dead) == 3 and any(b"line 13: " in h[ERROR_EXCEPTION] for h in dead)

    store = RedisStore.from_url(local_hub.redis_url)
    golden_count = asyncio.run(store.golden_count())
    pos = {k.decode(): orjson.loads(v) for k, v in latest_since(local_hub.bootstrap, "mastered.pos", {}).items()
           if v is not None}

    jsonl = tmp_path / "golden.jsonl"
    done = subprocess.run([sys.executable, "-m", "hub", "export", str(jsonl), "--target", "pos"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"exported {golden_count} golden records with {RECORDS} source records" in done.stdout
    rows = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
    assert len(rows) == golden_count == len({r["golden_id"] for r in rows})
    members = [m["member"] for r in rows for m in r["members"]]
    assert sorted(members) == sorted(f"crm:{i}" for i in good)  # every loaded record once, nothing else
    assert all(m["record"]["source_id"] == m["member"].split(":", 1)[1] for r in rows for m in r["members"])
    # a target's slice is what the target holds
    assert {r["golden_id"]: r["targets"]["pos"] for r in rows if r["targets"]["pos"] is not None} == pos

    parquet = tmp_path / "golden.parquet"
    done = subprocess.run([sys.executable, "-m", "hub", "export", str(parquet), "--all-targets"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pq.read_table(parquet)
    assert table.num_rows == golden_count
    assert sorted(k for keys in table.column("member_keys").to_pylist() for k in keys) == sorted(members)
    by_id = dict(zip(table.column("golden_id").to_pylist(), table.column("target_pos").to_pylist()))
    assert {gid: orjson.loads(view) for gid, view in by_id.items() if view is not None} == pos
    assert {"target_contact_center", "target_marketing", "given_name", "golden"} <= set(table.column_names)
    assert not list(tmp_path.glob("*.partial"))


def _headers(bootstrap: str, topic: str) -> list[list]:
    from hub.connectors.kafka import MergedReader

    return [message.headers or [] for message in MergedReader(bootstrap, [topic], timeout_s=60)]
