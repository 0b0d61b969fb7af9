"""`hub export`: every golden record, with the source records it is built
from (and, if asked, what each target may see of it), to JSONL or Parquet,
for a warehouse or an audit. Streams: golden records are read from the store
in batches and written as they come, so memory stays flat at any volume.

JSONL: one object per golden record, `{"golden_id", "golden", "members":
[{"member", "record", "quality"}], "targets": {<target>: slice or null}}`.
Parquet (the `parquet` extra, pyarrow): one row per golden record, the
single-valued attributes as columns of their own, `member_keys` as a list,
and the whole golden record, its members and each target's slice as JSON
text columns (so the schema is the same for every row group).

A target's slice is its projection while consent (and the target's record
types and key) allow it, else null: what the target holds, or would hold,
now. Export reads a live store: a record changed while the export runs is
exported as it was when its batch was read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import orjson

from hub.config import PipelineConfig
from hub.consent import ALLOWED, target_verdict
from hub.projection import project, target_key

READ_BATCH = 1000
ROW_GROUP = 20_000
SCALAR_COLUMNS = {
    "golden_id": "string", "version": "int64", "record_type": "string", "given_name": "string",
    "middle_name": "string", "family_name": "string", "birth_date": "string", "gender": "string",
    "national_id": "string", "loyalty_id": "string", "organisation_name": "string", "account_ref": "string",
    "lifecycle": "string", "account_golden_id": "string", "household_id": "string", "quality_score": "float64",
    "freshness": "float64", "updated_at": "int64",
}


class ExportError(RuntimeError):
    """The export cannot run as asked (format, a missing extra, an unknown target)."""


@dataclass
class ExportReport:
    golden_records: int = 0
    members: int = 0
    seconds: float = 0.0


def export_rows(store, pipeline: PipelineConfig, targets: list[str], now_ms: int | None = None) -> Iterator[dict]:
    """Every golden record in the store as an export row (the JSONL object)."""
    chosen = [pipeline.target(name) for name in targets]
    purposes = {p.name: p for p in pipeline.purposes}
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    batch: list[str] = []

    def rows(golden_ids: list[str]) -> Iterator[dict]:
        for gid, state in asyncio.run(store.load(golden_ids)).items():
            if state.golden is None:
                continue  # deleted or merged away since the scan found it
            row = {"golden_id": gid, "golden": state.golden,
                   "members": [{"member": member, "record": c["record"], "quality": c["quality"]}
                               for member, c in sorted(state.contributions.items())]}
            if chosen:
                row["targets"] = {t.name: _slice(state.golden, t, purposes, now_ms) for t in chosen}
            yield row

    for golden in store.all_golden(READ_BATCH):
        batch.append(golden["golden_id"])
        if len(batch) >= READ_BATCH:
            yield from rows(batch)
            batch = []
    if batch:
        yield from rows(batch)


def _slice(golden: dict, target, purposes, now_ms: int) -> dict | None:
    if target_verdict(golden, target, purposes, now_ms) != ALLOWED or not target_key(golden, target):
        return None
    return project(golden, target)


def export(store, pipeline: PipelineConfig, out: Path, *, format: str | None = None, targets: list[str] = (),
           on_progress: Callable[[int], None] | None = None) -> ExportReport:
    """Write every golden record to `out` (JSONL or Parquet, by `format` or the file's suffix)."""
    format = format or ("parquet" if out.suffix.lower() == ".parquet" else "jsonl")
    unknown = [name for name in targets if pipeline.target(name) is None]
    if unknown:
        raise ExportError(f"--target {', '.join(unknown)}: not a target of the pipeline "
                          f"({', '.join(t.name for t in pipeline.targets)})")
    writer = {"jsonl": JsonlWriter, "parquet": ParquetWriter}.get(format)
    if writer is None:
        raise ExportError(f"--format {format}: jsonl or parquet")
    report = ExportReport()
    started = time.monotonic()
    partial = out.with_name(out.name + ".partial")  # a reader never sees half a file under the real name
    try:
        with writer(partial, list(targets)) as sink:
            for row in export_rows(store, pipeline, list(targets)):
                sink.add(row)
                report.golden_records += 1
                report.members += len(row["members"])
                if on_progress is not None and report.golden_records % 1000 == 0:
                    on_progress(report.golden_records)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    report.seconds = time.monotonic() - started
    return report


class JsonlWriter:
    def __init__(self, path: Path, targets: list[str]):
        self.out = open(path, "wb")

    def add(self, row: dict) -> None:
        self.out.write(orjson.dumps(row) + b"\n")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.out.close()


class ParquetWriter:
    """Rows buffered into row groups of ROW_GROUP; one fixed schema for the whole file."""

    def __init__(self, path: Path, targets: list[str]):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ExportError("Parquet needs pyarrow: pip install 'cmdm-hub[parquet]'") from None
        self.pa = pa
        fields = [pa.field(name, getattr(pa, kind)()) for name, kind in SCALAR_COLUMNS.items()]
        fields += [pa.field("member_keys", pa.list_(pa.string())), pa.field("golden", pa.string()),
                   pa.field("members", pa.string())]
        fields += [pa.field(f"target_{name}", pa.string()) for name in targets]
        self.schema = pa.schema(fields)
        self.targets = targets
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        golden = row["golden"]
        flat = {name: golden.get(name) for name in SCALAR_COLUMNS}
        flat["member_keys"] = [m["member"] for m in row["members"]]
        flat["golden"] = orjson.dumps(golden).decode()
        flat["members"] = orjson.dumps(row["members"]).decode()
        for name in self.targets:
            view = row["targets"][name]
            flat[f"target_{name}"] = None if view is None else orjson.dumps(view).decode()
        self.rows.append(flat)
        if len(self.rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(self.pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._flush()
        self.writer.close()
