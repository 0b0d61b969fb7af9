"""Under HUB_TEST_STRICT=1 (CI) a skipped test fails, unless it is marked optional."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROBE = '''
import pytest

def test_needs_something_missing():
    pytest.skip("no such server here")

@pytest.mark.optional
def test_truly_optional():
    pytest.skip("an optional extra is not installed")

def test_runs():
    pass
'''


def _run(tmp_path: Path, strict: bool) -> str:
    shutil.copy(Path(__file__).resolve().parents[1] / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "HUB_TEST_STRICT"}
    if strict:
        env["HUB_TEST_STRICT"] = "1"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return done.stdout


def test_a_skip_is_a_skip_on_a_developers_machine(tmp_path):
    assert "1 passed, 2 skipped" in _run(tmp_path, strict=False)


def test_a_skip_fails_in_ci_unless_marked_optional(tmp_path):
    out = _run(tmp_path, strict=True)
    assert "1 failed, 1 passed, 1 skipped" in out
    assert "skipped under HUB_TEST_STRICT=1, where it must run: no such server here" in out
