"""A real Prometheus server (Debian package `prometheus`) on loopback scrapes a
running worker fed with events; its HTTP API shows the hub's series move."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from hub.connectors.embedded import free_port, stop_process
from hub.schemas import CUSTOMER_EVENT, codec

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus server not installed (Debian: apt-get install "
                                                  "prometheus; .ci/run installs it): real-Prometheus test not run"),
]

NOW = int(time.time() * 1000) - 60_000


def send_people(feeder, first: int, count: int) -> None:
    encode = codec(CUSTOMER_EVENT).encode
    for i in range(first, first + count):
        feeder.send("raw.crm", f"crm:M{i}".encode(), encode({
            "source": "crm", "source_id": f"M{i}", "event_time": NOW + i,
            "given_name": f"Given{i:04d}", "family_name": f"Family{i:04d}", "birth_date": "1980-01-01",
            "emails": [{"address": f"person{i:04d}@example.org"}], "phones": [{"number": f"07911 {100000 + i}"}]}))
    feeder.flush()


class PrometheusServer:
    def __init__(self, tmp_path, worker_port: int):
        self.port = free_port()
        self.config = tmp_path / "prometheus.yml"
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "scrape_configs": [{"job_name": "hub", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}],
        }), encoding="utf-8")
        self.data = tmp_path / "prometheus-data"
        self.log_path = tmp_path / "prometheus.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> "PrometheusServer":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.data}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready within {timeout_s}s")

    def stop(self) -> None:
        stop_process(self.process, grace_s=10)

    def query(self, promql: str) -> float | None:
        """Value of an instant query returning one sample, None when it returns none."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result = body["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, condition, timeout_s: float = 20.0) -> float:
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.query(promql)
            if value is not None and condition(value):
                return value
            time.sleep(0.5)
        raise TimeoutError(f"{promql}: last value {value} after {timeout_s}s")


def test_prometheus_scrapes_a_worker_and_sees_the_series_move(local_hub, feeder, tmp_path):
    worker = local_hub.worker()
    prometheus = PrometheusServer(tmp_path, worker.web_port).start()
    try:
        assert prometheus.wait_for('up{job="hub"}', lambda v: v == 1) == 1

        send_people(feeder, 0, 20)
        first = prometheus.wait_for("sum(hub_events_in_total)", lambda v: v >= 20)
        assert first == 20

        send_people(feeder, 20, 30)
        moved = prometheus.wait_for("sum(hub_events_in_total)", lambda v: v > first)
        second = prometheus.wait_for("sum(hub_events_in_total)", lambda v: v >= 50)
        assert first < moved <= second == 50

        # the events made it through to the targets, with their latency measured
        assert prometheus.wait_for("sum(hub_end_to_end_seconds_count)", lambda v: v > 0) > 0
        assert prometheus.wait_for("sum(hub_events_out_total)", lambda v: v > 0) > 0
        assert prometheus.wait_for('sum(hub_stage_records_total{stage="ingest"})', lambda v: v >= 50) >= 50
        assert prometheus.query("max(hub_build_info)") == 1
        # the expressions the dashboard uses work on real data
        assert prometheus.wait_for("sum(rate(hub_events_in_total[1m]))", lambda v: v > 0) > 0
        assert prometheus.wait_for("count(hub_consumer_lag_records)", lambda v: v > 0) > 0
        assert prometheus.query('up{job="hub"}') == 1
    finally:
        prometheus.stop()
