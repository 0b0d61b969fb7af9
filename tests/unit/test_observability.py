"""The metrics the hub exports, and the expressions that use them.

Every PromQL expression in the Grafana dashboard and in the alert rules must
name only series the hub really exports (from `hub.metrics.REGISTRY`), with
label names from the hub's closed set; the dashboard must be a dashboard
model Grafana imports as-is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from hub import metrics
from hub.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "hub-overview.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DATASOURCE_UID = "hub-prometheus"

# label names of hub metrics: closed sets of values (never ids or personal data)
ALLOWED_LABELS = {"source", "target", "stage", "reason", "decision", "dimension", "operation", "kind", "outcome",
                  "topic", "version", "action", "purpose", "connector", "status",
                  "token"}  # a configured token's digest, shortened, or unknown / none: bounded by the configuration
# labels Prometheus adds (job, instance) or histograms carry (le)
SCRAPE_LABELS = {"job", "instance", "le"}

# PromQL words that are not series names
PROMQL_WORDS = {
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio", "by", "without",
    # binary operators and vector matching
    "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool", "offset", "atan2",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_quantile",
    "histogram_count", "histogram_sum", "histogram_fraction", "holt_winters", "hour", "idelta", "increase",
    "irate", "label_join", "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear", "rate",
    "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time",
    # literals
    "inf", "nan",
}


def exported_series() -> set[str]:
    """Series names a scrape of the worker can contain."""
    names = {"up"}  # added by Prometheus to every target
    for family in REGISTRY.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        elif family.type == "info":
            names.add(family.name + "_info")
        elif family.type == "gauge":
            names.add(family.name)
        else:  # a new kind of metric: teach this test its series
            raise AssertionError(f"{family.name}: unexpected metric type {family.type}")
    return names


def hub_metrics() -> list[MetricWrapperBase]:
    return [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]


# --------------------------------------------------------------------------
# PromQL expressions


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(f"dashboard panel {p['id']} {p['title']!r} {t['refId']}", t["expr"])
            for p in dashboard()["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for g in rules["groups"] for r in g["rules"]]


ALL_EXPRS = dashboard_exprs() + alert_exprs()

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER_SUFFIX = re.compile(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?[a-z]*\b", re.I)


def parse(expr: str) -> tuple[set[str], set[str]]:
    """(series names, label names) an expression refers to."""
    labels: set[str] = set()
    text = _STRING.sub('""', expr)
    for m in _MATCHERS.finditer(text):
        labels |= {part.split("=")[0].split("!")[0].strip() for part in m.group(1).split(",") if part.strip()}
    text = _MATCHERS.sub(" ", text)
    for m in _GROUPING.finditer(text):
        labels |= {name.strip() for name in m.group(2).split(",") if name.strip()}
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _NUMBER_SUFFIX.sub(" ", text)
    names = {word for word in _IDENT.findall(text) if word.lower() not in PROMQL_WORDS}
    return names, labels


def test_parse_finds_series_and_labels():
    names, labels = parse('histogram_quantile(0.99, sum by (le, target) (rate(hub_end_to_end_seconds_bucket'
                          '{target!="pos"}[5m]))) > 1 and on () label_replace(vector(0), "target", "x", "", "")'
                          ' or deriv(sum by (topic) (hub_consumer_lag_records)[10m:1m]) > 0')
    assert names == {"hub_end_to_end_seconds_bucket", "hub_consumer_lag_records"}
    assert labels == {"le", "target", "topic"}


@pytest.mark.parametrize("where,expr", ALL_EXPRS, ids=[w for w, _ in ALL_EXPRS])
def test_expression_names_only_exported_series(where, expr):
    names, labels = parse(expr)
    assert names, f"{where}: no series in {expr!r}"
    missing = names - exported_series()
    assert not missing, f"{where}: {sorted(missing)} not exported by the hub"
    unknown = labels - ALLOWED_LABELS - SCRAPE_LABELS
    assert not unknown, f"{where}: labels {sorted(unknown)} are not hub labels"


@pytest.mark.parametrize("where,expr", ALL_EXPRS, ids=[w for w, _ in ALL_EXPRS])
def test_expression_labels_belong_to_its_series(where, expr):
    """A `by (target)` over a metric without a target label is a silent empty panel."""
    names, labels = parse(expr)
    by_series = {}
    for m in hub_metrics():
        family = m._name
        label_names = set(m._labelnames)
        for suffix in ("", "_total", "_bucket", "_sum", "_count", "_info"):
            by_series[family + suffix] = label_names | ({"le"} if suffix == "_bucket" else set())
    available = set(SCRAPE_LABELS)
    for name in names:
        available |= by_series.get(name, set())
    assert labels <= available, f"{where}: {sorted(labels - available)} carried by none of {sorted(names)}"


def test_dashboard_covers_the_issue():
    exprs = "\n".join(e for _, e in dashboard_exprs())
    for series in ("hub_events_in_total", "hub_events_out_total", "hub_stage_seconds_bucket",
                   "hub_end_to_end_seconds_bucket", "hub_dlq_total", "hub_match_decisions_total",
                   "hub_match_candidates_bucket", "hub_quality_score_sum", "hub_consent_suppressed_total",
                   "hub_tombstones_total", "hub_consumer_lag_records", "hub_golden_records"):
        assert series in exprs, series
    # each worker reports the global count held in Redis: adding them up would multiply it
    assert "sum(hub_golden_records)" not in exprs and "max(hub_golden_records)" in exprs


def test_alerts_cover_the_issue():
    exprs = {where.removeprefix("rule "): expr for where, expr in alert_exprs()}
    assert "hub_events_out_total" in exprs["HubTargetStarved"]
    assert "hub_dlq_total" in exprs["HubDLQRateHigh"]
    assert "histogram_quantile(0.99" in exprs["HubEndToEndLatencyHigh"]
    assert "hub_consumer_lag_records" in exprs["HubConsumerLagGrowing"]
    assert "hub_redis_errors_total" in exprs["HubRedisErrors"]
    assert "hub_quality_score_sum" in exprs["HubDataQualityDropping"]


# --------------------------------------------------------------------------
# metric definitions


def test_metric_names_and_labels():
    for m in hub_metrics():
        name = m._name
        assert re.fullmatch(r"hub_[a-z0-9_]+", name), name
        assert set(m._labelnames) <= ALLOWED_LABELS, (name, m._labelnames)
        if m._type == "counter":
            # prometheus_client keeps the family name without _total and exports name_total
            assert not name.endswith("_total"), name
        if m._type == "histogram" and "seconds" not in name:
            assert name.endswith(("_score", "_records", "_candidates")), f"{name}: unit not in the name"
        assert not re.search(r"_(ms|milliseconds|minutes|bytes_kb)\b", name), f"{name}: not a base unit"
    families = {f.name for f in REGISTRY.collect()}
    assert {m._name for m in hub_metrics()} == families  # nothing registered outside hub.metrics


def test_exported_series_include_the_conventional_suffixes():
    series = exported_series()
    assert {"hub_events_in_total", "hub_stage_seconds_bucket", "hub_stage_seconds_sum", "hub_stage_seconds_count",
            "hub_golden_records", "hub_build_info", "hub_consumer_lag_records"} <= series
    assert "hub_events_in" not in series


# --------------------------------------------------------------------------
# the dashboard as Grafana imports it


def test_dashboard_is_a_grafana_dashboard_model():
    d = dashboard()
    for key in ("title", "uid", "schemaVersion", "panels", "time"):
        assert key in d, key
    assert isinstance(d["title"], str) and d["title"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"])
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d.get("id") is None  # importable into any Grafana: no instance-specific id
    assert set(d["time"]) == {"from", "to"}
    assert isinstance(d.get("templating", {"list": []})["list"], list)
    ids = [p["id"] for p in d["panels"]]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids))
    occupied = set()
    for panel in d["panels"]:
        name = f"panel {panel['id']} {panel.get('title')!r}"
        assert panel.get("type") in {"timeseries", "stat", "gauge", "bargauge", "table", "text", "row"}, name
        assert isinstance(panel.get("title"), str), name
        grid = panel["gridPos"]
        assert set(grid) >= {"h", "w", "x", "y"}, name
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in "hwxy"), name
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] + grid["w"] <= 24, name
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied, f"{name} overlaps another panel"
        occupied |= cells
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, name
        targets = panel["targets"]
        assert targets, name
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)) and all(ref_ids), name
        for target in targets:
            assert isinstance(target["expr"], str) and target["expr"].strip(), name
            assert target.get("datasource", {"uid": DATASOURCE_UID})["uid"] == DATASOURCE_UID, name
        assert isinstance(panel.get("fieldConfig", {"defaults": {}})["defaults"], dict), name


def test_dashboard_datasource_is_the_provisioned_one():
    provisioned = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
                                 .read_text(encoding="utf-8"))
    assert [ds["uid"] for ds in provisioned["datasources"]] == [DATASOURCE_UID]
    uids = {m.group(1) for m in re.finditer(r'"uid":\s*"([^"]+)"', DASHBOARD.read_text(encoding="utf-8"))}
    assert uids == {DATASOURCE_UID, dashboard()["uid"]}


def test_observing_a_batch_at_once_counts_what_observing_each_value_counts():
    """hub.metrics.observe_all reads prometheus_client's own fields: this fails if a new version moves them."""
    from prometheus_client import CollectorRegistry, Histogram

    from hub.metrics import observe_all

    registry = CollectorRegistry()
    buckets = (0.1, 0.5, 1.0)
    one_by_one = Histogram("a_seconds", "", ["x"], buckets=buckets, registry=registry).labels("1")
    at_once = Histogram("b_seconds", "", ["x"], buckets=buckets, registry=registry).labels("1")
    values = [0.0, 0.1, 0.10001, 0.5, 0.7, 1.0, 1.5, float("inf"), -3.0, 0.1]
    for value in values:
        one_by_one.observe(value)
    observe_all(at_once, values)
    observe_all(at_once, [])

    def samples(name):
        return sorted((s.name.removeprefix(name), tuple(sorted(s.labels.items())), s.value)
                      for metric in registry.collect() if metric.name == name for s in metric.samples
                      if not s.name.endswith("_created"))
    assert samples("a_seconds") == samples("b_seconds") and samples("a_seconds")
