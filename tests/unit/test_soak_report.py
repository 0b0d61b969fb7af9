"""The pure helpers of benchmarks/soak.py that say what the embedded broker did."""

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"
_spec = importlib.util.spec_from_file_location("soak", _PATH)
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)


def _sample(t_s, fetch_ms, cpu=50, backlog=0, records=1000):
    return {"t_s": t_s, "backlog": backlog, "worker_rss_mb": 100.0, "broker_cpu_pct": cpu, "broker_rss_mb": 300,
            "fetch_ms": fetch_ms, "slowest_partition": "raw.crm/0", "slowest_partition_records": records}


def test_first_slow_fetch_is_the_first_over_a_second_or_unanswered():
    samples = [_sample(30, 5.0), _sample(40, 900.0), _sample(50, 1500.0, backlog=700, records=9000),
               _sample(60, None)]
    summary = soak.broker_summary(samples, {"broker_cpu_pct": 130, "broker_rss_mb": 1600, "fetch_ms": None},
                                  {"start": samples[0], "last_fed": samples[-1]})
    assert summary["first_slow_fetch"] == {"t_s": 50, "fetch_ms": 1500.0, "slowest_partition": "raw.crm/0",
                                           "slowest_partition_records": 9000, "backlog": 700}
    assert summary["mean_cpu_pct_while_feeding"] == 50
    words = soak.broker_words(summary)
    assert "raw.crm/0 (9000 records) first took 1500 ms at t=50 s (backlog 700)" in words
    assert "end 130 % CPU, 1600 MB, slowest fetch unanswered" in words

    unanswered_first = soak.broker_summary([_sample(30, None)], {}, {"start": None})
    assert unanswered_first["first_slow_fetch"]["t_s"] == 30
    assert "first went unanswered at t=30 s" in soak.broker_words(unanswered_first)


def test_a_quick_broker_is_not_blamed():
    samples = [_sample(30, 5.0), _sample(40, 12.0)]
    summary = soak.broker_summary(samples, {"broker_cpu_pct": 40, "broker_rss_mb": 400, "fetch_ms": 8.0},
                                  {"start": samples[0]})
    assert summary["first_slow_fetch"] is None
    assert "first took" not in soak.broker_words(summary)
    assert "slowest fetch 8.0 ms" in soak.broker_words(summary)


def test_samples_taken_before_the_probe_first_looked_are_skipped():
    early = {"t_s": 30, "backlog": 0, "worker_rss_mb": 100.0}
    summary = soak.broker_summary([early, _sample(40, 3.0, cpu=80)], {}, {"start": early})
    assert summary["mean_cpu_pct_while_feeding"] == 80
    assert summary["first_slow_fetch"] is None
