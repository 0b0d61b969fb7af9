"""A newcomer's first hour, as the README tells it: `hub demo --serve`, the
`export` lines it prints pasted into a second shell, and the README's tour
commands (its ```sh tour blocks) run there as written, each one's output
matching the ```text tour-output block after it (… stands for anything).
The guide cannot drift from the product. On the way: a second demo while
one runs says so in one line, and Ctrl-C stops everything quietly, leaving
no process and no folder behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub.connectors.embedded import free_port
from test_demo import processes_started_with

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def tour() -> list[tuple[str, str]]:
    """(commands, expected output) for each tour step of the README, in order."""
    steps = re.findall(r"```sh tour\n(.*?)```\s*(?:```text tour-output\n(.*?)```)?", README.read_text(), re.S)
    assert len(steps) >= 6, "the README's tour blocks are missing"
    return steps


def matches(expected: str, output: str) -> bool:
    """Every expected line matches an output line, in order; … stands for any text."""
    lines = iter(output.splitlines())
    for pattern in expected.strip("\n").splitlines():
        regex = re.compile(".*?".join(re.escape(part) for part in pattern.split("…")))
        if not any(regex.fullmatch(line) for line in lines):
            return False
    return True


def test_the_readme_tour_runs_as_written(tmp_path):
    port = free_port()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    # the venv's bin first, as in a shell where it is activated (hub and python are the installed ones)
    base = {**os.environ, "TMPDIR": str(tmpdir), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    demo = subprocess.Popen(["hub", "demo", "--serve", "--persons", "100", "--web-port", str(port)], env=base,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed = []
    try:
        deadline = time.monotonic() + 300
        while not any(line.startswith("export STEWARD_TOKEN=") for line in printed):
            line = demo.stdout.readline()
            assert line or demo.poll() is None, "".join(printed)[-3000:] + demo.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the demo did not print its export lines"
            printed.append(line)
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", "".join(printed), re.M))
        assert {"DEMO_URL", "HUB_KAFKA__BOOTSTRAP_SERVERS", "HUB_REDIS__URL", "POS_TARGET_TOKEN",
                "CRM_SOURCE_TOKEN", "STEWARD_TOKEN"} <= exports.keys()

        # a second demo while this one runs: one clear line, no traceback
        second = subprocess.run(["hub", "demo", "--web-port", str(port)], env=base, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2 and second.stderr.count("\n") == 1 and "in use" in second.stderr

        shell = {**base, **exports}
        for commands, expected in tour():
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", commands], env=shell, capture_output=True,
                                  text=True, timeout=180)
            assert done.returncode == 0, f"$ {commands}\n{done.stdout}\n{done.stderr}"
            assert matches(expected, done.stdout), f"$ {commands}\nexpected:\n{expected}\ngot:\n{done.stdout}"
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            demo.wait(120)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
    rest, errors = demo.stdout.read(), demo.stderr.read()
    assert demo.returncode == 130 and "stopping" in rest
    assert "|FAIL|" not in rest + errors and "Traceback" not in rest + errors, errors[-3000:]
    assert processes_started_with(tmpdir) == [] and list(tmpdir.iterdir()) == []
