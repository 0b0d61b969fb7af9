"""Unit tests for hub.config: the pipeline YAML, its one-line errors, Settings, and `hub check-config`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import cli
from hub.config import (
    DEFAULT_CONFIG,
    GOLDEN_FIELDS,
    ConfigError,
    PipelineConfig,
    Settings,
    load_pipeline,
    load_settings,
)

GOOD = """\
sources:
  - name: crm
  - name: pos
targets:
  - name: marketing
    purposes: [marketing]
    channels: [email]
    fields: [given_name, emails]
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("HUB_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "hub.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert "Traceback" not in message
    return message


def one_line_error(path: Path) -> str:
    message = error_of(path)
    assert "\n" not in message, message
    assert message.startswith(str(path))
    return message


# ------------------------------------------------------------------ the packaged default


def test_packaged_default_loads():
    pipeline = load_pipeline(None)
    assert isinstance(pipeline, PipelineConfig)
    assert [s.name for s in pipeline.sources] == ["crm", "pos", "ecommerce", "contact_center", "self_service"]
    assert {t.name for t in pipeline.targets} == {"pos", "contact_center", "marketing"}
    assert {p.name for p in pipeline.purposes} >= {"service", "marketing"}
    assert next(p for p in pipeline.purposes if p.name == "service").granted_by_default
    assert pipeline.match.lower_threshold <= pipeline.match.upper_threshold
    assert pipeline.survivorship.source_priority[:2] == ["self_service", "crm"]
    for target in pipeline.targets:
        assert set(target.fields) <= set(GOLDEN_FIELDS)
    assert load_pipeline(DEFAULT_CONFIG) == pipeline


def test_default_topics():
    pipeline = load_pipeline(None)
    topics = pipeline.all_topics()
    assert "raw.crm" in topics and "dlq.crm" in topics and "mastered.marketing" in topics
    assert len(topics) == len(set(topics))
    assert pipeline.source("pos").raw_topic == "raw.pos"
    assert pipeline.source("nope") is None


def test_good_file_loads(tmp_path):
    pipeline = load_pipeline(write(tmp_path, GOOD))
    [target] = pipeline.targets
    assert target.channels == ["email"] and target.output_topic == "mastered.marketing"
    assert pipeline.quality.max_event_bytes == 65536


# ------------------------------------------------------------------ one line per problem, naming the field


def test_unknown_target_field(tmp_path):
    message = one_line_error(write(tmp_path, GOOD.replace("[given_name, emails]", "[given_name, shoe_size]")))
    assert "targets.0.fields" in message and "shoe_size" in message


def test_target_purpose_not_in_purposes(tmp_path):
    message = one_line_error(write(tmp_path, GOOD.replace("[marketing]", "[spam]")))
    assert "targets.0.purposes" in message and "spam" in message


def test_duplicate_source_names(tmp_path):
    message = one_line_error(write(tmp_path, "sources: [{name: crm}, {name: pos}, {name: crm}]\n"))
    assert "sources" in message and "duplicate" in message and "crm" in message


def test_duplicate_target_names(tmp_path):
    text = GOOD + "  - name: marketing\n    fields: [emails]\n"
    message = one_line_error(write(tmp_path, text))
    assert "targets" in message and "duplicate" in message


def test_duplicate_purpose_names(tmp_path):
    text = GOOD + "purposes: [{name: marketing}, {name: marketing, granted_by_default: true}]\n"
    message = one_line_error(write(tmp_path, text))
    assert "purposes" in message and "duplicate" in message


@pytest.mark.parametrize("yaml_text, field", [
    ("sources: [{name: CRM}]\n", "sources.0.name"),
    ("sources: [{name: crm}, {name: pos-terminals}]\n", "sources.1.name"),
    ("sources: [{name: 1crm}]\n", "sources.0.name"),
    ("sources: [{name: " + "a" * 49 + "}]\n", "sources.0.name"),
    (GOOD.replace("name: marketing", "name: Marketing Team"), "targets.0.name"),
    ("sources: [{name: crm}]\npurposes: [{name: e-mail}]\n", "purposes.0.name"),
])
def test_bad_name_characters(tmp_path, yaml_text, field):
    message = one_line_error(write(tmp_path, yaml_text))
    assert field in message


def test_lower_threshold_above_upper(tmp_path):
    message = one_line_error(write(tmp_path, GOOD + "match: {upper_threshold: 5, lower_threshold: 6}\n"))
    assert "match" in message and "lower_threshold" in message
    load_pipeline(write(tmp_path, GOOD + "match: {upper_threshold: 5, lower_threshold: 5}\n", "equal.yaml"))


@pytest.mark.parametrize("yaml_text, field", [
    ("sources: [{name: crm, colour: red}]\n", "sources.0.colour"),
    ("sources: [{name: crm, format: xml}]\n", "sources.0.format"),
    ("sources: []\n", "sources"),
    ("targets: []\n", "sources"),
    ("sources: [{name: crm}]\npartitions: 0\n", "partitions"),
    ("sources: [{name: crm}]\nquality: {max_event_bytes: 10}\n", "quality.max_event_bytes"),
    ("sources: [{name: crm}]\nsurvivorship: {rules: {shoe_size: most_recent}}\n", "survivorship.rules"),
    ("sources: [{name: crm}]\ntargets: [{name: t}]\n", "targets.0.fields"),
])
def test_other_bad_values_name_the_field(tmp_path, yaml_text, field):
    assert field in one_line_error(write(tmp_path, yaml_text))


def test_one_line_per_problem(tmp_path):
    text = "sources: [{name: CRM}, {name: pos, format: xml}]\npartitions: 0\n"
    lines = error_of(write(tmp_path, text)).splitlines()
    assert len(lines) == 3
    assert any("sources.0.name" in line for line in lines)
    assert any("sources.1.format" in line for line in lines)
    assert any("partitions" in line for line in lines)


@pytest.mark.parametrize("yaml_text", ["- crm\n- pos\n", "just a string\n", "42\n", "", "# only a comment\n"])
def test_non_mapping_yaml(tmp_path, yaml_text):
    message = one_line_error(write(tmp_path, yaml_text))
    assert "mapping" in message


def test_missing_file(tmp_path):
    message = one_line_error(tmp_path / "nope.yaml")
    assert "not found" in message


def test_invalid_yaml_is_reported(tmp_path):
    message = error_of(write(tmp_path, "sources: [{name: crm}\n  x: : ]\n"))
    assert message.startswith(str(tmp_path / "hub.yaml"))
    assert "not valid YAML" in message


def test_invalid_yaml_is_one_line(tmp_path):
    one_line_error(write(tmp_path, "sources: [{name: crm}\n  x: : ]\n"))


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_unreadable_file_is_a_config_error(tmp_path, kind):
    if kind == "directory":
        path = tmp_path / "conf.d"
        path.mkdir()
    else:
        path = tmp_path / "hub.yaml"
        path.write_bytes(b"\xff\xfe\x00sources")
    one_line_error(path)


# ------------------------------------------------------------------ Settings


def test_settings_defaults():
    settings = load_settings()
    assert settings.kafka.bootstrap_servers is None
    assert settings.redis.url is None
    assert settings.web.port == 6066
    assert settings.config_file is None


def test_settings_read_hub_env_with_nested_delimiter(monkeypatch):
    monkeypatch.setenv("HUB_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("HUB_WEB__PORT", "7070")
    monkeypatch.setenv("HUB_REDIS__URL", "redis://cache:6379/2")
    monkeypatch.setenv("HUB_BATCH_SIZE", "250")
    monkeypatch.setenv("HUB_CONFIG_FILE", "/etc/hub/hub.yaml")
    monkeypatch.setenv("KAFKA__BOOTSTRAP_SERVERS", "unprefixed:1")
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.web.port == 7070
    assert settings.redis.url == "redis://cache:6379/2"
    assert settings.batch_size == 250
    assert settings.config_file == Path("/etc/hub/hub.yaml")
    assert load_settings().web.port == 7070
    # unset nested fields keep their defaults
    assert settings.kafka.fetch_wait_ms == 10 and settings.web.host == "127.0.0.1"


def test_bad_setting_names_the_field_in_one_line(monkeypatch):
    monkeypatch.setenv("HUB_WEB__PORT", "99999")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert "web.port" in message and "HUB_" in message


@pytest.mark.parametrize("url", ["redis+cluster://r1:7000,r2:7000", "rediss+cluster://u:p@r1:7000/0",
                                 "unix:///run/redis.sock", "rediss://cache:6380/1"])
def test_redis_urls_of_one_server_or_a_cluster(monkeypatch, url):
    monkeypatch.setenv("HUB_REDIS__URL", url)
    assert load_settings().redis.url == url


@pytest.mark.parametrize("url, says", [("redis-cluster://r1:7000", "scheme"),
                                       ("redis+cluster://r1:7000/3", "database 0")])
def test_bad_redis_url_is_one_line_naming_the_field(monkeypatch, url, says):
    monkeypatch.setenv("HUB_REDIS__URL", url)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message and "redis.url" in message and says in message


# ------------------------------------------------------------------ hub check-config


def test_check_config_good_file(tmp_path):
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(cli, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok: 2 sources, 1 targets" in result.output
    assert "raw.crm" in result.output and "mastered.marketing" in result.output


def test_check_config_packaged_default():
    result = CliRunner().invoke(cli, ["check-config", str(DEFAULT_CONFIG)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("yaml_text, field", [
    (GOOD.replace("[given_name, emails]", "[given_name, shoe_size]"), "targets.0.fields"),
    ("sources: [{name: CRM}]\n", "sources.0.name"),
    (GOOD + "match: {upper_threshold: 1, lower_threshold: 2}\n", "lower_threshold"),
])
def test_check_config_bad_file_exits_2_naming_the_field(tmp_path, yaml_text, field):
    result = CliRunner().invoke(cli, ["check-config", str(write(tmp_path, yaml_text))])
    assert result.exit_code == 2
    assert field in result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("hub: ")
    assert len(result.output.strip().splitlines()) == 1


def test_check_config_missing_file_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["check-config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "not found" in result.output


# ------------------------------------------------------------------ match comparisons (rules in configuration)


def test_packaged_comparisons_are_the_code_defaults():
    from hub.matching.comparisons import DEFAULT_COMPARISONS

    match = load_pipeline(None).match
    assert match.comparison_rules() == DEFAULT_COMPARISONS
    assert "comparisons" in DEFAULT_CONFIG.read_text()  # stated in the YAML, not only defaulted
    assert PipelineConfig.model_validate({"sources": [{"name": "crm"}]}).match.comparison_rules() == DEFAULT_COMPARISONS


def test_configured_comparisons_reach_the_match_stage(tmp_path):
    from hub.matching.comparisons import Level
    from hub.stages.match import MatchStage

    text = GOOD + """match:
  comparisons:
    - attribute: family_name
      term_frequency: true
      levels:
        - {kind: exact, m: 0.9, u: 0.01}
        - {kind: damerau, threshold: 2, m: 0.05, u: 0.02}
        - {kind: else, m: 0.05, u: 0.97}
    - attribute: birth_date
      levels:
        - {kind: exact, m: 0.9, u: 0.001}
        - {kind: date_distance, threshold: 31, m: 0.05, u: 0.01}
        - {kind: else, m: 0.05, u: 0.989}
"""
    pipeline = load_pipeline(write(tmp_path, text))
    stage = MatchStage(pipeline, index=None, secret=b"k")
    family, birth = stage.comparisons
    assert (family.attribute, family.feature, family.term_frequency) == ("family_name", "fn", True)
    assert family.levels[1] == Level("damerau", 0.05, 0.02, 2) and family.labels[1] == "damerau<=2"
    assert birth.labels == ("exact", "date_distance<=31", "else")


@pytest.mark.parametrize("levels, field, says", [
    ("[{kind: exakt, m: 0.9, u: 0.1}, {kind: else, m: 0.1, u: 0.9}]", "match.comparisons.0.levels.0",
     "unknown level kind 'exakt'"),
    ("[{kind: jaro_winkler, m: 0.9, u: 0.1}, {kind: else, m: 0.1, u: 0.9}]", "match.comparisons.0.levels.0",
     "jaro_winkler needs a threshold"),
    ("[{kind: jaro_winkler, threshold: 92, m: 0.9, u: 0.1}, {kind: else, m: 0.1, u: 0.9}]",
     "match.comparisons.0.levels.0", "similarity"),
    ("[{kind: damerau, threshold: 1.5, m: 0.9, u: 0.1}, {kind: else, m: 0.1, u: 0.9}]",
     "match.comparisons.0.levels.0", "whole number"),
    ("[{kind: exact, threshold: 1, m: 0.9, u: 0.1}, {kind: else, m: 0.1, u: 0.9}]",
     "match.comparisons.0.levels.0", "takes no threshold"),
    ("[{kind: exact, m: 1.5, u: 0.1}, {kind: else, m: 0.1, u: 0.9}]", "match.comparisons.0.levels.0.m", ""),
    ("[{kind: else, m: 0.1, u: 0.9}, {kind: exact, m: 0.9, u: 0.1}]", "match.comparisons.0", "must be kind else"),
    ("[{kind: exact, m: 0.9, u: 0.1}]", "match.comparisons.0.levels", ""),
    ("[{kind: exact, m: 0.5, u: 0.1}, {kind: else, m: 0.1, u: 0.9}]", "match.comparisons.0", "m must add up to 1"),
])
def test_a_bad_comparison_rule_is_one_line_naming_the_field(tmp_path, levels, field, says):
    text = GOOD + f"match:\n  comparisons:\n    - attribute: given_name\n      levels: {levels}\n"
    message = one_line_error(write(tmp_path, text))
    assert field in message and says in message, message


@pytest.mark.parametrize("comparison, field, says", [
    ("{attribute: shoe_size, levels: [{kind: exact, m: 0.9, u: 0.1}, {kind: else, m: 0.1, u: 0.9}]}",
     "match.comparisons.0.attribute", "no comparable attribute 'shoe_size'"),
    ("{attribute: city, term_frequency: true, levels: [{kind: jaro_winkler, threshold: 0.9, m: 0.9, u: 0.1}, "
     "{kind: else, m: 0.1, u: 0.9}]}", "match.comparisons.0", "term_frequency adjusts an exact level"),
])
def test_a_bad_comparison_is_one_line_naming_the_field(tmp_path, comparison, field, says):
    message = one_line_error(write(tmp_path, GOOD + f"match:\n  comparisons:\n    - {comparison}\n"))
    assert field in message and says in message, message


def test_an_attribute_compared_twice_is_refused(tmp_path):
    rule = "{attribute: city, levels: [{kind: exact, m: 0.9, u: 0.1}, {kind: else, m: 0.1, u: 0.9}]}"
    message = one_line_error(write(tmp_path, GOOD + f"match:\n  comparisons: [{rule}, {rule}]\n"))
    assert "match" in message and "compared twice" in message and "city" in message


@pytest.mark.parametrize("text, field", [
    ("match: {max_golden_size: 1}\n", "match.max_golden_size"),
    ("match: {max_bridged_size: 0}\n", "match.max_bridged_size"),
])
def test_bad_guardrails_name_the_field(tmp_path, text, field):
    assert field in one_line_error(write(tmp_path, GOOD + text))


def test_guardrails_can_be_turned_off(tmp_path):
    pipeline = load_pipeline(write(tmp_path, GOOD + "match: {max_golden_size: null, max_bridged_size: null}\n"))
    assert pipeline.match.guardrails().max_golden_size is None and pipeline.match.max_bridged_size is None


def test_the_fused_engines_agents_wait_longer_for_their_few_events_and_the_staged_ones_do_not(monkeypatch):
    from hub.app import agent_fetch_wait_ms

    monkeypatch.setenv("HUB_ENGINE", "fused")
    assert agent_fetch_wait_ms(load_settings()) == 100  # erasure, steward, recompute
    monkeypatch.setenv("HUB_KAFKA__QUIET_FETCH_WAIT_MS", "250")
    assert agent_fetch_wait_ms(load_settings()) == 250
    monkeypatch.setenv("HUB_ENGINE", "staged")  # there the agents carry every hop of the hot path
    assert agent_fetch_wait_ms(load_settings()) == 10
