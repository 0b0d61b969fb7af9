"""The connector guide's "Add a target" and "Add a source", run as written: the
code blocks are taken from docs/connectors.md, installed as a package would be (entry
points from the pyproject block), and run with `hub connect` and `hub load`
against the real broker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import orjson
import pytest
import yaml

from hub.config import load_pipeline
from test_connector_delivery import produce, read_topic, wait_for, withdrawn

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "connectors.md"


def examples() -> dict[str, str]:
    text = GUIDE.read_text()
    return dict(re.findall(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```", text, re.S))


def install(tmp_path: Path, code_name: str, entry_points_name: str) -> dict:
    """Write the guide's module and register its entry points (what `pip install` of a package does)."""
    blocks = examples()
    module = tmp_path / "site" / code_name
    module.parent.mkdir(parents=True, exist_ok=True)
    (module.parent / "__init__.py").touch()
    module.write_text(blocks[code_name])
    groups = tomllib.loads(blocks[entry_points_name])["project"]["entry-points"]
    dist = tmp_path / "site" / "acme_hub-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-hub\nVersion: 1.0\n")
    lines = []
    for group, entries in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
    with open(dist / "entry_points.txt", "a") as out:
        out.write("\n".join(lines) + "\n")
    return blocks


def env_for(local_hub, tmp_path: Path, **extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "HUB_KAFKA__BOOTSTRAP_SERVERS": local_hub.bootstrap,
            "HUB_KAFKA__SESSION_TIMEOUT_S": "2", **extra}


def test_add_a_target_guide_runs_as_written(local_hub, pipeline, tmp_path):
    blocks = install(tmp_path, "acme_hub/folder_sink.py", "target-entry-points")
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "hub/defaults/hub.yaml").read_text())
    config.update(yaml.safe_load(blocks["target-connector.yaml"]))
    config_file = tmp_path / "hub.yaml"
    config_file.write_text(yaml.safe_dump(config))
    load_pipeline(config_file)  # the guide's entry is a valid configuration
    work = tmp_path / "work"
    work.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "hub", "connect"], cwd=work,
                               env=env_for(local_hub, tmp_path, HUB_CONFIG_FILE=str(config_file)),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        produce(local_hub.bootstrap, "mastered.pos",
                [(b"G1", orjson.dumps({"golden_id": "G1", "given_name": "Anna"}), None),
                 (b"G2", orjson.dumps({"golden_id": "G2", "given_name": "Bob"}), None)])
        folder = work / "pos-customers"
        wait_for(lambda: (folder / "G1.json").exists() and (folder / "G2.json").exists(), timeout_s=60)
        produce(local_hub.bootstrap, "mastered.pos", withdrawn("G2"))
        wait_for(lambda: not (folder / "G2.json").exists(), timeout_s=30)
        assert orjson.loads((folder / "G1.json").read_bytes())["given_name"] == "Anna"
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output


def test_add_a_source_guide_runs_as_written(local_hub, pipeline, tmp_path):
    blocks = install(tmp_path, "acme_hub/loyalty_source.py", "source-entry-points")
    work = tmp_path / "work"
    work.mkdir()
    (work / "members.json").write_text(blocks["members.json"])
    command = blocks["load-command"].split()
    assert command[0] == "hub"
    done = subprocess.run([sys.executable, "-m", *command], cwd=work, env=env_for(local_hub, tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "2 events to raw.pos, 1 rejected to dlq.pos" in done.stdout
    raw = read_topic(local_hub.bootstrap, "raw.pos", 2)
    assert sorted(m.key() for m in raw) == [b"pos:L0001", b"pos:L0002"]
    assert orjson.loads(raw[0].value())["event_time"] > 1_700_000_000_000  # ISO text became epoch ms
    dead = read_topic(local_hub.bootstrap, "dlq.pos", 1)
    assert dict(dead[0].headers())["hub.error.reason"] == b"missing_field"
