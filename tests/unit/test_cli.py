"""The `hub` command as a newcomer meets it: a version, flags that read as
flags, and one clear line instead of a traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from hub import __version__
from hub.cli import cli

runner = CliRunner()


def test_hub_version():
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"hub {__version__}"


def test_flags_show_as_flags_and_take_no_value():
    helped = runner.invoke(cli, ["demo", "--help"])
    assert helped.exit_code == 0
    serve = next(line for line in helped.output.splitlines() if "--serve" in line)
    assert "<bool>" not in serve and "BOOLEAN" not in serve


def test_a_state_dir_that_cannot_be_created_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HUB_STATE_DIR", str(blocker / "state"))
    result = runner.invoke(cli, ["run"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hub: HUB_STATE_DIR") and "cannot create it" in lines[0]


def test_loading_a_csv_without_a_mapping_says_a_mapping_is_needed(tmp_path, monkeypatch):
    export = tmp_path / "export.csv"
    export.write_text("CustNo,First,Last\nC1,Anna,Smith\n")
    monkeypatch.setenv("HUB_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached: the file is refused first
    result = runner.invoke(cli, ["load", str(export), "--source", "crm"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no column is named like an event field for source_id" in lines[0]
    assert "--mapping" in lines[0]
