"""`hub run` against a broker and Redis of its own (not the embedded ones)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_a_missing_state_dir_is_created(local_hub, tmp_path):
    state = tmp_path / "not" / "there" / "yet"
    worker = local_hub.worker(env={"HUB_STATE_DIR": str(state)})  # raises unless it gets to Ready
    assert worker.get("/health")[0] == 200
    assert (state / "faust").is_dir()
