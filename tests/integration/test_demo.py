"""`hub demo` as a person runs it: it finishes, its summary adds up, and it
leaves no process behind."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

from hub.connectors.embedded import free_port

pytestmark = pytest.mark.integration


def _children_alive(pattern: str) -> list[str]:
    result = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True)
    return [line for line in result.stdout.splitlines() if "pgrep" not in line]


def test_demo_runs_summarises_and_cleans_up():
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "hub", "demo", "--persons", "120", "--web-port", str(port)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    fed = int(re.search(r"events fed\s+(\d+)", out).group(1))
    kinds = {k: int(v) for k, v in re.findall(r"^  (consent|delete|invalid|update|upsert)\s+(\d+)$", out, re.M)}
    assert sum(kinds.values()) == fed and kinds["invalid"] > 0 and kinds["consent"] > 0
    rejected = int(re.search(r"rejected to DLQ\s+(\d+)", out).group(1))
    canonical = int(re.search(r"canonical records\s+(\d+)", out).group(1))
    # every raw event is accounted for: canonical or dead-lettered
    assert rejected == kinds["invalid"]
    assert canonical == kinds["upsert"] + kinds["update"] + kinds["delete"]
    golden = int(re.search(r"golden records\s+(\d+)", out).group(1))
    assert 0 < golden < kinds["upsert"]  # duplicates were merged
    for target in ("pos", "contact_center", "marketing"):
        assert re.search(rf"^  {target}\s+emitted\s+\d+", out, re.M)
    assert f"http://127.0.0.1:{port}/metrics" in out
    # what this demo started is gone: its broker (the address it printed) and its worker
    broker = re.search(r"broker\s+(127\.0\.0\.1:\d+)", out).group(1)
    assert not _children_alive(f"tcp://{broker}"), "the demo's broker is still running"
    with socket.socket() as probe:  # the worker served on that port; nothing may answer there now
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the demo's worker is still running"
