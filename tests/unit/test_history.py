"""Unit tests for hub.history: attribute diffs, rebuilding past states from
audit events, and the text `hub history` prints."""

from __future__ import annotations

import random

from hub import history

T0 = 1_790_000_000_000


def audit(kind, at, before=None, after=None, before_version=None, after_version=None, gid="G1", cause="source_event"):
    return {"audit_id": f"A{kind}{at}", "at": at, "kind": kind, "golden_id": gid, "subject": "crm:C1", "cause": cause,
            "decision": None, "before_version": before_version, "after_version": after_version,
            "changed_attributes": [], "changes": history.diff(before, after) if kind.startswith("golden_") else []}


V1 = {"golden_id": "G1", "given_name": "Anna", "emails": [{"address": "a@x.com"}], "members": ["crm:C1"],
      "version": 1, "updated_at": T0, "cause": "source_event"}
V2 = {**V1, "given_name": "Anne", "members": ["crm:C1", "pos:P3"], "loyalty_id": "L42", "version": 2}
V3 = {**V2, "emails": [], "version": 3}
del V3["loyalty_id"]


def trail() -> list[dict]:
    return [audit("golden_created", T0, None, V1, None, 1),
            audit("golden_updated", T0 + 10, V1, V2, 1, 2),
            audit("golden_updated", T0 + 20, V2, V3, 2, 3, cause="consent_changed"),
            audit("golden_merged", T0 + 30, before_version=3)]


def content(golden):
    return {k: v for k, v in golden.items() if k not in ("updated_at", "cause", "trigger_produced_at")}


def test_diff_lists_changed_attributes_only_with_json_values():
    changes = history.diff(V1, V2)
    assert [c["attribute"] for c in changes] == ["given_name", "loyalty_id", "members"]
    assert changes[1] == {"attribute": "loyalty_id", "before": None, "after": '"L42"'}
    assert history.diff(V2, V2) == []
    assert {c["attribute"] for c in history.diff(None, V1)} == {"golden_id", "given_name", "emails", "members"}


def test_rebuild_gives_the_state_at_each_time():
    events = trail()
    assert history.rebuild(events, "G1", T0 - 1) is None
    assert history.rebuild(events, "G1", T0) == content(V1)
    assert history.rebuild(events, "G1", T0 + 15) == content(V2)
    assert history.rebuild(events, "G1", T0 + 29) == content(V3)
    assert "loyalty_id" not in history.rebuild(events, "G1", T0 + 29)
    assert history.rebuild(events, "G1", T0 + 30) is None  # merged into another record
    assert history.rebuild(events, "G1") is None


def test_rebuild_ignores_read_order_duplicates_and_other_records():
    events = trail() + trail()[:2] + [audit("golden_created", T0 + 5, None, {**V1, "golden_id": "G2"}, None, 1,
                                            gid="G2")]
    for seed in range(5):
        random.Random(seed).shuffle(events)
        assert history.rebuild(events, "G1", T0 + 25) == content(V3)


def test_same_millisecond_events_apply_in_version_order():
    events = [audit("golden_updated", T0, V1, V2, 1, 2), audit("golden_created", T0, None, V1, None, 1)]
    assert history.rebuild(events, "G1", T0) == content(V2)


def test_erasure_ends_the_record_under_its_hashed_id():
    erased = audit("erased", T0 + 40, gid=history.erased_id("G1"))
    events = trail()[:3] + [erased]
    assert history.rebuild(events, "G1", T0 + 39)["version"] == 3
    assert history.rebuild(events, "G1", T0 + 40) is None
    assert history.erased_id("G1") != "G1" and "G1" not in history.erased_id("G1")


def test_describe_prints_each_change_with_its_cause():
    text = history.describe(trail(), "G1")
    lines = text.splitlines()
    assert "golden_created" in lines[0] and "v-→v1" in lines[0]
    assert any("cause: consent_changed" in line for line in lines)
    assert any(line.strip().startswith('given_name: "Anna" → "Anne"') for line in lines)
    assert "golden_merged" in lines[-1]
    assert history.describe([], "G9") == "G9: no audit events found"
