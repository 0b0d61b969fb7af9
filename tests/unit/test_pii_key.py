"""The PII key has no public default: every command that hashes identifiers
or opens sealed values refuses to start without one (one line naming
HUB_PII_KEY and `hub new-key`); only an embedded setup makes its own and
keeps it, readable by its owner only, beside its data."""

from __future__ import annotations

import io
import stat

import pytest
from typer.testing import CliRunner

from hub.cli import cli
from hub.config import ConfigError, load_pipeline, load_settings
from hub.crypto import local_key
from hub.testing.harness import LocalHub, Worker

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def no_key(monkeypatch):
    monkeypatch.delenv("HUB_PII_KEY", raising=False)
    monkeypatch.delenv("HUB_PII_KEYS", raising=False)


@pytest.mark.parametrize("command", [
    ["run"], ["lookup-server"], ["replay"], ["explain", "crm", "C1"], ["estimate"], ["rekey"], ["reindex-lookups"],
    ["workbench"], ["self-service-link", "crm", "C1"],
])
def test_commands_that_use_the_key_refuse_to_start_without_one(command, no_key, monkeypatch, tmp_path):
    monkeypatch.setenv("HUB_REDIS__URL", UNREACHABLE_REDIS)
    monkeypatch.setenv("HUB_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("HUB_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "HUB_PII_KEY" in lines[0] and "hub new-key" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "pii-key").exists()  # a shared Redis never gets a made-up key


def test_a_keyring_alone_does_not_stand_in_for_the_hashing_key(no_key, monkeypatch):
    from hub.crypto import new_key

    monkeypatch.setenv("HUB_PII_KEYS", f"k1:{new_key()}")
    with pytest.raises(ConfigError, match="HUB_PII_KEY"):
        load_settings().pii_secret()
    with pytest.raises(ConfigError, match="HUB_PII_KEY"):
        load_settings().keyring()


def test_published_and_short_keys_are_refused_without_echoing_them(monkeypatch):
    for key in ("change-me-hub-dev-key", "short-key"):
        monkeypatch.setenv("HUB_PII_KEY", key)
        with pytest.raises(ConfigError) as error:
            load_settings()
        assert "pii_key" in str(error.value) and key not in str(error.value)


def test_new_key_without_an_id_is_a_hub_pii_key(monkeypatch):
    result = CliRunner().invoke(cli, ["new-key"])
    key = result.output.strip()
    assert result.exit_code == 0 and ":" not in key and len(key) >= 40
    monkeypatch.setenv("HUB_PII_KEY", key)
    assert load_settings().pii_secret() == key.encode()


def test_an_embedded_setup_keeps_its_own_key_readable_by_its_owner_only(tmp_path):
    first = local_key(tmp_path / "state")
    assert local_key(tmp_path / "state") == first  # a later run opens the data the first one sealed
    assert local_key(tmp_path / "other") != first  # another state directory (another demo run): another key
    mode = stat.S_IMODE((tmp_path / "state" / "pii-key").stat().st_mode)
    assert mode == 0o600
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["pii-key"]  # no draft left behind


def test_the_harness_hands_its_workers_a_generated_key(no_key, tmp_path):
    hub = LocalHub(load_pipeline(None), tmp_path)
    worker = Worker("127.0.0.1:1", UNREACHABLE_REDIS, tmp_path)
    assert worker.env["HUB_PII_KEY"] == hub.pii_key == local_key(tmp_path)
    assert "change-me" not in hub.pii_key


def test_the_harness_uses_the_key_of_its_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HUB_PII_KEY", "k" * 32)
    assert LocalHub(load_pipeline(None), tmp_path).pii_key == "k" * 32
    assert Worker("127.0.0.1:1", UNREACHABLE_REDIS, tmp_path).env["HUB_PII_KEY"] == "k" * 32
    assert not (tmp_path / "pii-key").exists()


def test_resolve_on_its_in_memory_index_needs_no_key(no_key):
    from hub.resolve import resolve_file

    lines = "\n".join('{"source": "crm", "source_id": "C%d", "given_name": "Anna", "family_name": "Smith", '
                      '"email": "anna.smith@example.com"}' % i for i in range(2))
    out = io.StringIO()
    report = resolve_file(io.StringIO(lines), out, load_pipeline(None), estimate=False, errors=io.StringIO())
    assert report.records == 2 and report.golden_records == 1


def test_resolve_into_a_given_redis_needs_the_workers_key(no_key, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"source": "crm", "source_id": "C1"}\n')
    result = CliRunner().invoke(cli, ["resolve", str(source), "--redis-url", UNREACHABLE_REDIS, "--no-estimate"])
    assert result.exit_code == 2 and "HUB_PII_KEY" in result.output


def test_workers_start_the_installed_hub_not_a_hub_folder_in_the_current_directory(tmp_path, monkeypatch):
    import subprocess

    import hub.testing.harness as harness

    shadow = tmp_path / "hub"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    (shadow / "__main__.py").write_text("print('SHADOW')\n")
    monkeypatch.chdir(tmp_path)
    started = []

    class Exited:
        returncode = 1

        def __init__(self, args, **kwargs):
            started.append(args)

        def poll(self):
            return 1

    monkeypatch.setattr(harness.subprocess, "Popen", Exited)
    with pytest.raises(RuntimeError, match="worker exited"):
        Worker("127.0.0.1:1", UNREACHABLE_REDIS, tmp_path / "state").start(timeout_s=1)
    monkeypatch.undo()
    (command,) = started
    assert command[-1] == "run"
    shown = subprocess.run([*command[:-1], "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "SHADOW" not in shown.stdout and "customer master data hub" in shown.stdout
