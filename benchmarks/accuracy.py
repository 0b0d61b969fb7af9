"""Matching accuracy on data with known truth, through `hub resolve`'s code.

Generates customers with the project's generator (typos, nicknames, swaps,
moved addresses, changed e-mails, missing fields, households), writes them as
resolve JSONL, resolves them one at a time, and prints pairwise and B-cubed
precision, recall and F1, with and without estimating m/u from the data.

    python benchmarks/accuracy.py --persons 2000
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from collections import defaultdict
from itertools import combinations

import orjson

from hub.config import load_pipeline
from hub.resolve import resolve_file
from hub.testing.generator import generate, truth


def resolve_records(events) -> tuple[list[dict], dict[str, str]]:
    """Resolve records (one per source record: its latest view, in stream
    order; missing values left out) of generated events, and the truth."""
    latest = {}
    for e in events:
        if e.kind in ("upsert", "update") and e.topic.startswith("raw."):
            latest[f"{e.value['source']}:{e.value['source_id']}"] = e
    records = []
    for e in latest.values():
        v = e.value
        rec = {"source": v["source"], "source_id": v["source_id"], "given_name": v["given_name"],
               "middle_name": v["middle_name"], "family_name": v["family_name"], "birth_date": v["birth_date"],
               "gender": v["gender"], "national_id": v["national_id"], "loyalty_id": v["loyalty_id"],
               "email": v["emails"][0]["address"] if v["emails"] else None,
               "phone": v["phones"][0]["number"] if v["phones"] else None}
        if v["addresses"]:
            a = v["addresses"][0]
            rec.update(address_line1=a["line1"], address_line2=a["line2"], city=a["city"], region=a["region"],
                       postcode=a["postcode"], country=a["country"])
        records.append({k: value for k, value in rec.items() if value is not None})
    return records, truth(list(latest.values()))


def resolve_lines(persons: int, seed: int) -> tuple[list[str], dict[str, str]]:
    records, truth_of = resolve_records(generate(persons, seed=seed))
    return [orjson.dumps(r).decode() for r in records], truth_of


def scores(clusters: dict[str, set], truth_of: dict[str, str]) -> dict:
    true_clusters = defaultdict(set)
    for cluster in clusters.values():
        for member in cluster:
            true_clusters[truth_of[member]].add(member)
    pairs = lambda groups: {p for g in groups for p in combinations(sorted(g), 2)}
    predicted, actual = pairs(clusters.values()), pairs(true_clusters.values())
    tp = len(predicted & actual)
    p = tp / len(predicted) if predicted else 1.0
    r = tp / len(actual) if actual else 1.0
    cluster_of = {m: c for c in clusters.values() for m in c}
    true_of = {m: c for c in true_clusters.values() for m in c}
    members = list(cluster_of)
    bp = sum(len(cluster_of[m] & true_of[m]) / len(cluster_of[m]) for m in members) / len(members)
    br = sum(len(cluster_of[m] & true_of[m]) / len(true_of[m]) for m in members) / len(members)
    f = lambda a, b: 2 * a * b / (a + b) if a + b else 0.0
    return {"pairwise_precision": round(p, 4), "pairwise_recall": round(r, 4), "pairwise_f1": round(f(p, r), 4),
            "bcubed_precision": round(bp, 4), "bcubed_recall": round(br, 4), "bcubed_f1": round(f(bp, br), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description="Matching accuracy on generated data with known truth")
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    lines, truth_of = resolve_lines(args.persons, args.seed)
    result = {"records": len(lines), "persons": len(set(truth_of.values()))}
    for label, estimate in (("default", False), ("estimated", True)):
        out, errors = io.StringIO(), io.StringIO()
        started = time.monotonic()
        resolve_file(io.StringIO("\n".join(lines)), out, load_pipeline(None), estimate=estimate, errors=errors)
        elapsed = time.monotonic() - started
        clusters = defaultdict(set)
        for row in csv.DictReader(io.StringIO(out.getvalue())):
            clusters[row["golden_id"]].add(f"{row['source']}:{row['source_id']}")
        measured = scores(clusters, truth_of)
        print(f"{label:>9}: " + ", ".join(f"{k} {v}" for k, v in measured.items())
              + f"; {len(lines) / elapsed:,.0f} records/s")
        result.update({f"{label}_{k}": v for k, v in measured.items()})
        result[f"{label}_records_per_s"] = round(len(lines) / elapsed, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
