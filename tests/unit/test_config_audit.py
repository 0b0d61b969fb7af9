"""The audit of configuration and access, pure parts: the normalised summary
of a pipeline, its fingerprint and diff (targets, purposes, tokens by digest,
match rules, survivorship), the events written for a changed configuration
and for re-estimated match parameters, and who a lookup is counted for."""

from __future__ import annotations

import orjson

from hub import access, metrics
from hub.access import digest
from hub.config import PipelineConfig
from hub.config_audit import (
    config_event,
    describe_changes,
    describe_events,
    diff,
    fingerprint,
    parameters_event,
    parameters_summary,
    short_digest,
    summary,
)
from hub.lookup_api import LookupService
from hub.schemas import AUDIT, codec

POS_TOKEN, NEW_TOKEN = "pos-token-1", "pos-token-2"


def pipeline(**changes) -> PipelineConfig:
    data = {"sources": [{"name": "crm"}, {"name": "pos"}],
            "targets": [{"name": "pos", "purposes": ["service"], "fields": ["given_name", "loyalty_id"],
                         "tokens_sha256": [digest(POS_TOKEN)]}],
            "purposes": [{"name": "service", "granted_by_default": True}, {"name": "marketing"}],
            "connectors": [{"name": "cache", "target": "pos", "url": "redis://:s3cret@cache:6379/0"}]}
    for path, value in changes.items():
        node = data
        *parents, last = path.split("__")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[last] = value
    return PipelineConfig.model_validate(data)


def test_summary_holds_no_secret_and_shortens_token_digests():
    text = orjson.dumps(summary(pipeline())).decode()
    assert "s3cret" not in text and "redis://:***@cache:6379/0" in text
    assert digest(POS_TOKEN) not in text and short_digest(digest(POS_TOKEN)) in text


def test_fingerprint_follows_what_matters():
    assert fingerprint(summary(pipeline())) == fingerprint(summary(pipeline()))
    assert fingerprint(summary(pipeline())) != fingerprint(summary(pipeline(match={"upper_threshold": 9.0})))


def changed(**changes) -> dict[str, tuple]:
    return {c["attribute"]: (c["before"], c["after"]) for c in diff(summary(pipeline()), summary(pipeline(**changes)))}


def test_diff_names_each_changed_setting():
    assert changed(targets__0__purposes=["service", "marketing"]) == {
        "targets.pos.purposes": ('["service"]', '["marketing","service"]')}
    assert changed(match={"upper_threshold": 9.5}) == {"match.upper_threshold": ("8.0", "9.5")}
    assert changed(survivorship={"source_priority": ["pos", "crm"]}) == {
        "survivorship.source_priority": ("[]", '["pos","crm"]')}
    assert changed(purposes=[{"name": "service"}, {"name": "marketing"}]) == {
        "purposes.service.granted_by_default": ("true", "false")}
    added = changed(targets=[pipeline().targets[0].model_dump(), {"name": "crm_feed", "fields": ["emails"]}],
                    connectors=[])
    assert added["targets.crm_feed.fields"] == (None, '["emails"]')
    assert added["connectors.cache.url"] == ('"redis://:***@cache:6379/0"', None)


def test_tokens_added_or_removed_by_digest():
    changes = diff(summary(pipeline()), summary(pipeline(targets__0__tokens_sha256=[digest(NEW_TOKEN)])))
    text = describe_changes(changes)
    assert text == (f"targets.pos.tokens: token {short_digest(digest(NEW_TOKEN))} added, "
                    f"token {short_digest(digest(POS_TOKEN))} removed")
    assert POS_TOKEN not in text and NEW_TOKEN not in text


def test_config_events_are_valid_audit_events():
    first = config_event("hub", summary(pipeline()), None, None, 1_000)
    assert first["kind"] == "config_changed" and "first recorded" in first["cause"]
    assert "targets" in first["changed_attributes"] and first["changes"]
    old = summary(pipeline())
    new = summary(pipeline(targets__0__tokens_sha256=[digest(POS_TOKEN), digest(NEW_TOKEN)]))
    event = config_event("hub", new, old, fingerprint(old), 2_000)
    assert event["audit_id"] == f"C{fingerprint(new)}:{fingerprint(old)}"  # the same for workers starting together
    assert event["changed_attributes"] == ["targets"]
    assert f"token {short_digest(digest(NEW_TOKEN))} added" in event["cause"]
    assert codec(AUDIT).decode(codec(AUDIT).encode(event)) == event
    listing = describe_events([first, event, event])
    assert listing.count("config_changed") == 2 and "targets.pos.tokens" in listing


def test_parameters_event_holds_old_and_new_values():
    levels = [{"attribute": "given_name", "feature": "given", "levels": [
        {"kind": "exact", "threshold": None, "m": 0.9, "u": 0.01},
        {"kind": "jaro_winkler", "threshold": 0.9, "m": 0.05, "u": 0.02}]}]
    newer = [{**levels[0], "levels": [{**levels[0]["levels"][0], "m": 0.95}, levels[0]["levels"][1]]}]
    old = parameters_summary(levels, 8.0, 3.0, 0)
    new = parameters_summary(newer, 7.25, 3.0, 1)
    event = parameters_event("hub", old, new, 5000, 3_000)
    found = {c["attribute"]: (c["before"], c["after"]) for c in event["changes"]}
    assert found == {"levels.given_name.exact.m": ("0.9", "0.95"), "upper_threshold": ("8.0", "7.25"),
                     "version": ("0", "1")}
    assert (event["before_version"], event["after_version"]) == (0, 1)
    assert "estimated from 5000 records" in event["cause"]
    assert codec(AUDIT).decode(codec(AUDIT).encode(event)) == event


def test_token_label_is_bounded_and_never_the_token():
    config = pipeline()
    assert access.token_label(config, POS_TOKEN) == digest(POS_TOKEN)[:12]
    assert access.token_label(config, "someone-else") == "unknown"
    assert access.token_label(config, None) == "none"


class _Store:
    def __init__(self, goldens):
        self.goldens = goldens

    def lookup(self, golden_id=None, index_key=None, limit=10):
        return [g for g in self.goldens if g["golden_id"] == golden_id]


class _Audit:
    def __init__(self):
        self.records = []

    def record(self, *args):
        self.records.append(args)


def metric(name: str, **labels) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_lookups_are_counted_per_token_and_audited_without_the_identifier():
    config = pipeline(targets__0__audit_reads=True)
    golden = {"golden_id": "G1", "given_name": "Anna", "loyalty_id": "L1", "consents": [], "record_type": "person"}
    audit = _Audit()
    service = LookupService(config, _Store([golden]), b"k", audit)
    label = digest(POS_TOKEN)[:12]
    before = metric("hub_api_reads_total", target="pos", token=label, status="200")
    answer = service.answer("pos", {"golden_id": "G1"}, f"Bearer {POS_TOKEN}", None)
    assert answer.status == 200
    assert metric("hub_api_reads_total", target="pos", token=label, status="200") == before + 1
    service.answer("pos", {"golden_id": "G1"}, "Bearer nope", None)
    service.answer("nowhere", {"golden_id": "G1"}, f"Bearer {POS_TOKEN}", None)
    assert metric("hub_api_reads_total", target="unknown", token=label, status="403") >= 1
    assert audit.records[0] == ("pos", label, "golden_id", 200, ["G1"])
    assert audit.records[1] == ("pos", "unknown", "none", 401, [])
    assert all(POS_TOKEN not in repr(r) for r in audit.records)
