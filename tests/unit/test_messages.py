"""The hub's own records (hub.messages) set every field their schema has and
encode as that schema says."""

from __future__ import annotations

from hub.messages import audit_event, link_instruction
from hub.schemas import AUDIT, LINKED, codec, parsed


def field_names(name: str) -> set[str]:
    return {f["name"] for f in parsed(name)["fields"]}


def test_an_audit_event_has_every_field_and_round_trips():
    event = audit_event("G1@2", 1_700_000_000_000, "golden_updated", "source_event", golden_id="G1",
                        subject="crm:1", before_version=1, after_version=2, changed_attributes=("emails",),
                        changes=[{"attribute": "emails", "before": None, "after": None}])
    assert set(event) == field_names(AUDIT)
    decoded = codec(AUDIT).decode(codec(AUDIT).encode(event))
    assert decoded["changed_attributes"] == ["emails"] and decoded["after_version"] == 2
    assert decoded["golden_id"] == "G1" and decoded["decision"] is None and decoded["sealed"] is None


def test_a_link_instruction_has_every_field_and_round_trips():
    for instruction in (link_instruction("G1", "recompute", "consent_statement"),
                        link_instruction("G1", "split", "steward", split_member="crm:1", split_to="G2"),
                        link_instruction("G1", "contribution", "steward", absorbed=("G3",))):
        assert set(instruction) == field_names(LINKED)
        decoded = codec(LINKED).decode(codec(LINKED).encode(instruction))
        assert {k: decoded[k] for k in ("golden_id", "kind", "cause", "split_member", "split_to")} == {
            k: instruction[k] for k in ("golden_id", "kind", "cause", "split_member", "split_to")}
        assert decoded["absorbed_golden_ids"] == list(instruction["absorbed_golden_ids"])
