"""The data-subject access export: one document with everything held."""

from __future__ import annotations

import orjson

from hub.config import load_pipeline
from hub.projection import encode, fingerprint, project
from hub.subject_access import FORMAT, export, targets_view

NOW = 1_800_000_000_000
GOLDEN = {"golden_id": "G1", "record_type": "person", "given_name": "Sam", "family_name": "Carter",
          "emails": [{"address": "sam@gmail.com", "verified": False, "preferred": True, "sources": ["crm:C1"],
                      "confirmed_at": NOW, "stale": False}], "phones": [], "addresses": [], "preferences": {},
          "consents": [], "members": ["crm:C1"], "lineage": {"given_name": {"source": "crm", "source_id": "C1"}},
          "loyalty_id": None, "survey": None, "quality_score": 0.7}


def test_targets_say_what_they_may_receive_and_what_they_hold():
    pipeline = load_pipeline(None)
    pos = pipeline.target("pos")
    sent = {"pos": ("G1", fingerprint(encode(project(GOLDEN, pos), pos))), "contact_center": ("G1", "stale-hash")}
    rows = {row["target"]: row for row in targets_view(GOLDEN, pipeline, sent, NOW)}
    assert rows["pos"]["verdict"] == "allowed" and rows["pos"]["current"] and rows["pos"]["record"]["given_name"] == "Sam"
    assert rows["contact_center"]["received"] and not rows["contact_center"]["current"]
    assert "record" not in rows["contact_center"]
    assert rows["marketing"]["verdict"] != "allowed" and not rows["marketing"]["received"]


def test_the_export_holds_every_part_and_only_this_customers_history():
    contributions = {"crm:C1": {"record": {"source": "crm", "source_id": "C1", "given_name": "Sam"},
                                "quality": {"score": 0.7}, "times": {"given_name": NOW}}}
    audit = [{"audit_id": "a1", "at": NOW, "kind": "golden_created", "golden_id": "G1", "after_version": 1},
             {"audit_id": "a2", "at": NOW, "kind": "golden_created", "golden_id": "G2", "after_version": 1},
             {"audit_id": "a1", "at": NOW, "kind": "golden_created", "golden_id": "G1", "after_version": 1}]
    document = export(GOLDEN, contributions, {"crm:C1": [{"purpose": "marketing"}], "pos:X": []},
                      {"crm:C1": []}, audit, [{"id": "D1"}], [{"target": "pos"}], NOW, "stella")
    assert document["format"] == FORMAT and document["requested_by"] == "stella"
    assert document["members"][0]["record"]["given_name"] == "Sam"
    assert document["consent_statements"] == {"crm:C1": [{"purpose": "marketing"}]}
    assert document["survey_answers"] == {}
    assert [e["audit_id"] for e in document["history"]] == ["a1"]
    assert document["lineage"] == GOLDEN["lineage"] and document["reviews"] == [{"id": "D1"}]
    orjson.dumps(document)  # one JSON document
